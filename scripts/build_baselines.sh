#!/usr/bin/env bash
# Builds llama.cpp's CPU llama-bench at a pinned commit, outside this repository, as the baseline
# and oracle the lab measures against. Nothing of llama.cpp is committed here.
#   scripts/build_baselines.sh [SRC]
# SRC: a git URL, a local checkout or a bare mirror (default: GitHub). The build goes to
# ${FLEA_BASELINE_DIR:-$HOME/.cache/flea-baselines}/llama.cpp-<commit>/ and the script prints the
# path of llama-bench last. Idempotent: an existing build is reused.
set -euo pipefail
COMMIT=${LLAMA_CPP_COMMIT:-c392e5094deaf2d1a7c18683214f007fad3fe42b}  # the reference data's commit (b4747+1)
SRC=${1:-https://github.com/ggerganov/llama.cpp}
case "$SRC" in -h|--help) sed -n '2,8p' "$0"; exit 0 ;; esac
BASE=${FLEA_BASELINE_DIR:-$HOME/.cache/flea-baselines}
DIR="$BASE/llama.cpp-${COMMIT:0:12}"
BIN="$DIR/build/bin/llama-bench"
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
mkdir -p "$BASE"
if [ ! -d "$DIR/.git" ]; then
  rm -rf "$DIR"
  git clone -q --no-checkout "$SRC" "$DIR"
fi
git -C "$DIR" checkout -q "$COMMIT"
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
cmake -S "$DIR" -B "$DIR/build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=OFF -DGGML_NATIVE=ON \
      -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF >&2
cmake --build "$DIR/build" --target llama-bench llama-cli -j "$(nproc)" >&2
echo "$BIN"
