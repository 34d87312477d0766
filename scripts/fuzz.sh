#!/usr/bin/env bash
# Runs one libFuzzer target for a time budget on its committed seed corpus.
#   scripts/fuzz.sh TARGET SECONDS     TARGET: gguf | tokenizer | tokenizer_bpe | scenario (every tests/fuzz/fuzz_*.cpp)
# Builds build-fuzz/ with clang, ASan and UBSan first (incremental). New inputs go to
# build-fuzz/corpus/TARGET (the committed seeds in tests/fuzz/corpus/TARGET are never modified);
# crashes are written to build-fuzz/crashes/TARGET/. Exit status is libFuzzer's: non-zero on a crash.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then sed -n '2,7p' "$0"; exit 2; fi
target=$1; seconds=$2
[ -f "tests/fuzz/fuzz_${target}.cpp" ] || { echo "fuzz.sh: unknown target '$target' (have: $(ls tests/fuzz/fuzz_*.cpp | sed 's|.*/fuzz_||; s|\.cpp||' | tr '\n' ' '))" >&2; exit 2; }
command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ not found (apt-get install clang)" >&2; exit 2; }
if [ ! -f build-fuzz/CMakeCache.txt ]; then
  cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
        -DCMAKE_CXX_COMPILER=clang++ -DFLEA_FUZZ=ON -DFLEA_SANITIZE=address,undefined -DFLEA_CUDA=OFF \
        -DFLEA_BUILD_TESTS=OFF -DFLEA_BUILD_BENCH=OFF >/dev/null
fi
cmake --build build-fuzz --target "fuzz_${target}" -j "$(nproc)"
mkdir -p "build-fuzz/corpus/$target" "build-fuzz/crashes/$target"
dict=()
[ -f "tests/fuzz/${target}.dict" ] && dict=(-dict="tests/fuzz/${target}.dict")
exec "build-fuzz/bin/fuzz_${target}" "build-fuzz/corpus/$target" "tests/fuzz/corpus/$target" "${dict[@]}" \
     -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=1024 -print_final_stats=1 \
     -artifact_prefix="build-fuzz/crashes/$target/"
