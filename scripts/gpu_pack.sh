#!/usr/bin/env bash
# Prepares the inputs of scripts/gpu_check.sh on the build machine: builds the release `attnscope`
# binary and the GPU test binaries, packs them with xz, and writes a 4-layer SmolLM2 GGUF and
# alice29.txt beside them. Copy the folder to the CUDA host (into the repository checkout there)
# and run scripts/gpu_check.sh.
#
#   scripts/gpu_pack.sh [--full-model] [DIR]
#
# DIR: the inputs folder, default $ATTNSCOPE_GPU_DIR, else gpu-inputs/ (ignored by git).
# --full-model: also copy the whole SmolLM2 GGUF (98 MB) and plrabn12.txt, so that gpu_check.sh
#   runs the CPU simulator benchmark (scripts/simulate_bench.sh) on the CUDA host's cores too.
#
# Writes into DIR:
#   bins.tar.xz        attnscope, gpu_kernels, gpu_sparse, gpu_forward, gpu_sim, gpu_block_methods
#   smollm2-4l.gguf    the first 4 layers of SmolLM2-135M-Instruct Q4_1 (scripts/gpu_truncate_gguf.py)
#   alice29.txt        the text of the real-model checks
#   SmolLM2-135M-Instruct.Q4_1.gguf, plrabn12.txt   (--full-model only)
#   inputs.txt         commit, date, and the sha256 of every file above
#
# Needs: cargo, python3 with the `gguf` package (pip install gguf), xz. The model and the corpus
# come from the attnscope cache ($ATTNSCOPE_HOME, default ~/.cache/attnscope) and are fetched with
# `attnscope fetch` when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

FULL=0
DIR=${ATTNSCOPE_GPU_DIR:-gpu-inputs}
for arg in "$@"; do
    case $arg in
        --full-model) FULL=1 ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        -*) echo "gpu_pack.sh: unknown option $arg" >&2; exit 2 ;;
        *) DIR=$arg ;;
    esac
done
TESTS=(gpu_kernels gpu_sparse gpu_forward gpu_sim gpu_block_methods)
HOME_DIR=${ATTNSCOPE_HOME:-$HOME/.cache/attnscope}
MODEL=$HOME_DIR/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf
CORPUS=$HOME_DIR/corpora/canterbury

python3 -c "import gguf" 2>/dev/null || {
    echo "gpu_pack.sh: python3 cannot import gguf (pip install gguf)" >&2; exit 1; }
command -v xz >/dev/null || { echo "gpu_pack.sh: xz is missing" >&2; exit 1; }
mkdir -p "$DIR"

echo "== cargo build --release --bin attnscope, and the Python extension module"
cargo build --release --bin attnscope
cargo build --release -p attnscope-python
BIN=target/release/attnscope

# The test binaries: their paths come from cargo's JSON messages (the file names end in a hash).
echo "== cargo test --release --no-run (${TESTS[*]})"
LIST=$(mktemp)
STAGE=$(mktemp -d)
trap 'rm -rf "$LIST" "$STAGE"' EXIT
test_args=()
for t in "${TESTS[@]}"; do test_args+=(--test "$t"); done
cargo test --release --workspace --no-run "${test_args[@]}" --message-format=json-render-diagnostics \
    | python3 -c '
import json, sys
want = set(sys.argv[1:])
found = {}
for line in sys.stdin:
    if not line.startswith("{"):
        continue
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    t = m["target"]
    if "test" in t["kind"] and t["name"] in want:
        found[t["name"]] = m["executable"]
missing = want - set(found)
if missing:
    sys.exit("no test binary for " + ", ".join(sorted(missing)))
for name, exe in sorted(found.items()):
    print(name, exe)
' "${TESTS[@]}" > "$LIST"

cp "$BIN" "$STAGE/attnscope"
cp target/release/lib_native.so "$STAGE/_native.abi3.so"
while read -r name exe; do
    cp "$exe" "$STAGE/$name"
done < "$LIST"
if command -v strip >/dev/null; then
    strip --strip-all "$STAGE"/*
fi
echo "== $DIR/bins.tar.xz"
XZ_OPT=-9e tar -C "$STAGE" -cJf "$DIR/bins.tar.xz" attnscope _native.abi3.so "${TESTS[@]}"

echo "== model and text"
[ -f "$MODEL" ] || "$BIN" fetch smollm2-135m
if [ ! -f "$CORPUS/alice29.txt" ] || [ ! -f "$CORPUS/plrabn12.txt" ]; then
    "$BIN" fetch canterbury
fi
python3 scripts/gpu_truncate_gguf.py "$MODEL" "$DIR/smollm2-4l.gguf" 4
cp "$CORPUS/alice29.txt" "$DIR/alice29.txt"
if [ "$FULL" = 1 ]; then
    cp "$MODEL" "$DIR/SmolLM2-135M-Instruct.Q4_1.gguf"
    cp "$CORPUS/plrabn12.txt" "$DIR/plrabn12.txt"
fi

{
    commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
        commit="$commit (with uncommitted changes)"
    fi
    echo "commit $commit"
    echo "date $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "built on $(uname -m), $(rustc --version 2>/dev/null || echo 'rustc unknown')"
    files=(bins.tar.xz smollm2-4l.gguf alice29.txt)
    [ "$FULL" = 1 ] && files+=(SmolLM2-135M-Instruct.Q4_1.gguf plrabn12.txt)
    (cd "$DIR" && sha256sum -- "${files[@]}")
} > "$DIR/inputs.txt"
cat "$DIR/inputs.txt"
du -sh "$DIR"
echo "next, on the CUDA host (repository root): ATTNSCOPE_GPU_DIR=$DIR scripts/gpu_check.sh"
