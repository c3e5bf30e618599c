#!/usr/bin/env python3
"""Writes a GGUF holding only the first N decoder layers of a real checkpoint.

The quantized tensor bytes are copied unchanged (token embeddings, output norm and blocks
0..N-1), every metadata field is kept, and `<arch>.block_count` is set to N, so attnscope loads
it as a shallower model with real weights and the real tokenizer. scripts/gpu_pack.sh uses it so
that the GPU checks run on real SmolLM2 weights and activations from a small file (the full GGUF
is 98 MB):

    python3 scripts/gpu_truncate_gguf.py \
        ~/.cache/attnscope/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf gpu-inputs/smollm2-4l.gguf 4
"""
import sys

import gguf


def truncate(src: str, dst: str, n_layers: int) -> None:
    reader = gguf.GGUFReader(src)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    writer = gguf.GGUFWriter(dst, arch=arch, endianess=reader.endianess)
    block_key = f"{arch}.block_count"
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        val = n_layers if field.name == block_key else field.contents()
        writer.add_key_value(field.name, val, vtype, sub_type=sub)

    def keep(name: str) -> bool:
        if not name.startswith("blk."):
            return True
        return int(name.split(".")[1]) < n_layers

    tensors = [t for t in reader.tensors if keep(t.name)]
    for t in tensors:
        writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in tensors:
        writer.write_tensor_data(t.data, tensor_endianess=reader.endianess)
    writer.close()
    print(f"{dst}: {len(tensors)} tensors, {n_layers} layers")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    truncate(sys.argv[1], sys.argv[2], int(sys.argv[3]))
