#!/usr/bin/env python3
"""RoPE scaling fixtures for attnscope-core tests, computed by transformers.

Writes to core/tests/fixtures/rope/:

  freqs.json          for each case: a config.json fragment (rope_scaling in the v4 layout or
                      rope_parameters in the v5 layout), the forward length, and the inverse
                      frequencies and attention factor of transformers' ROPE_INIT_FUNCTIONS
                      (`default`: the model's compute_default_rope_parameters).
  llama3/             a tiny random 2-layer Llama with llama3 rope scaling:
      config.json, model.safetensors (BF16), model.gguf (F16 + F32 norms and a
      rope_freqs.weight tensor written as llama.cpp's convert_hf_to_gguf.py writes it),
      expected.safetensors (input_ids, logits, attn_probs from the eager float32 forward).

Run:  python3 scripts/make_rope_fixtures.py    (deterministic, a few seconds)
"""
from __future__ import annotations

import json
import math
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
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: E402
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_model_fixtures import exact_round, gguf_name, llama_permute  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "core" / "tests" / "fixtures" / "rope"

BASE = dict(model_type="llama", architectures=["LlamaForCausalLM"], vocab_size=64,
            hidden_size=64, intermediate_size=64, num_hidden_layers=1, num_attention_heads=1,
            num_key_value_heads=1, rms_norm_eps=1e-6)

# name, head_dim, rope_theta, max_position_embeddings, forward length, layout, parameters
CASES = [
    ("default", 64, 10000.0, 2048, 16, "none", None),
    ("default_v5", 64, 1000000.0, 2048, 16, "rope_parameters", {"rope_type": "default"}),
    ("linear_v4_type", 64, 10000.0, 2048, 16, "rope_scaling", {"type": "linear", "factor": 4.0}),
    ("linear_v5", 128, 500000.0, 4096, 16, "rope_parameters",
     {"rope_type": "linear", "factor": 2.5}),
    ("dynamic_short", 64, 10000.0, 256, 100, "rope_scaling",
     {"rope_type": "dynamic", "factor": 2.0}),
    ("dynamic_long", 64, 10000.0, 256, 1000, "rope_scaling",
     {"rope_type": "dynamic", "factor": 2.0}),
    ("dynamic_long_v5", 128, 500000.0, 512, 1500, "rope_parameters",
     {"rope_type": "dynamic", "factor": 4.0}),
    ("llama3_8b", 128, 500000.0, 131072, 16, "rope_scaling",
     {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8192}),
    ("llama3_1b_v5", 64, 500000.0, 131072, 16, "rope_parameters",
     {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8192}),
    ("llama3_tiny", 16, 10000.0, 256, 16, "rope_scaling",
     {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 64}),
    ("yarn_qwen", 128, 1000000.0, 131072, 16, "rope_scaling",
     {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}),
    ("yarn_mscale", 64, 10000.0, 163840, 16, "rope_scaling",
     {"rope_type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096,
      "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 0.707}),
    ("yarn_attention_factor_no_truncate", 64, 10000.0, 8192, 16, "rope_parameters",
     {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 2048,
      "attention_factor": 1.25, "beta_fast": 16.0, "beta_slow": 2.0, "truncate": False}),
    ("yarn_original_from_max_pos", 64, 10000.0, 4096, 16, "rope_parameters",
     {"rope_type": "yarn", "factor": 8.0}),
]


def case_config(head_dim, theta, max_pos, layout, params) -> dict:
    d = dict(BASE, head_dim=head_dim, max_position_embeddings=max_pos)
    if layout == "rope_parameters":
        d["rope_parameters"] = dict(params, rope_theta=theta)
    else:
        d["rope_theta"] = theta
        if layout == "rope_scaling":
            d["rope_scaling"] = dict(params)
    return d


def transformers_freqs(d: dict, seq_len: int):
    cfg = LlamaConfig.from_dict(json.loads(json.dumps(d)))
    kind = cfg.rope_parameters.get("rope_type", "default")
    if kind == "default":
        inv, af = LlamaRotaryEmbedding.compute_default_rope_parameters(cfg)
    elif kind == "dynamic":
        inv, af = ROPE_INIT_FUNCTIONS[kind](cfg, None, seq_len=seq_len)
    else:
        inv, af = ROPE_INIT_FUNCTIONS[kind](cfg, None)
    assert inv.dtype == torch.float32
    return kind, [float(x) for x in inv.tolist()], float(af)


def write_freqs() -> None:
    cases = []
    for name, hd, theta, max_pos, n, layout, params in CASES:
        d = case_config(hd, theta, max_pos, layout, params)
        kind, inv, af = transformers_freqs(d, n)
        cases.append({"name": name, "rope_type": kind, "seq_len": n, "config": d,
                      "inv_freq": inv, "attention_factor": af})
        print(f"  {name:36s} {kind:8s} inv[0]={inv[0]:.6g} inv[-1]={inv[-1]:.6g} "
              f"attention_factor={af:.6g}")
    doc = {"generator": "scripts/make_rope_fixtures.py",
           "transformers": transformers.__version__, "torch": torch.__version__,
           "cases": cases}
    with open(OUT / "freqs.json", "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


# ---- tiny Llama 3 model ------------------------------------------------------

N_TOKENS = 32
SEED = 4321
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
MODEL = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, head_dim=16,
             max_position_embeddings=256, rms_norm_eps=1e-6, hidden_act="silu",
             tie_word_embeddings=True, attention_bias=False, mlp_bias=False)
THETA = 10000.0


def build_llama3() -> LlamaForCausalLM:
    torch.manual_seed(SEED)
    cfg = LlamaConfig(**MODEL, rope_theta=THETA, rope_scaling=dict(LLAMA3))
    cfg._attn_implementation = "eager"
    assert cfg.rope_parameters["rope_type"] == "llama3", cfg.rope_parameters
    model = LlamaForCausalLM(cfg).float().eval()
    g = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * (2 * torch.rand(p.shape, generator=g) - 1))
            elif name.endswith(("q_proj.weight", "k_proj.weight")):
                # large q/k so attention depends clearly on the (scaled) rotary phases
                p.copy_(0.35 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=g))
            p.copy_(exact_round(p))
    return model


def llama_cpp_rope_factors(hf: dict) -> np.ndarray:
    """LlamaModel.generate_extra_tensors of convert_hf_to_gguf.py (llama3 rope_freqs).

    The converter reads original_max_position_embeddings from the top level of config.json
    (default 8192); this config keeps it only in rope_scaling, so it is passed from there, as the
    converter does for the real Llama 3.x configs (where both are 8192)."""
    rs = hf["rope_scaling"]
    base = hf.get("rope_theta", 10000.0)
    dim = hf["head_dim"]
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    factor = rs.get("factor", 8.0)
    low_freq_factor = rs.get("low_freq_factor", 1.0)
    high_freq_factor = rs.get("high_freq_factor", 4.0)
    old_context_len = rs.get("original_max_position_embeddings", 8192)
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    rope_factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_freq_wavelen:
            rope_factors.append(1)
        elif wavelen > low_freq_wavelen:
            rope_factors.append(factor)
        else:
            smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            rope_factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(rope_factors, dtype=np.float32)


def write_llama3() -> None:
    out = OUT / "llama3"
    out.mkdir(parents=True, exist_ok=True)
    model = build_llama3()
    cfg = model.config
    hf = {**MODEL, "model_type": "llama", "architectures": ["LlamaForCausalLM"],
          "rope_theta": THETA, "rope_scaling": dict(LLAMA3), "dtype": "bfloat16",
          "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2}
    with open(out / "config.json", "w") as f:
        json.dump(hf, f, indent=2, sort_keys=True)
        f.write("\n")
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()
          if "rotary_emb" not in k and k != "lm_head.weight"}
    conv = {k: v.to(torch.bfloat16).contiguous() for k, v in sd.items()}
    for k, v in conv.items():
        assert torch.equal(v.float(), sd[k]), k
    torch_save_file(conv, str(out / "model.safetensors"), metadata={"format": "pt"})

    # GGUF as convert_hf_to_gguf.py writes a Llama 3.1 (no rope.scaling.type for llama3: the
    # scaling lives in the rope_freqs tensor).
    w = gguf.GGUFWriter(str(out / "model.gguf"), "llama")
    w.add_name("attnscope tiny llama3")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(THETA)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    factors = llama_cpp_rope_factors(hf)
    w.add_tensor("rope_freqs.weight", factors)
    for k, v in sd.items():
        t = v.numpy().astype(np.float32)
        if k.endswith("self_attn.q_proj.weight"):
            t = llama_permute(t, cfg.num_attention_heads)
        elif k.endswith("self_attn.k_proj.weight"):
            t = llama_permute(t, cfg.num_key_value_heads)
        t = np.ascontiguousarray(t)
        w.add_tensor(gguf_name(k), t if t.ndim == 1 else t.astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    # The converter's factors agree with transformers' llama3 frequencies.
    inv_hf, _ = ROPE_INIT_FUNCTIONS["llama3"](cfg, None)
    default = 1.0 / (THETA ** (torch.arange(0, 16, 2, dtype=torch.float32) / 16))
    assert torch.allclose(default / torch.from_numpy(factors), inv_hf, rtol=1e-6), (factors, inv_hf)
    assert len(set(np.round(factors, 4).tolist())) >= 3, factors  # kept, smoothed, divided

    g = torch.Generator().manual_seed(SEED + 2)
    ids = torch.randint(0, cfg.vocab_size, (1, N_TOKENS), generator=g)
    with torch.no_grad():
        o = model(ids, output_attentions=True)
        # the same weights with plain RoPE must differ (the scaling matters for this fixture)
        plain = LlamaForCausalLM(LlamaConfig(**MODEL, rope_theta=THETA)).float().eval()
        plain.load_state_dict(model.state_dict())
        diff = float((plain(ids).logits - o.logits).abs().max())
    assert diff > 1e-2, diff
    exp = {"input_ids": ids[0].numpy().astype(np.int64),
           "logits": o.logits[0].numpy(),
           "attn_probs": torch.stack([a[0] for a in o.attentions]).numpy()}
    np_save_file(exp, str(out / "expected.safetensors"),
                 metadata={"info": json.dumps({
                     "generator": "scripts/make_rope_fixtures.py", "n_tokens": N_TOKENS,
                     "transformers": transformers.__version__, "torch": torch.__version__,
                     "rope_freqs": factors.tolist()}, sort_keys=True)})
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"  llama3 tiny: {size / 1024:.1f} KiB; rope_freqs={np.round(factors, 4).tolist()}; "
          f"max |logit change| vs plain RoPE={diff:.3f}")


def main() -> int:
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    write_freqs()
    write_llama3()
    return 0


if __name__ == "__main__":
    sys.exit(main())
