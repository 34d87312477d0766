#!/usr/bin/env bash
# Builds llama.cpp's CPU llama-bench (and llama-batched-bench beside it: tg at a context depth, which
# llama-bench at this commit cannot measure) at a pinned commit, outside this repository, as the baseline
# and oracle the lab measures against. Nothing of llama.cpp is committed here.
#   scripts/build_baselines.sh [SRC]
# SRC: a git URL, a local checkout or a bare mirror (default: GitHub). The build goes to
# ${FLEA_BASELINE_DIR:-$HOME/.cache/flea-baselines}/llama.cpp-<commit>/ and the script prints the
# path of llama-bench last. Idempotent: an existing build is reused.
# LLAMA_CPP_AMX=off: build without AMX (keeping AVX-512) and without runtime weight repacking
# (GGML_CPU_REPACK, GGML_CPU_AARCH64 in older trees) into llama.cpp-<commit>-noamx/. On an AMX CPU
# the native build copies every AMX-capable weight (Q4_0/Q4_1/Q8_0/Q4_K/Q5_K/Q6_K/IQ4_XS) into its
# own memory instead of using the mmap'd file, and repacking does the same for the types it
# interleaves (Q4_0, IQ4_NL; in 2026 trees also Q4_K, Q2_K, Q8_0), so a model larger than RAM cannot
# load; this build keeps llama.cpp on its mmap path (what the larger-than-RAM scenarios compare with).
set -euo pipefail
COMMIT=${LLAMA_CPP_COMMIT:-c392e5094deaf2d1a7c18683214f007fad3fe42b}  # the reference data's commit (b4747+1)
SRC=${1:-https://github.com/ggerganov/llama.cpp}
case "$SRC" in -h|--help) sed -n '2,/^set -euo/{/^#/p}' "$0"; exit 0 ;; esac
BASE=${FLEA_BASELINE_DIR:-$HOME/.cache/flea-baselines}
AMX=${LLAMA_CPP_AMX:-on}
NOREPACK=()
case "$AMX" in on) SUFFIX= ; FLAGS= ;;
  off) SUFFIX=-noamx; FLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
       NOREPACK=(-DGGML_CPU_REPACK=OFF -DGGML_CPU_AARCH64=OFF -Wno-dev) ;;
  *) echo "build_baselines.sh: LLAMA_CPP_AMX must be on or off, got '$AMX'" >&2; exit 2 ;; esac
DIR="$BASE/llama.cpp-${COMMIT:0:12}$SUFFIX"
BIN="$DIR/build/bin/llama-bench"
if [ -x "$BIN" ] && [ -x "$DIR/build/bin/llama-batched-bench" ]; then echo "$BIN"; exit 0; fi
mkdir -p "$BASE"
if [ ! -d "$DIR/.git" ]; then
  rm -rf "$DIR"
  git clone -q --no-checkout "$SRC" "$DIR"
fi
git -C "$DIR" checkout -q "$COMMIT"
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
cmake -S "$DIR" -B "$DIR/build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=OFF -DGGML_NATIVE=ON \
      -DCMAKE_C_FLAGS="$FLAGS" -DCMAKE_CXX_FLAGS="$FLAGS" "${NOREPACK[@]}" \
      -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF >&2
targets=(llama-bench llama-batched-bench)
# llama-cli, where the snapshot still has it (newer llama.cpp renamed its tools).
cmake --build "$DIR/build" --target help 2>/dev/null | grep -q '^llama-cli[: ]' && targets+=(llama-cli)
cmake --build "$DIR/build" --target "${targets[@]}" -j "$(nproc)" >&2
echo "$BIN"
