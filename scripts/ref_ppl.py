#!/usr/bin/env python3
"""Reference perplexity (and attention-sink mass) of a GGUF model on a text file.

Independent of attnscope's Rust code: the GGUF is dequantized and loaded by
transformers (through the `gguf` package) in float32 and run on CPU with eager
attention.

    python3 scripts/ref_ppl.py --gguf SmolLM2-135M-Instruct.Q4_1.gguf \
        --tokenizer smollm2-tokenizer.json --text alice29.txt \
        --max-tokens 2048 --out scripts/reference/smollm2_alice29_2048.json

The whole text file (raw bytes decoded as UTF-8; CRLF kept) is tokenized with the given tokenizer.json (HF `tokenizers`,
add_special_tokens=False, no BOS), the first N ids are kept, and one forward pass
over them gives
  mean_nll = mean over t = 0..N-2 of -log softmax(logits[t])[ids[t+1]]   (N-1 predictions)
  ppl      = exp(mean_nll)
Sink mass, from the eager attention probabilities of every layer (reduced inside
a forward hook so the [heads, N, N] maps are never all held at once):
  sink_mass[l][h]        = mean over ALL N queries i of sum_{j < sink_tokens} P[l, h, i, j]
  sink_mass_per_layer[l] = mean over heads of sink_mass[l][h]
(queries i < sink_tokens count too; for them the mass is exactly 1).
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


def tokenize(tokenizer_json: Path, text_file: Path, max_tokens: int) -> list[int]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    # bytes as they are in the file (alice29.txt has CRLF line ends: keep them)
    text = text_file.read_bytes().decode("utf-8", errors="strict")
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
    ids = tokenize(Path(args.tokenizer), Path(args.text), args.max_tokens)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model, tool = load_model(gguf_path)
    cfg = model.config
    print(f"loaded {gguf_path.name}: {cfg.model_type}, {cfg.num_hidden_layers} layers, "
          f"{cfg.num_attention_heads}/{cfg.num_key_value_heads} heads, vocab {cfg.vocab_size} "
          f"({time.time() - t0:.1f}s)", file=sys.stderr)

    sink = SinkHook(model, args.sink_tokens)
    x = torch.tensor(ids, dtype=torch.long)[None]
    with torch.no_grad():
        logits = model(x, use_cache=False).logits[0]
    sink.remove()
    logp = torch.log_softmax(logits.double(), dim=-1)
    tgt = x[0, 1:]
    nll = -logp[:-1].gather(1, tgt[:, None])[:, 0]
    mean_nll = float(nll.mean())
    print(f"forward done ({time.time() - t0:.1f}s): mean_nll {mean_nll:.6f} "
          f"ppl {math.exp(mean_nll):.4f}", file=sys.stderr)

    sink_mass = [sink.per_head[i].tolist() for i in range(cfg.num_hidden_layers)]
    res = {
        "model": gguf_path.name,
        "gguf_sha256": sha256(gguf_path),
        "gguf_bytes": gguf_path.stat().st_size,
        "tokenizer": Path(args.tokenizer).name,
        "tokenizer_sha256": sha256(Path(args.tokenizer)),
        "text": Path(args.text).name,
        "text_sha256": sha256(Path(args.text)),
        "add_special_tokens": False,
        "text_decoding": "raw file bytes as UTF-8, line ends kept (no CRLF translation)",
        "n_tokens": len(ids),
        "n_predictions": len(ids) - 1,
        "mean_nll": mean_nll,
        "ppl": math.exp(mean_nll),
        "first_ids": ids[:16],
        "last_ids": ids[-16:],
        "sink_tokens": args.sink_tokens,
        "sink_mass_def": (f"mean over all {len(ids)} queries of the attention mass on keys "
                          f"0..{args.sink_tokens - 1}; per_layer = mean over heads"),
        "sink_mass_per_layer": [float(np.mean(h)) for h in sink_mass],
        "sink_mass": sink_mass,
        "attention": "eager, float32, CPU",
        "tool": tool,
        "date": dt.date.today().isoformat(),
    }
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--tokenizer", required=True, help="HF tokenizer.json")
    ap.add_argument("--text", required=True)
    ap.add_argument("--max-tokens", type=int, required=True)
    ap.add_argument("--sink-tokens", type=int, default=4)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    res = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(res, indent=1) + "\n")
    tmp.replace(out)
    print(json.dumps({k: res[k] for k in ("model", "n_tokens", "mean_nll", "ppl", "first_ids")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
