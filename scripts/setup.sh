#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a first result:
#   installs what is missing (apt), builds Release into build/, generates a synthetic model and runs
#   run_lab_harness --config scenarios/quickstart.yaml, printing a summary.
# Idempotent: a second run installs nothing, rebuilds only what changed, reuses the cached model.
#   scripts/setup.sh            deps + build + quickstart
#   scripts/setup.sh --deps     only install missing packages
#   scripts/setup.sh --build    deps + build, no quickstart
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(build-essential cmake ninja-build pkg-config git
          libyaml-cpp-dev nlohmann-json3-dev libhwloc-dev liburing-dev libcli11-dev libssl-dev libcpp-httplib-dev
          libgtest-dev libgmock-dev libbenchmark-dev libicu-dev fio clang libclang-rt-14-dev
          python3 python3-numpy python3-scipy python3-matplotlib python3-yaml python3-pytest python3-jsonschema
          slurm-wlm munge  # scripts/slurm/; slurmd/slurmctld stay off without /etc/slurm/slurm.conf
          libopenmpi-dev openmpi-bin)  # --pipeline (optional: FLEA_MPI is off without an MPI)

install_deps() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    echo "setup: all ${#PACKAGES[@]} packages present"
    return
  fi
  echo "setup: installing ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# The official openai npm client the flea serve tests drive (tests/serve/client, pinned by its
# package-lock.json); skipped with a note when Node/npm are absent (those tests then skip too).
install_node_client() {
  local dir=tests/serve/client
  if ! command -v npm >/dev/null; then
    echo "setup: npm not found: the openai-client test of flea serve will skip"
    return
  fi
  if [ -d "$dir/node_modules/openai" ] && [ "$dir/node_modules/.package-lock.json" -nt "$dir/package-lock.json" ]; then
    return
  fi
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) ||
    echo "setup: npm ci in $dir failed: the openai-client test of flea serve will skip"
}

BUILD_DIR=${FLEA_BUILD_DIR:-build}

build() {
  local gen=()
  command -v ninja >/dev/null && gen=(-G Ninja)
  if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
    cmake -S . -B "$BUILD_DIR" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release ${FLEA_CMAKE_ARGS:-}
  fi
  cmake --build "$BUILD_DIR" -j "$(nproc)"
}

case "${1:-}" in
  --deps) install_deps; install_node_client; exit 0 ;;
  --build) install_deps; install_node_client; build; exit 0 ;;
  ""|--quickstart) ;;
  -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
  *) echo "setup.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
esac

install_deps
install_node_client
build
mkdir -p results/runs
"$BUILD_DIR/bin/run_lab_harness" --config scenarios/quickstart.yaml --out results/runs
