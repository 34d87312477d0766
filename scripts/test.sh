#!/usr/bin/env bash
# The whole test suite: installs missing packages, builds (Release, build/), runs the C++ tests
# (ctest: GoogleTest) and the report/, bench/ and tests/serve/ tests (pytest under /usr/bin/python3;
# tests/serve/ runs `flea serve` end to end with curl, a stdlib client and the openai npm package).
#   scripts/test.sh                 everything (tests that need a GPU, io_uring or fio skip with a reason)
#   scripts/test.sh -L unit         only ctest tests with that label (extra args go to ctest)
# Idempotent and incremental: nothing is rebuilt when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --build
BUILD_DIR=${FLEA_BUILD_DIR:-build}

echo "== ctest"
(cd "$BUILD_DIR" && ctest --output-on-failure -j "$(nproc)" --timeout 900 "$@")

echo "== pytest report/ bench/ tests/serve/"
/usr/bin/python3 -m pytest -q -p no:cacheprovider report/tests bench/tests tests/serve
echo "== all tests passed"
