#!/usr/bin/env python3
"""Writes the GGUF fixtures of core/tests/gguf_dequant.rs into core/tests/fixtures/gguf/.

The reference is gguf-py (`pip install gguf numpy`, tested with gguf 0.19.0), independent of
the Rust code under test:

- quants.gguf: for each of the 13 ggml types the loader dequantizes, a 2 x 512 tensor
  `q.<TYPE>` stored in that type, and an F32 tensor `expect.<TYPE>` holding
  `gguf.quants.dequantize(...)` of the same bytes. Float and 32-block types quantize random
  data with gguf.quants.quantize; k-quants (no quantizer in gguf-py) are random block bytes
  with small positive fp16 d/dmin fields so every value is finite.
- meta.gguf: one metadata key per GGUF value type (and nested arrays), custom alignment 64,
  one small F32 tensor.
- tiny_llama.gguf: a llama-arch model (2 layers, 4 heads, 2 kv heads, head dim 8, hidden 32,
  ffn 64, vocab 64, F32) whose attn_q / attn_k are permuted exactly as convert_hf_to_gguf.py
  does, plus `expect.<hf name>` tensors holding the original HF-order Q/K weights.

Run from the repository root: python3 scripts/make_gguf_fixtures.py
"""

from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType as V

OUT = Path(__file__).resolve().parent.parent / "core" / "tests" / "fixtures" / "gguf"

SIMPLE = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]
KQUANTS = [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]
# Byte offsets of the fp16 scale fields inside one k-quant super-block.
HALF_FIELDS = {T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208]}
ROWS, COLS = 2, 512


def write(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def quants(rng: np.random.Generator) -> None:
    w = gguf.GGUFWriter(OUT / "quants.gguf", arch="fixture")
    for qt in SIMPLE:
        x = rng.standard_normal((ROWS, COLS)).astype(np.float32)
        x[0, :32] = 0.0  # an all-zero block
        q = gguf.quants.quantize(x, qt)
        expect = gguf.quants.dequantize(q, qt).astype(np.float32)
        if q.dtype == np.uint8:
            w.add_tensor(f"q.{qt.name}", q, raw_shape=q.shape, raw_dtype=qt)
        else:
            w.add_tensor(f"q.{qt.name}", q)
        w.add_tensor(f"expect.{qt.name}", expect.reshape(ROWS, COLS))
    for qt in KQUANTS:
        block_size, type_size = gguf.GGML_QUANT_SIZES[qt]
        n_blocks = ROWS * COLS // block_size
        raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
        for off in HALF_FIELDS[qt]:
            halfs = rng.uniform(0.001, 0.1, size=n_blocks).astype(np.float16)
            raw[:, off : off + 2] = halfs.view(np.uint8).reshape(n_blocks, 2)
        q = raw.reshape(ROWS, COLS // block_size * type_size)
        expect = gguf.quants.dequantize(q, qt).astype(np.float32)
        assert expect.shape == (ROWS, COLS) and np.isfinite(expect).all()
        w.add_tensor(f"q.{qt.name}", q, raw_shape=q.shape, raw_dtype=qt)
        w.add_tensor(f"expect.{qt.name}", expect)
    write(w)


def meta() -> None:
    w = gguf.GGUFWriter(OUT / "meta.gguf", arch="fixture")
    w.add_custom_alignment(64)
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4_000_000_000)
    w.add_int32("t.i32", -2_000_000_000)
    w.add_float32("t.f32", 1.5)
    w.add_bool("t.bool_true", True)
    w.add_bool("t.bool_false", False)
    w.add_string("t.string", "héllo ✓ world")
    w.add_uint64("t.u64", 18_000_000_000_000_000_000)
    w.add_int64("t.i64", -9_000_000_000_000_000_000)
    w.add_float64("t.f64", -2.25e300)
    w.add_key_value("t.arr_u32", [1, 2, 3], V.ARRAY, sub_type=V.UINT32)
    w.add_key_value("t.arr_f32", [0.5, -0.25], V.ARRAY, sub_type=V.FLOAT32)
    w.add_array("t.arr_str", ["a", "", "ünï"])
    w.add_key_value("t.arr_nested", [[1, 2], [3]], V.ARRAY, sub_type=V.ARRAY)
    w.add_tensor("small", np.arange(6, dtype=np.float32).reshape(2, 3))
    write(w)


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """LlamaModel.permute of llama.cpp's convert_hf_to_gguf.py."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tiny_llama(rng: np.random.Generator) -> None:
    n_layer, n_head, n_kv, hd, hidden, ffn, vocab = 2, 4, 2, 8, 32, 64, 64
    w = gguf.GGUFWriter(OUT / "tiny_llama.gguf", arch="llama")
    w.add_block_count(n_layer)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_key_length(hd)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(100000.0)
    w.add_context_length(256)
    w.add_uint32("tokenizer.ggml.bos_token_id", 1)
    w.add_uint32("tokenizer.ggml.eos_token_id", 2)

    def r(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    w.add_tensor("token_embd.weight", r(vocab, hidden))
    w.add_tensor("output_norm.weight", 1.0 + r(hidden))
    w.add_tensor("output.weight", r(vocab, hidden))
    w.add_tensor("rope_freqs.weight", np.ones(hd // 2, dtype=np.float32))
    for i in range(n_layer):
        q, k = r(n_head * hd, hidden), r(n_kv * hd, hidden)
        w.add_tensor(f"blk.{i}.attn_norm.weight", 1.0 + r(hidden))
        w.add_tensor(f"blk.{i}.attn_q.weight", permute(q, n_head))
        w.add_tensor(f"blk.{i}.attn_k.weight", permute(k, n_kv))
        w.add_tensor(f"blk.{i}.attn_v.weight", r(n_kv * hd, hidden))
        w.add_tensor(f"blk.{i}.attn_output.weight", r(hidden, n_head * hd))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", 1.0 + r(hidden))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", r(ffn, hidden))
        w.add_tensor(f"blk.{i}.ffn_up.weight", r(ffn, hidden))
        w.add_tensor(f"blk.{i}.ffn_down.weight", r(hidden, ffn))
        w.add_tensor(f"expect.model.layers.{i}.self_attn.q_proj.weight", q)
        w.add_tensor(f"expect.model.layers.{i}.self_attn.k_proj.weight", k)
    write(w)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20240611)
    quants(rng)
    meta()
    tiny_llama(rng)
    for p in sorted(OUT.glob("*.gguf")):
        print(f"{p.relative_to(OUT.parent.parent.parent.parent)}: {p.stat().st_size} bytes")


if __name__ == "__main__":
    main()
