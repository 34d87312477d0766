#!/usr/bin/env bash
# Builds the engine and tests with sanitizers in their own build dir and runs the unit tests.
#   scripts/sanitize.sh [address,undefined|thread] [extra ctest args]
# Default: address,undefined into build-asan/; thread goes to build-tsan/. CUDA and benchmarks are
# off (sanitizers instrument host code; the GPU tests would skip anyway).
set -euo pipefail
cd "$(dirname "$0")/.."
san=${1:-address,undefined}
case "$san" in -h|--help) sed -n '2,5p' "$0"; exit 0 ;; esac
shift || true
case "$san" in
  address,undefined|address|undefined) dir=build-asan ;;
  thread) dir=build-tsan ;;
  *) echo "sanitize.sh: unknown sanitizer '$san' (address,undefined or thread)" >&2; exit 2 ;;
esac
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
if [ ! -f "$dir/CMakeCache.txt" ]; then
  cmake -S . -B "$dir" "${gen[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFLEA_SANITIZE="$san" \
        -DFLEA_CUDA=OFF -DFLEA_BUILD_BENCH=OFF >/dev/null
fi
cmake --build "$dir" -j "$(nproc)"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}
(cd "$dir" && ctest --output-on-failure -j "$(nproc)" -L unit --timeout 900 "$@")
