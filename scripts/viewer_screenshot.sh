#!/usr/bin/env bash
# Screenshots of the desktop viewer in a real window: starts Xvfb, opens each view of a run with
# the glow renderer (Mesa's software GL), captures the screen with ImageMagick's
# `import -window root`, and checks that every picture is non-trivial (many colours).
#
#   scripts/viewer_screenshot.sh [RUN_DIR] [OUT_DIR]
#
# RUN_DIR defaults to the committed fixture (viewer/tests/fixtures/run), OUT_DIR to docs/; the
# files are OUT_DIR/viewer-<view>.png. Needs: apt-get install xvfb imagemagick (and Mesa's
# libgl1-mesa-dri, present with xvfb). The viewer binary is $ATTNSCOPE_VIEWER, else the newer of
# target/release/attnscope-viewer and target/debug/attnscope-viewer (built with
# `cargo build --workspace` when neither exists). WAIT (seconds, default 6) is how long each view
# gets to open and settle.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN=${1:-viewer/tests/fixtures/run}
OUT=${2:-docs}
WAIT=${WAIT:-6}
BIN=${ATTNSCOPE_VIEWER:-}
if [ -z "$BIN" ]; then
  for b in target/release/attnscope-viewer target/debug/attnscope-viewer; do
    if [ -x "$b" ] && { [ -z "$BIN" ] || [ "$b" -nt "$BIN" ]; }; then BIN=$b; fi
  done
fi
if [ -z "$BIN" ]; then
  cargo build --workspace
  BIN=target/debug/attnscope-viewer
fi
for tool in Xvfb import; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install xvfb imagemagick" >&2; exit 1; }
done
mkdir -p "$OUT"

DISPLAY_NUM=${DISPLAY_NUM:-77}
Xvfb ":$DISPLAY_NUM" -screen 0 1400x900x24 -nolisten tcp >/dev/null 2>&1 &
XVFB_PID=$!
trap 'kill "$XVFB_PID" 2>/dev/null || true' EXIT
for _ in $(seq 50); do [ -e "/tmp/.X11-unix/X$DISPLAY_NUM" ] && break; sleep 0.1; done

shot() { # NAME VIEWER_ARGS...
  local name=$1; shift
  DISPLAY=":$DISPLAY_NUM" LIBGL_ALWAYS_SOFTWARE=1 "$BIN" "$RUN" --size 1400x900 "$@" >/dev/null 2>&1 &
  local pid=$!
  sleep "$WAIT"
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "the viewer exited early for $name" >&2
    exit 1
  fi
  import -display ":$DISPLAY_NUM" -window root "$OUT/viewer-$name.png"
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local colours
  colours=$(identify -format %k "$OUT/viewer-$name.png")
  echo "$OUT/viewer-$name.png: $colours colours"
  if [ "$colours" -lt 64 ]; then
    echo "$OUT/viewer-$name.png looks blank ($colours colours)" >&2
    exit 1
  fi
}

shot overview --view overview --method-a phsa --budget 1
shot head-map --view head-map --layer 10 --head 4 --method-a phsa --method-b quest --budget 1 --query-block 20
shot tokens --view tokens --layer 2 --head 1 --query-block 25
shot methods --view methods --budget 1
shot frequencies --view frequencies --layer 10 --head 2
shot live --view live
shot overview-light --view overview --theme light --method-a phsa --budget 1
