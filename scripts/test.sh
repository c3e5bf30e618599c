#!/usr/bin/env bash
# The test command: the Rust tests, then the Python package's tests (python/tests) against the
# extension module built from this checkout. Arguments go to pytest (e.g. -k rules).
#
# `cargo test --workspace` also links the extension module (python/, a cdylib: its
# tests/extension.rs checks it), from the same artifacts as the Rust tests; it is put beside the
# package's Python files under TARGET/python, which pytest imports. Nothing is compiled a second
# time and nothing is installed. `pip install .` builds the same crate into a wheel with maturin.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace

target=$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
pkg="$target/python/attnscope"
rm -rf "$pkg"
mkdir -p "$pkg"
cp python/attnscope/*.py "$pkg/"
cp "$target/debug/deps/lib_native.so" "$pkg/_native.abi3.so"

missing=$(python3 -c 'import importlib.util as u
print(" ".join(m for m in ["pytest", "numpy", "pyarrow", "pandas", "matplotlib"] if u.find_spec(m) is None))')
if [ -n "$missing" ]; then
  echo "error: the Python tests need: $missing (python3 -m pip install $missing)" >&2
  exit 1
fi
PYTHONPATH="$target/python${PYTHONPATH:+:$PYTHONPATH}" python3 -m pytest python/tests -q "$@"
