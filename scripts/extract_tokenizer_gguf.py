#!/usr/bin/env python3
"""Copy the tokenizer of a GGUF model into a small GGUF with no tensors.

Keeps `general.architecture` and every `tokenizer.*` key, so the fixture can be read by the same
GGUF reader as a real model and rebuilt with `Tokenizer::from_gguf`.

    python3 scripts/extract_tokenizer_gguf.py MODEL.gguf core/tests/fixtures/tokenizer/NAME.tokenizer.gguf

Needs the `gguf` package (pip install gguf).
"""
import sys

from gguf import GGUFReader, GGUFValueType, GGUFWriter


def main(src: str, dst: str) -> None:
    reader = GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = GGUFWriter(dst, arch)  # writes general.architecture itself
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), vtype, sub_type=sub)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
