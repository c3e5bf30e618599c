#!/usr/bin/env python3
"""Build tiny random model fixtures for attnscope-core tests.

For each architecture (llama, qwen2, qwen3) this builds a 2-layer random model
with transformers, rounds every weight so it is exactly representable in f32,
f16 and bf16, and writes to core/tests/fixtures/tiny/<arch>/:

  config.json                 HF config (v5 layout plus v4-style top-level rope_theta)
  *.safetensors               llama: model.safetensors F32
                              qwen2: 2 BF16 shards + model.safetensors.index.json
                              qwen3: model.safetensors F16
  model.gguf                  written like llama.cpp's convert_hf_to_gguf.py
                              (llama q/k permuted; dtypes F32 / F16+F32 / BF16+F32)
  expected.safetensors        reference tensors from the transformers forward pass
                              (eager attention, float32), see EXPECTED below.

Every storage format holds bit-identical weights, so a loader of any of them
must reproduce the same logits.

Run:  python3 scripts/make_model_fixtures.py    (deterministic, a few seconds)
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gguf  # noqa: E402
import transformers  # noqa: E402
from safetensors.numpy import save_file as np_save_file  # noqa: E402
from safetensors.torch import save_file as torch_save_file  # noqa: E402
from transformers import (  # noqa: E402
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT_ROOT = ROOT / "core" / "tests" / "fixtures" / "tiny"

N_TOKENS = 40
SPARSE_WINDOW = 8  # keep key 0 and keys j in (i-8, i]
SEED = 1234

COMMON = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=256,
    initializer_range=0.1,
    hidden_act="silu",
)

ARCHS = {
    "llama": dict(
        cls=LlamaForCausalLM,
        cfg=LlamaConfig,
        extra=dict(rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=False,
                   attention_bias=False, mlp_bias=False),
        st_dtype=torch.float32,
        gguf_2d=gguf.GGMLQuantizationType.F32,
        seed_offset=0,
    ),
    "qwen2": dict(
        cls=Qwen2ForCausalLM,
        cfg=Qwen2Config,
        extra=dict(rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
                   use_sliding_window=False),
        st_dtype=torch.bfloat16,
        gguf_2d=gguf.GGMLQuantizationType.F16,
        seed_offset=1,
    ),
    "qwen3": dict(
        cls=Qwen3ForCausalLM,
        cfg=Qwen3Config,
        extra=dict(rope_theta=1000000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
                   attention_bias=False, use_sliding_window=False),
        st_dtype=torch.float16,
        gguf_2d=gguf.GGMLQuantizationType.BF16,
        seed_offset=2,
    ),
}

FLUSH = 2.0 ** -14


def exact_round(t: torch.Tensor) -> torch.Tensor:
    """Round to bf16 (RNE), back to f32, flush |x| < 2^-14 to 0.

    The result is exactly representable in f32, f16 (normal range) and bf16.
    """
    r = t.detach().to(torch.bfloat16).to(torch.float32)
    r = torch.where(r.abs() < FLUSH, torch.zeros_like(r), r)
    assert r.abs().max().item() < 60000.0
    return r


def build_model(arch: str) -> torch.nn.Module:
    spec = ARCHS[arch]
    torch.manual_seed(SEED + spec["seed_offset"])
    cfg = spec["cfg"](**COMMON, **spec["extra"])
    cfg._attn_implementation = "eager"
    model = spec["cls"](cfg).float().eval()
    g = torch.Generator().manual_seed(SEED + 100 + spec["seed_offset"])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("q_norm.weight", "k_norm.weight")):
                # qwen3 q/k norms fix the per-head q/k scale, so the projection scale
                # cannot sharpen attention there; use larger gains (1.6 +- 0.3)
                p.copy_(1.6 + 0.3 * (2 * torch.rand(p.shape, generator=g) - 1))
            elif name.endswith("norm.weight"):
                # norm weights around 1 +- 0.2
                p.copy_(1.0 + 0.2 * (2 * torch.rand(p.shape, generator=g) - 1))
            elif name.endswith(".bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(("q_proj.weight", "k_proj.weight")):
                # std 0.2 so q.k/sqrt(d) has std ~2.5: clearly non-uniform attention
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        for p in model.parameters():
            p.copy_(exact_round(p))
    if cfg.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    return model


def hf_state_dict(model) -> dict[str, torch.Tensor]:
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    for k in list(sd):
        if "rotary_emb" in k:
            sd.pop(k)
    return sd


def write_config(model, arch: str, out: Path, dtype_name: str) -> None:
    d = json.loads(model.config.to_json_string())
    d.pop("_attn_implementation", None)
    d["architectures"] = [ARCHS[arch]["cls"].__name__]
    d["model_type"] = arch
    # v4-style keys next to v5's rope_parameters so any loader finds them
    d["rope_theta"] = ARCHS[arch]["extra"]["rope_theta"]
    d["head_dim"] = COMMON["head_dim"]
    d["num_key_value_heads"] = COMMON["num_key_value_heads"]
    d["tie_word_embeddings"] = ARCHS[arch]["extra"]["tie_word_embeddings"]
    d["torch_dtype"] = dtype_name
    d["dtype"] = dtype_name
    with open(out / "config.json", "w") as f:
        json.dump(d, f, indent=2, sort_keys=True)
        f.write("\n")


def write_safetensors(sd, arch: str, out: Path) -> list[str]:
    for p in out.glob("model*.safetensors*"):
        p.unlink()
    dt = ARCHS[arch]["st_dtype"]
    conv = {k: v.to(dt).contiguous() for k, v in sd.items()}
    # round trip must be exact
    for k, v in conv.items():
        assert torch.equal(v.float(), sd[k]), k
    meta = {"format": "pt"}
    if arch != "qwen2":
        torch_save_file(conv, str(out / "model.safetensors"), metadata=meta)
        return ["model.safetensors"]
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    shard1 = {k: v for k, v in conv.items()
              if k.startswith("model.embed_tokens") or k.startswith("model.layers.0.")}
    shard2 = {k: v for k, v in conv.items() if k not in shard1}
    torch_save_file(shard1, str(out / names[0]), metadata=meta)
    torch_save_file(shard2, str(out / names[1]), metadata=meta)
    total = sum(v.numel() * v.element_size() for v in conv.values())
    wm = {k: names[0] for k in shard1}
    wm.update({k: names[1] for k in shard2})
    index = {"metadata": {"total_size": total},
             "weight_map": dict(sorted(wm.items()))}
    with open(out / "model.safetensors.index.json", "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
    return names + ["model.safetensors.index.json"]


# ---- GGUF -----------------------------------------------------------------

def llama_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py LlamaModel.permute."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def llama_unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    return (w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


HF_TO_GGUF = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def gguf_name(hf: str) -> str:
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    parts = hf.split(".")
    assert parts[0] == "model" and parts[1] == "layers", hf
    return f"blk.{parts[2]}.{HF_TO_GGUF['.'.join(parts[3:])]}"


def gguf_tensors(sd, arch: str, cfg) -> dict[str, np.ndarray]:
    out = {}
    for k, v in sd.items():
        w = v.numpy().astype(np.float32)
        if arch == "llama" and k.endswith("self_attn.q_proj.weight"):
            w = llama_permute(w, cfg.num_attention_heads)
        elif arch == "llama" and k.endswith("self_attn.k_proj.weight"):
            w = llama_permute(w, cfg.num_key_value_heads)
        out[gguf_name(k)] = np.ascontiguousarray(w)
    return out


def write_gguf(sd, arch: str, cfg, out: Path) -> dict[str, np.ndarray]:
    path = out / "model.gguf"
    tensors = gguf_tensors(sd, arch, cfg)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(f"attnscope tiny {arch}")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(ARCHS[arch]["extra"]["rope_theta"])
    w.add_vocab_size(cfg.vocab_size)
    if arch == "llama":
        w.add_rope_dimension_count(cfg.head_dim)
    qt2d = ARCHS[arch]["gguf_2d"]
    ftype = {gguf.GGMLQuantizationType.F32: gguf.LlamaFileType.ALL_F32,
             gguf.GGMLQuantizationType.F16: gguf.LlamaFileType.MOSTLY_F16,
             gguf.GGMLQuantizationType.BF16: gguf.LlamaFileType.MOSTLY_BF16}[qt2d]
    w.add_file_type(ftype)
    for name, t in tensors.items():
        if t.ndim == 1 or qt2d == gguf.GGMLQuantizationType.F32:
            w.add_tensor(name, t.astype(np.float32))
        elif qt2d == gguf.GGMLQuantizationType.F16:
            w.add_tensor(name, t.astype(np.float16))
        else:
            data = gguf.quants.quantize(t, qt2d)
            w.add_tensor(name, data, raw_dtype=qt2d)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return tensors


def verify_gguf(path: Path, arch: str, cfg, sd, tensors) -> None:
    r = gguf.GGUFReader(str(path))
    f = r.fields
    assert bytes(f["general.architecture"].parts[-1]).decode() == arch

    def kv(key):
        return f[key].parts[f[key].data[0]][0]

    assert kv(f"{arch}.block_count") == cfg.num_hidden_layers
    assert kv(f"{arch}.attention.head_count") == cfg.num_attention_heads
    assert kv(f"{arch}.attention.head_count_kv") == cfg.num_key_value_heads
    assert kv(f"{arch}.attention.key_length") == cfg.head_dim
    assert abs(kv(f"{arch}.rope.freq_base") - ARCHS[arch]["extra"]["rope_theta"]) < 1e-3
    assert not any(k.startswith("tokenizer.") for k in f)
    got = {}
    for t in r.tensors:
        a = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))
        got[t.name] = (a.reshape(shape), t.tensor_type)
    assert set(got) == set(tensors), set(got) ^ set(tensors)
    for name, t in tensors.items():
        a, tt = got[name]
        assert np.array_equal(a, t), name
        if t.ndim == 1:
            assert tt == gguf.GGMLQuantizationType.F32, (name, tt)
        else:
            assert tt == ARCHS[arch]["gguf_2d"], (name, tt)
    # llama: un-permute must give back the HF weights exactly
    for k, v in sd.items():
        a = got[gguf_name(k)][0]
        if arch == "llama" and k.endswith("q_proj.weight"):
            a = llama_unpermute(a, cfg.num_attention_heads)
        elif arch == "llama" and k.endswith("k_proj.weight"):
            a = llama_unpermute(a, cfg.num_key_value_heads)
        assert np.array_equal(a, v.numpy()), k
    if arch == "llama":
        q = sd["model.layers.0.self_attn.q_proj.weight"].numpy()
        assert not np.array_equal(got["blk.0.attn_q.weight"][0], q), "permute was a no-op"


# ---- expected tensors -------------------------------------------------------

def reference(model, ids: torch.Tensor) -> dict[str, np.ndarray]:
    cfg = model.config
    L, H, KV, D = (cfg.num_hidden_layers, cfg.num_attention_heads,
                   cfg.num_key_value_heads, cfg.head_dim)
    n = ids.shape[1]
    o_in = {}

    def mk_hook(i):
        def hook(mod, args):
            o_in[i] = args[0].detach().clone()
        return hook

    hs = [layer.self_attn.o_proj.register_forward_pre_hook(mk_hook(i))
          for i, layer in enumerate(model.model.layers)]
    with torch.no_grad():
        out = model(ids, output_attentions=True, output_hidden_states=True)
        base = model.model(ids)
    for h in hs:
        h.remove()
    logits = out.logits[0]
    probs = torch.stack([a[0] for a in out.attentions])  # [L, H, n, n]
    hidden_out = base.last_hidden_state[0]
    assert torch.allclose(model.lm_head(hidden_out), logits, atol=1e-5)

    pos = torch.arange(n)[None]
    q_all, k_all, v_all, ao_all = [], [], [], []
    with torch.no_grad():
        cos, sin = model.model.rotary_emb(out.hidden_states[0], pos)
        for li, layer in enumerate(model.model.layers):
            x = layer.input_layernorm(out.hidden_states[li])
            at = layer.self_attn
            q = at.q_proj(x).view(1, n, H, D)
            k = at.k_proj(x).view(1, n, KV, D)
            v = at.v_proj(x).view(1, n, KV, D).transpose(1, 2)
            if hasattr(at, "q_norm"):
                q = at.q_norm(q)
                k = at.k_norm(k)
            q, k = q.transpose(1, 2), k.transpose(1, 2)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            rep = H // KV
            kk = k.repeat_interleave(rep, dim=1)
            vv = v.repeat_interleave(rep, dim=1)
            s = (q @ kk.transpose(-1, -2)) * (D ** -0.5)
            mask = torch.triu(torch.ones(n, n, dtype=torch.bool), 1)
            s = s.masked_fill(mask, float("-inf"))
            p = torch.softmax(s, dim=-1)
            err = (p[0] - probs[li]).abs().max().item()
            assert err < 1e-5, f"layer {li} attn_probs recompute err {err}"
            ao = p @ vv  # [1, H, n, D]
            err2 = (ao[0].transpose(0, 1).reshape(n, H * D) - o_in[li][0]).abs().max().item()
            assert err2 < 1e-5, f"layer {li} attn_out err {err2}"
            q_all.append(q[0]); k_all.append(k[0]); v_all.append(v[0]); ao_all.append(ao[0])

    q_rope = torch.stack(q_all).numpy()
    k_rope = torch.stack(k_all).numpy()
    v_np = torch.stack(v_all).numpy()

    # sparse fixture (numpy, layer 0)
    keep = np.zeros((n, n), dtype=bool)
    for i in range(n):
        keep[i, 0] = True
        keep[i, max(0, i - SPARSE_WINDOW + 1): i + 1] = True
    q0 = q_rope[0].astype(np.float64)
    k0 = np.repeat(k_rope[0], H // KV, axis=0).astype(np.float64)
    v0 = np.repeat(v_np[0], H // KV, axis=0).astype(np.float64)
    sc = np.einsum("hid,hjd->hij", q0, k0) / np.sqrt(D)
    sc = np.where(keep[None], sc, -np.inf)
    sc -= sc.max(-1, keepdims=True)
    pw = np.exp(sc)
    pw /= pw.sum(-1, keepdims=True)
    sparse = np.einsum("hij,hjd->hid", pw, v0).astype(np.float32)
    # sanity: with the dense mask the same numpy path reproduces attn_out
    dense_keep = ~np.triu(np.ones((n, n), dtype=bool), 1)
    sc2 = np.einsum("hid,hjd->hij", q0, k0) / np.sqrt(D)
    sc2 = np.where(dense_keep[None], sc2, -np.inf)
    sc2 -= sc2.max(-1, keepdims=True)
    p2 = np.exp(sc2)
    p2 /= p2.sum(-1, keepdims=True)
    assert np.abs(np.einsum("hij,hjd->hid", p2, v0) - ao_all[0].numpy()).max() < 1e-5

    return {
        "input_ids": ids[0].numpy().astype(np.int64),
        "logits": logits.numpy(),
        "attn_probs": probs.numpy(),
        "q_rope": q_rope,
        "k_rope": k_rope,
        "v": v_np,
        "attn_out": torch.stack(ao_all).numpy(),
        "hidden_out": hidden_out.numpy(),
        "sparse_keep_l0": keep.astype(np.uint8),
        "sparse_attn_out_l0": sparse,
    }


def check_formats_agree(model, arch: str, out: Path, ref_logits: np.ndarray, ids) -> None:
    """Load the written safetensors back into a fresh model: logits must match bit-for-bit."""
    from safetensors.torch import load_file
    sd = {}
    for p in sorted(out.glob("model*.safetensors")):
        sd.update({k: v.float() for k, v in load_file(str(p)).items()})
    m2 = ARCHS[arch]["cls"](model.config).float().eval()
    missing, unexpected = m2.load_state_dict(sd, strict=False)
    assert not unexpected, unexpected
    assert all("lm_head" in k or "rotary" in k for k in missing), missing
    if model.config.tie_word_embeddings:
        m2.tie_weights()
    with torch.no_grad():
        l2 = m2(ids).logits[0].numpy()
    assert np.array_equal(l2, ref_logits), f"{arch}: reloaded logits differ"


def check_gguf_with_transformers(arch: str, out: Path, ref_logits: np.ndarray, ids) -> float:
    """Independent GGUF reader: transformers' own GGUF loader (which un-permutes llama q/k).

    transformers 5.x ignores qwen3.attention.key_length (would assume head_dim 128), so the
    config is passed from config.json; the weights still come from model.gguf.
    """
    import contextlib
    import io

    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    kw = {}
    if arch == "qwen3":
        kw["config"] = AutoConfig.from_pretrained(str(out))
    with contextlib.redirect_stderr(io.StringIO()):
        m = AutoModelForCausalLM.from_pretrained(
            str(out), gguf_file="model.gguf", dtype=torch.float32,
            attn_implementation="eager", **kw).eval()
    with torch.no_grad():
        lg = m(ids).logits[0].numpy()
    err = float(np.abs(lg - ref_logits).max())
    assert err == 0.0, f"{arch}: transformers-from-GGUF logits differ by {err}"
    return err


def entropy_stats(probs: np.ndarray) -> float:
    p = np.clip(probs, 1e-30, 1)
    ent = -(probs * np.log(p)).sum(-1)  # [L,H,n]
    n = probs.shape[-1]
    uni = np.log(np.arange(1, n + 1))
    return float((ent[..., 1:] / uni[1:]).mean())


def main() -> int:
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    OUT_ROOT.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(SEED)
    ids = torch.randint(0, COMMON["vocab_size"], (1, N_TOKENS), generator=g)
    total = 0
    for arch in ARCHS:
        out = OUT_ROOT / arch
        out.mkdir(parents=True, exist_ok=True)
        model = build_model(arch)
        cfg = model.config
        sd = hf_state_dict(model)
        dtype_name = {torch.float32: "float32", torch.bfloat16: "bfloat16",
                      torch.float16: "float16"}[ARCHS[arch]["st_dtype"]]
        write_config(model, arch, out, dtype_name)
        files = write_safetensors(sd, arch, out)
        tensors = write_gguf(sd, arch, cfg, out)
        verify_gguf(out / "model.gguf", arch, cfg, sd, tensors)
        exp = reference(model, ids)
        check_formats_agree(model, arch, out, exp["logits"], ids)
        check_gguf_with_transformers(arch, out, exp["logits"], ids)
        np_save_file(exp, str(out / "expected.safetensors"),
                     # one key only: safetensors writes metadata in hash order
                     metadata={"info": json.dumps({
                         "arch": arch, "n_tokens": N_TOKENS,
                         "sparse_rule": f"key 0 + keys j in (i-{SPARSE_WINDOW}, i]",
                         "generator": "scripts/make_model_fixtures.py",
                         "transformers": transformers.__version__,
                         "torch": torch.__version__}, sort_keys=True)})
        for p in out.iterdir():
            p.chmod(0o644)
        size = sum(p.stat().st_size for p in out.iterdir())
        total += size
        print(f"[{arch}] {size / 1024:.1f} KiB  files: config.json {' '.join(files)} "
              f"model.gguf expected.safetensors")
        print(f"    params={sum(v.numel() for v in sd.values())} tied={cfg.tie_word_embeddings} "
              f"rope_theta={ARCHS[arch]['extra']['rope_theta']:g} eps={cfg.rms_norm_eps:g}")
        print(f"    logits[0,:4]={np.round(exp['logits'][0, :4], 5).tolist()} "
              f"attn entropy/uniform={entropy_stats(exp['attn_probs']):.3f} "
              f"mean row max (rows>=8)={exp['attn_probs'][:, :, 8:].max(-1).mean():.3f}")
    print(f"total {total / 1024:.1f} KiB in {OUT_ROOT.relative_to(ROOT)}")
    # the brief's sizes (hidden 64, vocab 128, llama in F32 twice) do not fit 1 MiB
    assert total < 2 * 1024 * 1024
    return 0


if __name__ == "__main__":
    sys.exit(main())
