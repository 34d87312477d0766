#!/usr/bin/env bash
# Builds the engine and the fast unit tests with sanitizers in their own build dir and runs them.
#   scripts/sanitize.sh [address,undefined|thread] [--all]
# Default: address,undefined into build-asan/; thread goes to build-tsan/. Without --all only the
# fast subset below is built and run (what CI does); --all builds every test and runs `ctest -L unit`.
# CUDA and benchmarks are off (sanitizers instrument host code; GPU tests would skip anyway).
set -euo pipefail
cd "$(dirname "$0")/.."
san=${1:-address,undefined}
case "$san" in -h|--help) sed -n '2,6p' "$0"; exit 0 ;; esac
all=${2:-}
case "$san" in
  address,undefined|address|undefined) dir=build-asan ;;
  thread) dir=build-tsan ;;
  *) echo "sanitize.sh: unknown sanitizer '$san' (address,undefined or thread)" >&2; exit 2 ;;
esac
# Parsers, kernels, I/O and streaming, the forward pass against llama.cpp, decoding, the scenario loader.
FAST=(gguf_test quant_test quant_q32_test quant_lowk_test matmul_test tokenizer_test tokenizer_bpe_test sampling_test
      io_backend_test io_faulty_test
      aligned_buffer_test residency_planner_test residency_streamer_test residency_expert_test llama_reference_test
      llama_transient_test llama_chunked_kv_test
      decode_test harness_scenario_test serve_openai_test serve_scheduler_test)
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
if [ ! -f "$dir/CMakeCache.txt" ]; then
  # -O1 -g1: sanitizer builds are for finding bugs, not for speed; this halves their compile time.
  cmake -S . -B "$dir" "${gen[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" \
        -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g1" -DFLEA_SANITIZE="$san" -DFLEA_CUDA=OFF -DFLEA_BUILD_BENCH=OFF >/dev/null
fi
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}
if [ "$all" = "--all" ]; then
  cmake --build "$dir" -j "$(nproc)"
  (cd "$dir" && ctest --output-on-failure -j "$(nproc)" -L unit --timeout 900)
  exit 0
fi
cmake --build "$dir" -j "$(nproc)" --target "${FAST[@]}"
failed=0
for t in "${FAST[@]}"; do
  if (cd "$dir/tests" && "../bin/$t" --gtest_brief=1 > "../$t.log" 2>&1); then
    echo "sanitize: $t passed ($(grep -Eo '[0-9]+ tests? from [0-9]+ test suites? ran' "$dir/$t.log" | head -1))"
  else
    echo "sanitize: $t FAILED"; tail -40 "$dir/$t.log"; failed=1
  fi
done
exit $failed
