#!/usr/bin/env python3
"""Reference perplexity (and attention-sink mass) of a GGUF model on a text file.

Independent of attnscope's Rust code: the GGUF is dequantized and loaded by
transformers (through the `gguf` package) in float32 and run on CPU with eager
attention.

    python3 scripts/ref_ppl.py --gguf SmolLM2-135M-Instruct.Q4_1.gguf \
        --tokenizer smollm2-tokenizer.json --text alice29.txt \
        --max-tokens 2048 --out scripts/reference/smollm2_alice29_2048.json

The whole text file (raw bytes decoded as UTF-8; CRLF kept) is tokenized with
the given tokenizer.json (HF `tokenizers`, add_special_tokens=False, no BOS), the
first N ids are kept, and one forward pass over them gives
  mean_nll = mean over t = 0..N-2 of -log softmax(logits[t])[ids[t+1]]   (N-1 predictions)
  ppl      = exp(mean_nll)
Sink mass, from the eager attention probabilities of every layer (reduced inside
a forward hook so the [heads, N, N] maps are never all held at once):
  sink_mass[l][h]        = mean over ALL N queries i of sum_{j < sink_tokens} P[l, h, i, j]
  sink_mass_per_layer[l] = mean over heads of sink_mass[l][h]
(queries i < sink_tokens count too; for them the mass is exactly 1).

--backend numpy runs an own float32 forward (gguf.GGUFReader + gguf.quants.dequantize,
llama/qwen2/qwen3) instead; it is also the automatic fallback when transformers cannot
load the GGUF. --crosscheck runs both and stores the differences under "crosscheck".
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def tokenize(tokenizer_json: Path, text_file: Path, max_tokens: int,
             gguf_path: Path | None = None) -> list[int]:
    # bytes as they are in the file (alice29.txt has CRLF line ends: keep them)
    text = text_file.read_bytes().decode("utf-8", errors="strict")
    if str(tokenizer_json) == "gguf":
        # the tokenizer transformers rebuilds from the GGUF's own tokenizer.ggml.* metadata
        from transformers import AutoTokenizer

        tmp = Path(tempfile.mkdtemp(prefix="ref_tok_"))
        (tmp / gguf_path.name).symlink_to(gguf_path.resolve())
        tok = AutoTokenizer.from_pretrained(str(tmp), gguf_file=gguf_path.name,
                                            local_files_only=True)
        ids = tok(text, add_special_tokens=False)["input_ids"]
    else:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tokenizer_json))
        ids = tok.encode(text, add_special_tokens=False).ids
    if len(ids) < max_tokens:
        raise SystemExit(f"text has only {len(ids)} tokens < --max-tokens {max_tokens}")
    return ids[:max_tokens]


def load_model(gguf_path: Path):
    import transformers
    from transformers import AutoModelForCausalLM

    # transformers wants a folder holding the gguf file; a symlink keeps it cheap
    tmp = Path(tempfile.mkdtemp(prefix="ref_ppl_"))
    link = tmp / gguf_path.name
    link.symlink_to(gguf_path.resolve())
    model = AutoModelForCausalLM.from_pretrained(
        str(tmp), gguf_file=gguf_path.name, dtype=torch.float32,
        attn_implementation="eager", local_files_only=True,
    ).eval()
    tool = f"transformers {transformers.__version__} + torch {torch.__version__}"
    return model, tool


# ---- numpy fallback / cross-check ------------------------------------------------

class NumpyGGUFModel:
    """Plain numpy float32 forward of a llama / qwen2 / qwen3 GGUF (gguf.GGUFReader +
    gguf.quants.dequantize). Slow but shares no code with transformers' GGUF path."""

    def __init__(self, path: Path):
        import gguf

        r = gguf.GGUFReader(str(path))
        f = r.fields

        def kv(key, default=None):
            if key not in f:
                return default
            fl = f[key]
            v = fl.parts[fl.data[0]]
            return bytes(v).decode() if fl.types[0] == gguf.GGUFValueType.STRING else v[0]

        self.arch = kv("general.architecture")
        a = self.arch
        if a not in ("llama", "qwen2", "qwen3"):
            raise SystemExit(f"numpy backend: unsupported arch {a}")
        self.n_layer = int(kv(f"{a}.block_count"))
        self.n_head = int(kv(f"{a}.attention.head_count"))
        self.n_kv = int(kv(f"{a}.attention.head_count_kv"))
        d_model = int(kv(f"{a}.embedding_length"))
        self.head_dim = int(kv(f"{a}.attention.key_length", d_model // self.n_head))
        self.eps = float(kv(f"{a}.attention.layer_norm_rms_epsilon"))
        self.theta = float(kv(f"{a}.rope.freq_base", 10000.0))
        self.w = {}
        for t in r.tensors:
            arr = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
            shape = tuple(int(x) for x in reversed(t.shape.tolist()))
            self.w[t.name] = arr.reshape(shape)
        if a == "llama":  # undo convert_hf_to_gguf's q/k permutation
            for i in range(self.n_layer):
                for nm, nh in (("attn_q", self.n_head), ("attn_k", self.n_kv)):
                    w = self.w[f"blk.{i}.{nm}.weight"]
                    self.w[f"blk.{i}.{nm}.weight"] = (
                        w.reshape(nh, w.shape[0] // nh // 2, 2, *w.shape[1:])
                        .swapaxes(1, 2).reshape(w.shape))
        if "output.weight" not in self.w:
            self.w["output.weight"] = self.w["token_embd.weight"]
        self.vocab = self.w["token_embd.weight"].shape[0]
        self.tool = f"numpy {np.__version__} + gguf {_gguf_version()} (own forward, float32)"

    def _rms(self, x, w):
        x = x.astype(np.float32)
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + self.eps) * w

    def forward(self, ids: list[int], sink_tokens: int):
        n, D, H, KV = len(ids), self.head_dim, self.n_head, self.n_kv
        w = self.w
        x = w["token_embd.weight"][np.asarray(ids)]
        inv = 1.0 / self.theta ** (np.arange(0, D, 2, dtype=np.float64) / D)
        ang = np.arange(n)[:, None] * inv[None]
        cos = np.concatenate([np.cos(ang)] * 2, -1).astype(np.float32)
        sin = np.concatenate([np.sin(ang)] * 2, -1).astype(np.float32)

        def rope(t):  # t: [heads, n, D], rotate_half convention
            rh = np.concatenate([-t[..., D // 2:], t[..., : D // 2]], -1)
            return t * cos + rh * sin

        causal = np.triu(np.ones((n, n), dtype=bool), 1)
        sink = []
        for i in range(self.n_layer):
            p = f"blk.{i}."
            h = self._rms(x, w[p + "attn_norm.weight"])
            proj = {}
            for nm in ("q", "k", "v"):
                y = h @ w[p + f"attn_{nm}.weight"].T
                if p + f"attn_{nm}.bias" in w:
                    y = y + w[p + f"attn_{nm}.bias"]
                proj[nm] = y
            q = proj["q"].reshape(n, H, D).transpose(1, 0, 2)
            k = proj["k"].reshape(n, KV, D).transpose(1, 0, 2)
            v = proj["v"].reshape(n, KV, D).transpose(1, 0, 2)
            if p + "attn_q_norm.weight" in w:
                q = self._rms(q, w[p + "attn_q_norm.weight"])
                k = self._rms(k, w[p + "attn_k_norm.weight"])
            q, k = rope(q), rope(k)
            rep = H // KV
            k, v = np.repeat(k, rep, 0), np.repeat(v, rep, 0)
            s = (q @ k.transpose(0, 2, 1)) / np.float32(np.sqrt(D))
            s[:, causal] = -np.inf
            s -= s.max(-1, keepdims=True)
            pr = np.exp(s)
            pr /= pr.sum(-1, keepdims=True)
            sink.append(pr[:, :, :sink_tokens].astype(np.float64).sum(-1).mean(-1))
            o = (pr @ v).transpose(1, 0, 2).reshape(n, H * D)
            x = x + o @ w[p + "attn_output.weight"].T
            h = self._rms(x, w[p + "ffn_norm.weight"])
            g = h @ w[p + "ffn_gate.weight"].T
            u = h @ w[p + "ffn_up.weight"].T
            x = x + ((g / (1 + np.exp(-g))) * u) @ w[p + "ffn_down.weight"].T
        x = self._rms(x, w["output_norm.weight"])
        return x @ w["output.weight"].T, sink


def _gguf_general_name(path: Path) -> str | None:
    import gguf

    f = gguf.GGUFReader(str(path)).fields.get("general.name")
    return None if f is None else bytes(f.parts[f.data[0]]).decode()


def _gguf_version() -> str:
    try:
        from importlib.metadata import version
        return version("gguf")
    except Exception:  # noqa: BLE001
        return "?"


class SinkHook:
    """Reduce each layer's attention probabilities to per-head sink mass, then drop them."""

    def __init__(self, model, sink_tokens: int):
        self.sink_tokens = sink_tokens
        self.per_head: dict[int, np.ndarray] = {}
        self.handles = []
        for i, layer in enumerate(model.model.layers):
            self.handles.append(layer.self_attn.register_forward_hook(self._make(i)))

    def _make(self, idx):
        def hook(_mod, _args, output):
            attn_out, weights = output[0], output[1]
            if weights is None:
                raise RuntimeError("attention weights not returned: need eager attention")
            # weights: [1, heads, n, n]
            mass = weights[0, :, :, : self.sink_tokens].double().sum(-1).mean(-1)
            self.per_head[idx] = mass.cpu().numpy()
            return (attn_out, None) + tuple(output[2:])
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


def run(args) -> dict:
    gguf_path = Path(args.gguf)
    t0 = time.time()
    ids = tokenize(Path(args.tokenizer), Path(args.text), args.max_tokens, gguf_path)
    if args.bos is not None:
        ids = [args.bos] + ids[: args.max_tokens - 1]
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model = np_model = None
    if args.backend == "transformers":
        try:
            model, tool = load_model(gguf_path)
        except Exception as e:  # noqa: BLE001
            print(f"transformers GGUF load failed ({e!r}); using the numpy backend",
                  file=sys.stderr)
            args.backend = "numpy"
    if model is not None:
        cfg = model.config
        print(f"loaded {gguf_path.name}: {cfg.model_type}, {cfg.num_hidden_layers} layers, "
              f"{cfg.num_attention_heads}/{cfg.num_key_value_heads} heads, "
              f"vocab {cfg.vocab_size} ({time.time() - t0:.1f}s)", file=sys.stderr)
    else:
        np_model = NumpyGGUFModel(gguf_path)
        tool = np_model.tool
        print(f"loaded {gguf_path.name} with numpy: {np_model.arch}, {np_model.n_layer} layers "
              f"({time.time() - t0:.1f}s)", file=sys.stderr)

    x = torch.tensor(ids, dtype=torch.long)[None]
    if model is None:  # numpy backend
        lg, per_head = np_model.forward(ids, args.sink_tokens)
        logits = torch.from_numpy(lg)
        n_layer = np_model.n_layer
    else:
        sink = SinkHook(model, args.sink_tokens)
        with torch.no_grad():
            logits = model(x, use_cache=False).logits[0]
        sink.remove()
        per_head = [sink.per_head[i] for i in range(cfg.num_hidden_layers)]
        n_layer = cfg.num_hidden_layers
    logp = torch.log_softmax(logits.double(), dim=-1)
    tgt = x[0, 1:]
    nll = -logp[:-1].gather(1, tgt[:, None])[:, 0]
    mean_nll = float(nll.mean())
    print(f"forward done ({time.time() - t0:.1f}s): mean_nll {mean_nll:.6f} "
          f"ppl {math.exp(mean_nll):.4f}", file=sys.stderr)

    sink_mass = [np.asarray(per_head[i]).tolist() for i in range(n_layer)]
    res = {
        "model": gguf_path.name,
        "gguf_sha256": sha256(gguf_path),
        "gguf_bytes": gguf_path.stat().st_size,
        "gguf_general_name": _gguf_general_name(gguf_path),
        "tokenizer": ("transformers' tokenizer from the GGUF metadata"
                      if args.tokenizer == "gguf" else Path(args.tokenizer).name),
        "tokenizer_sha256": (None if args.tokenizer == "gguf"
                             else sha256(Path(args.tokenizer))),
        "bos_prepended": args.bos,
        "text": Path(args.text).name,
        "text_sha256": sha256(Path(args.text)),
        "add_special_tokens": False,
        "text_decoding": "raw file bytes as UTF-8, line ends kept (no CRLF translation)",
        "n_tokens": len(ids),
        "n_predictions": len(ids) - 1,
        "mean_nll": mean_nll,
        "ppl": math.exp(mean_nll),
        "first_ids": ids[:16],
        **({"ids": ids} if args.record_ids else {}),
        "last_ids": ids[-16:],
        "sink_tokens": args.sink_tokens,
        "sink_mass_def": (f"mean over all {len(ids)} queries of the attention mass on keys "
                          f"0..{args.sink_tokens - 1}; per_layer = mean over heads"),
        "sink_mass_per_layer": [float(np.mean(h)) for h in sink_mass],
        "sink_mass": sink_mass,
        "attention": ("eager, float32, CPU" if args.backend == "transformers"
                      else "numpy dense softmax, float32, CPU"),
        "tool": tool,
        "date": dt.date.today().isoformat(),
    }
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--tokenizer", required=True,
                    help="HF tokenizer.json, or 'gguf': transformers' tokenizer from the GGUF")
    ap.add_argument("--bos", type=int, default=None,
                    help="prepend this id (the N ids are then BOS + the first N-1 tokens)")
    ap.add_argument("--record-ids", action="store_true",
                    help="store every input id under 'ids' (for tokenizers attnscope lacks)")
    ap.add_argument("--text", required=True)
    ap.add_argument("--max-tokens", type=int, required=True)
    ap.add_argument("--sink-tokens", type=int, default=4)
    ap.add_argument("--out", required=True)
    ap.add_argument("--backend", choices=["transformers", "numpy"], default="transformers",
                    help="numpy: own forward from gguf.GGUFReader (fallback / cross-check)")
    ap.add_argument("--crosscheck", action="store_true",
                    help="also run the numpy backend and record the differences")
    args = ap.parse_args()
    backend = args.backend
    res = run(args)
    if args.crosscheck and backend == "transformers" and args.backend == "transformers":
        args.backend = "numpy"
        alt = run(args)
        res["crosscheck"] = {
            "tool": alt["tool"],
            "mean_nll": alt["mean_nll"],
            "ppl": alt["ppl"],
            "abs_mean_nll_diff": abs(alt["mean_nll"] - res["mean_nll"]),
            "max_abs_sink_mass_diff": float(np.abs(
                np.asarray(alt["sink_mass"]) - np.asarray(res["sink_mass"])).max()),
        }
        print(f"crosscheck: {res['crosscheck']}", file=sys.stderr)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(res, indent=1) + "\n")
    tmp.replace(out)
    print(json.dumps({k: res[k] for k in ("model", "n_tokens", "mean_nll", "ppl", "first_ids")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
