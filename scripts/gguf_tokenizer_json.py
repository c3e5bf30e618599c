#!/usr/bin/env python3
"""Write the tokenizer transformers rebuilds from a GGUF's metadata as a tokenizer.json.

For models whose official tokenizer.json is not in the package registries (Gemma 3 270M): the
file is the independent reference that datasets/tests/real_tokenizers.rs compares attnscope's
own rebuild with, on long real text (ATTNSCOPE_GEMMA3_TOKENIZER_JSON):

    python3 scripts/gguf_tokenizer_json.py ~/.cache/attnscope/models/gemma3-270m/gemma-3-270m-Q4_K_M.gguf \
        /tmp/gemma3-tokenizer.json

Needs transformers (5.x) and gguf. No hub access.
"""
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(src: str, dst: str) -> None:
    from transformers import AutoTokenizer

    gguf = Path(src).resolve()
    tmp = Path(tempfile.mkdtemp(prefix="gguf_tok_"))
    (tmp / gguf.name).symlink_to(gguf)
    tok = AutoTokenizer.from_pretrained(str(tmp), gguf_file=gguf.name, local_files_only=True)
    tok.backend_tokenizer.save(dst)
    print(f"wrote {dst}: {tok.backend_tokenizer.get_vocab_size()} ids")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
