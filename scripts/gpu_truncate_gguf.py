#!/usr/bin/env python3
"""Writes a GGUF holding only the first N decoder layers of a real checkpoint.

The quantized tensor bytes are copied unchanged (token embeddings, output norm and blocks
0..N-1), every metadata field is kept, and `<arch>.block_count` is set to N, so attnscope loads
it as a shallower model with real weights and the real tokenizer. scripts/gpu_pack.sh uses it so
that the GPU checks run on real SmolLM2 weights and activations from a small file (the full GGUF
is 98 MB):

    python3 scripts/gpu_truncate_gguf.py \
        ~/.cache/attnscope/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf gpu-inputs/smollm2-4l.gguf 4

With `--keep-ids FILE` (token ids, one per line: the ids of the input the model will see, e.g. the
`id` column of a bundle's tokens table), the rows of the token embedding and of the output matrix
of every other token are zeroed: the forward pass over that input is unchanged, and the file
compresses to little more than its layers (a 32k-token input of Qwen2.5-Coder-0.5B uses about 6k of
its 151,936 tokens).
"""
import sys

import gguf
import numpy as np

# Tensors with one row per vocabulary token.
VOCAB_TENSORS = ("token_embd.weight", "output.weight")


def truncate(src: str, dst: str, n_layers: int, keep_ids=None) -> None:
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
        data = t.data
        if keep_ids is not None and t.name in VOCAB_TENSORS:
            mask = np.ones(data.shape[0], dtype=bool)
            mask[[i for i in keep_ids if i < data.shape[0]]] = False
            data = np.array(data)
            data[mask] = 0
        writer.write_tensor_data(data, tensor_endianess=reader.endianess)
    writer.close()
    print(f"{dst}: {len(tensors)} tensors, {n_layers} layers")


if __name__ == "__main__":
    args = sys.argv[1:]
    keep = None
    if "--keep-ids" in args:
        at = args.index("--keep-ids")
        with open(args[at + 1]) as f:
            keep = sorted({int(line) for line in f if line.strip()})
        del args[at : at + 2]
    if len(args) != 3:
        sys.exit(__doc__)
    truncate(args[0], args[1], int(args[2]), keep)
