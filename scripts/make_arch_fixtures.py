#!/usr/bin/env python3
"""Build tiny random fixtures of the architectures beyond Llama/Qwen for attnscope-core tests.

For mistral, gemma2, gemma3, phi3, qwen2 with a sliding window and olmo2 this builds a small random transformers model
(float32, eager attention), rounds every weight to a bf16-exact value (as
make_model_fixtures.py does), and writes to core/tests/fixtures/tiny/<arch>/:

  config.json             the transformers config (v5 layout, as written by to_json_string)
  model.safetensors       weights under HF names: F32 (Gemma: BF16, exact for these weights)
  model.gguf              gemma2, gemma3, phi3, olmo2: written like llama.cpp's
                          convert_hf_to_gguf.py (Gemma norm weights stored as 1 + w, norms F32,
                          matrices F16, <arch>.* keys with window and soft-caps, no q/k
                          permutation, Phi-3's attn_qkv and gate|up ffn_up fused); every tensor
                          name checked against gguf-py's list for the architecture. llama.cpp
                          scales Gemma 2 queries by head_dim^-1/2, so the gemma2 GGUF test sets
                          query_pre_attn_scalar 24 back after loading.
  expected.safetensors    input_ids [n] I64, logits [n, vocab], attn_probs [L, H, n, n]
                          (transformers' own `attentions`: post-softcap, window-masked),
                          attn_out [L, H, n, head_dim] (the input of o_proj, per head)

What each fixture exercises (n = 40 tokens, window 8 where there is one):

  mistral  sliding_window 8 on every layer, 100 tokens (the second 64-query tile starts past
           the window of its first query)
  gemma2   embedding scale, 4 norms (1 + w), query_pre_attn_scalar 24 != head_dim 32,
           head_dim * heads != hidden, attn softcap 2.0 and final softcap 3.0 (small, so tanh
           bends the logits), layers local/global/local/global
  gemma3   q/k norms (1 + w), 6 layers (5 local, 1 global, as llama.cpp assumes), local rope
           base 10k, global base 1e6 with linear scaling (factor 2), head_dim 32
  phi3     fused qkv_proj and gate_up_proj, sliding_window 8
  qwen2_window  use_sliding_window with max_window_layers 1: layer 0 global, layers 1-2
           local (window 8), Q/K/V biases
  olmo2    post norms only, q/k norm over the whole projection

The script asserts that its own numpy recomputation of the probabilities (scale, softcap,
window (i - window, i]) matches transformers' to 1e-5, and that transformers' GGUF loader reads
the gemma2, gemma3 and phi3 GGUFs back to the same logits (it has no OLMo-2 GGUF loader).

Run:  python3 scripts/make_arch_fixtures.py    (deterministic, a few seconds)
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
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    MistralConfig,
    MistralForCausalLM,
    Olmo2Config,
    Olmo2ForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_model_fixtures import exact_round  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT_ROOT = ROOT / "core" / "tests" / "fixtures" / "tiny"
N_TOKENS = 40
# mistral runs on more tokens than one 64-query tile, so a tile starts past the window
N_TOKENS_LONG = {"mistral": 100}
WINDOW = 8
SEED = 4321

BASE = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.1)

ARCHS = {
    "mistral": dict(cls=MistralForCausalLM, cfg=MistralConfig, extra=dict(
        num_hidden_layers=2, head_dim=16, sliding_window=WINDOW, rms_norm_eps=1e-6,
        tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 1e4})),
    "gemma2": dict(cls=Gemma2ForCausalLM, cfg=Gemma2Config, extra=dict(
        num_hidden_layers=4, head_dim=32, sliding_window=WINDOW, rms_norm_eps=1e-6,
        query_pre_attn_scalar=24, attn_logit_softcapping=2.0, final_logit_softcapping=3.0,
        tie_word_embeddings=True, hidden_activation="gelu_pytorch_tanh",
        rope_parameters={"rope_type": "default", "rope_theta": 1e4})),
    "gemma3": dict(cls=Gemma3ForCausalLM, cfg=Gemma3TextConfig, extra=dict(
        num_hidden_layers=6, head_dim=32, sliding_window=WINDOW, rms_norm_eps=1e-6,
        query_pre_attn_scalar=32, tie_word_embeddings=True,
        hidden_activation="gelu_pytorch_tanh",
        layer_types=["sliding_attention"] * 5 + ["full_attention"],
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
            "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e6}})),
    "phi3": dict(cls=Phi3ForCausalLM, cfg=Phi3Config, extra=dict(
        num_hidden_layers=2, sliding_window=WINDOW, rms_norm_eps=1e-5,
        tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                         "partial_rotary_factor": 1.0})),
    "olmo2": dict(cls=Olmo2ForCausalLM, cfg=Olmo2Config, extra=dict(
        num_hidden_layers=2, rms_norm_eps=1e-6, tie_word_embeddings=False, pad_token_id=0,
        rope_parameters={"rope_type": "default", "rope_theta": 5e5})),
    "qwen2_window": dict(cls=Qwen2ForCausalLM, cfg=Qwen2Config, extra=dict(
        num_hidden_layers=3, use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1,
        rms_norm_eps=1e-6, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6})),
}


def build(arch: str, k: int):
    spec = ARCHS[arch]
    torch.manual_seed(SEED + k)
    cfg = spec["cfg"](**BASE, **spec["extra"])
    cfg._attn_implementation = "eager"
    model = spec["cls"](cfg).float().eval()
    g = torch.Generator().manual_seed(SEED + 100 + k)
    gemma = arch.startswith("gemma")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                # Gemma applies 1 + w: weights around 0; elsewhere around 1
                c = 0.0 if gemma else 1.0
                if name.endswith(("q_norm.weight", "k_norm.weight")) and not gemma:
                    c = 1.6  # olmo2's whole-projection norms fix the q/k scale: sharpen
                p.copy_(c + 0.2 * (2 * torch.rand(p.shape, generator=g) - 1))
            elif name.endswith(("q_proj.weight", "k_proj.weight", "qkv_proj.weight")):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        for p in model.parameters():
            p.copy_(exact_round(p))
    return model


def window_of(cfg, layer: int):
    types = getattr(cfg, "layer_types", None)
    w = getattr(cfg, "sliding_window", None)
    if w is None:
        return None
    if types is not None and types[layer] != "sliding_attention":
        return None
    return w


def recompute_probs(cfg, layer: int, q: np.ndarray, k: np.ndarray) -> np.ndarray:
    """numpy: softcap(scale q.k) with the causal window (i - w, i]; q [H,n,D], k [KV,n,D]."""
    H, n, D = q.shape
    kk = np.repeat(k, H // k.shape[0], axis=0).astype(np.float64)
    scalar = getattr(cfg, "query_pre_attn_scalar", None) or D
    s = np.einsum("hid,hjd->hij", q.astype(np.float64), kk) * scalar ** -0.5
    cap = getattr(cfg, "attn_logit_softcapping", None)
    if cap:
        s = cap * np.tanh(s / cap)
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    vis = j <= i
    w = window_of(cfg, layer)
    if w is not None:
        vis &= j > i - w
    s = np.where(vis[None], s, -np.inf)
    s -= s.max(-1, keepdims=True)
    p = np.exp(s)
    return p / p.sum(-1, keepdims=True)


def reference(model, ids: torch.Tensor) -> dict[str, np.ndarray]:
    cfg = model.config
    n = ids.shape[1]
    H = cfg.num_attention_heads
    D = getattr(cfg, "head_dim", None) or cfg.hidden_size // H
    o_in, qk = {}, {}

    def pre_o(i):
        def hook(mod, args):
            o_in[i] = args[0].detach().clone()
        return hook

    hooks = [layer.self_attn.o_proj.register_forward_pre_hook(pre_o(i))
             for i, layer in enumerate(model.model.layers)]
    # post-RoPE q/k: the arguments transformers hands to its attention function
    import transformers.integrations.sdpa_attention  # noqa: F401
    mod = sys.modules[type(model.model.layers[0].self_attn).__module__]
    orig = mod.eager_attention_forward

    def spy(module, query, key, value, attention_mask, **kw):
        qk[module.layer_idx] = (query[0].detach().numpy().copy(), key[0].detach().numpy().copy())
        return orig(module, query, key, value, attention_mask, **kw)

    mod.eager_attention_forward = spy
    try:
        with torch.no_grad():
            out = model(ids, output_attentions=True)
    finally:
        mod.eager_attention_forward = orig
        for h in hooks:
            h.remove()
    probs = torch.stack([a[0] for a in out.attentions]).numpy()
    for li in range(cfg.num_hidden_layers):
        q, k = qk[li]
        err = np.abs(recompute_probs(cfg, li, q, k) - probs[li]).max()
        assert err < 1e-5, f"layer {li}: recomputed probabilities differ by {err}"
    attn_out = np.ascontiguousarray(np.stack([o_in[i][0].reshape(n, H, D).permute(1, 0, 2).numpy()
                         for i in range(cfg.num_hidden_layers)]))
    return {
        "input_ids": ids[0].numpy().astype(np.int64),
        "logits": out.logits[0].numpy(),
        "attn_probs": probs,
        "attn_out": attn_out,
    }


def write_config(model, out: Path) -> None:
    d = json.loads(model.config.to_json_string())
    d.pop("_attn_implementation", None)
    d["architectures"] = [type(model).__name__]
    d["dtype"] = "float32"
    with open(out / "config.json", "w") as f:
        json.dump(d, f, indent=2, sort_keys=True)
        f.write("\n")


def state_dict(model) -> dict[str, torch.Tensor]:
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()
          if "rotary_emb" not in k}
    if model.config.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    return sd


# HF layer tensor -> llama.cpp name (gguf.TENSOR_NAMES), per family where they differ
GGUF_COMMON = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
GGUF_NAMES = {
    "gemma2": {"post_attention_layernorm.weight": "post_attention_norm.weight",
               "pre_feedforward_layernorm.weight": "ffn_norm.weight",
               "post_feedforward_layernorm.weight": "post_ffw_norm.weight"},
    "olmo2": {"post_attention_layernorm.weight": "post_attention_norm.weight",
              "post_feedforward_layernorm.weight": "post_ffw_norm.weight"},
    "phi3": {"self_attn.qkv_proj.weight": "attn_qkv.weight",
             "mlp.gate_up_proj.weight": "ffn_up.weight",
             "post_attention_layernorm.weight": "ffn_norm.weight"},
}
GGUF_NAMES["gemma3"] = GGUF_NAMES["gemma2"]
GGUF_ARCHS = ("gemma2", "gemma3", "phi3", "olmo2")


def gguf_name(arch: str, k: str) -> str:
    if k == "model.embed_tokens.weight":
        return "token_embd.weight"
    if k == "model.norm.weight":
        return "output_norm.weight"
    if k == "lm_head.weight":
        return "output.weight"
    p = k.split(".")
    rest = ".".join(p[3:])
    name = f"blk.{p[2]}.{GGUF_NAMES[arch].get(rest) or GGUF_COMMON[rest]}"
    # the name must be one llama.cpp knows for this architecture
    known = {gguf.TENSOR_NAMES[t].format(bid=p[2]) + ".weight"
             for t in gguf.MODEL_TENSORS[getattr(gguf.MODEL_ARCH, arch.upper())]}
    assert name in known, name
    return name


def write_gguf(arch: str, model, sd, out: Path) -> None:
    """As convert_hf_to_gguf.py: Gemma norms stored as 1 + w, no q/k permutation (these
    families use NEOX-style RoPE in llama.cpp), Phi-3's fused tensors kept fused."""
    cfg = model.config
    w = gguf.GGUFWriter(str(out / "model.gguf"), arch)
    w.add_name(f"attnscope tiny {arch}")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    rope = cfg.rope_parameters.get("full_attention", cfg.rope_parameters)
    w.add_rope_freq_base(rope["rope_theta"])
    if rope.get("rope_type") == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rope["factor"])
    if getattr(cfg, "sliding_window", None):
        w.add_sliding_window(cfg.sliding_window)
    if arch == "gemma2":
        w.add_attn_logit_softcapping(cfg.attn_logit_softcapping)
        w.add_final_logit_softcapping(cfg.final_logit_softcapping)
    if arch == "phi3":
        w.add_rope_dimension_count(head_dim)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    for k, v in sd.items():
        a = v.numpy().astype(np.float32)
        if arch.startswith("gemma") and k.endswith("norm.weight"):
            a = a + np.float32(1.0)
        if a.ndim == 2:
            assert np.array_equal(a.astype(np.float16).astype(np.float32), a), k
            a = a.astype(np.float16)
        w.add_tensor(gguf_name(arch, k), np.ascontiguousarray(a))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def check_gguf_with_transformers(arch: str, out: Path, ref_logits: np.ndarray, ids) -> float:
    """transformers' own GGUF loader (it subtracts Gemma's 1 again, splits nothing for Phi-3)
    must give the same logits; the config is passed from config.json (transformers' GGUF
    mapping reads neither the rope scaling, the layer pattern of a 6-layer model nor
    query_pre_attn_scalar)."""
    import contextlib
    import io

    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    with contextlib.redirect_stderr(io.StringIO()):
        m = AutoModelForCausalLM.from_pretrained(
            str(out), gguf_file="model.gguf", dtype=torch.float32,
            config=AutoConfig.from_pretrained(str(out)), attn_implementation="eager").eval()
    with torch.no_grad():
        lg = m(ids).logits[0].numpy()
    err = float(np.abs(lg - ref_logits).max())
    assert err < 1e-5, f"{arch}: transformers-from-GGUF logits differ by {err}"
    return err


def main() -> int:
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(SEED)
    ids = torch.randint(0, BASE["vocab_size"], (1, N_TOKENS), generator=g)
    for k, arch in enumerate(ARCHS):
        out = OUT_ROOT / arch
        out.mkdir(parents=True, exist_ok=True)
        model = build(arch, k)
        sd = state_dict(model)
        write_config(model, out)
        st = {k: v.to(torch.bfloat16) for k, v in sd.items()} if arch.startswith("gemma") else sd
        assert all(torch.equal(st[k].float(), sd[k]) for k in sd)
        torch_save_file(st, str(out / "model.safetensors"), metadata={"format": "pt"})
        x = ids
        if arch in N_TOKENS_LONG:
            gl = torch.Generator().manual_seed(SEED + 7)
            x = torch.randint(0, BASE["vocab_size"], (1, N_TOKENS_LONG[arch]), generator=gl)
        exp = reference(model, x)
        extra = ""
        if arch in GGUF_ARCHS:
            write_gguf(arch, model, sd, out)
            extra = " gguf"
            if arch != "olmo2":  # transformers 5 has no OLMo-2 GGUF loader
                err = check_gguf_with_transformers(arch, out, exp["logits"], x)
                extra += f" via transformers err={err:.1e}"
        np_save_file(exp, str(out / "expected.safetensors"), metadata={"info": json.dumps({
            "arch": arch, "n_tokens": x.shape[1], "generator": "scripts/make_arch_fixtures.py",
            "transformers": transformers.__version__, "torch": torch.__version__},
            sort_keys=True)})
        for p in out.iterdir():
            p.chmod(0o644)
        size = sum(p.stat().st_size for p in out.iterdir())
        pr = exp["attn_probs"]
        print(f"[{arch}] {size / 1024:.1f} KiB logits[0,:3]={np.round(exp['logits'][0, :3], 4).tolist()}"
              f" mean row max={pr[:, :, 8:].max(-1).mean():.3f}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
