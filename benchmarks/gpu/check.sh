#!/usr/bin/env bash
# The one-call GPU device check: on a machine with one CUDA GPU and the device image (torch,
# numpy, triton, pytest, torch-geometric; no ase/spglib/vesin/pyxtal/umap), from the repository
# root, bounded to 8 minutes in all (each step has its own time limit within that):
#
#   1. versions: python, setuptools, pybind11, torch, triton, the GPU;
#   2. install: pip install --no-index --no-deps --no-build-isolation -e . (which builds the C++
#      extension once); with a setuptools older than the 77 that pyproject.toml declares, the
#      extension is compiled directly with the C++ compiler instead. The install status is
#      reported apart from the GPU verdict: a missing alkernels._C only means the CPU backend
#      is untested here;
#   3. benchmarks (the payload, first): acquisition, EGNN edge op and whole training step at the
#      paper's sizes against torch eager / torch.compile / PyG, one JSON each;
#   4. Triton tests on CUDA (edge op, acquisition, train step, registered-op checks).
#
#   OUT=/some/dir bash benchmarks/gpu/check.sh     # on the GPU machine ($OUT comes back)
#   bash benchmarks/gpu/check.sh --into-tree        # write into benchmarks/results/ instead
#   bash benchmarks/gpu/check.sh --dry-run          # anywhere: TRITON_INTERPRET=1, toy sizes, CPU
#
# Results go to $OUT only (at most 8 files: three benchmark JSONs, the test log, check.log);
# without $OUT the script refuses, unless --into-tree asks for benchmarks/results/. The dry run
# executes the same steps on a CPU with the Triton interpreter and toy sizes (a subset of the
# tests, no reinstall, the extension built only if missing), writing *_dryrun.json to $OUT or a
# temporary folder; CI runs it (tests/test_gpu_check.py) so that the script is known to work
# before scarce GPU minutes are spent on it. Exit status: 0 when the GPU steps passed (the
# install status does not count), 1 when one failed or ran out of time, 2 on a usage error.
set -uo pipefail
cd "$(dirname "$0")/../.."

DRY=0
INTO_TREE=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    --into-tree) INTO_TREE=1 ;;
    *) echo "usage: $0 [--dry-run] [--into-tree]" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
if [[ -n "${OUT:-}" ]]; then
  RESULTS=$OUT
elif [[ $INTO_TREE == 1 ]]; then
  RESULTS=benchmarks/results
elif [[ $DRY == 1 ]]; then
  RESULTS=$(mktemp -d)
else
  echo "check.sh: set OUT to the folder that comes back from the device (or pass --into-tree)" >&2
  exit 2
fi
if [[ $DRY == 1 ]]; then
  export TRITON_INTERPRET=1
  TESTS=(tests/test_acquisition.py::test_single_pass_identities
         tests/test_message_passing_triton.py::test_triton_is_deterministic
         tests/test_step.py)
  BENCH_FLAGS=(--tiny)
else
  unset TRITON_INTERPRET
  TESTS=(tests/test_message_passing_triton.py tests/test_acquisition.py tests/test_step.py
         tests/test_custom_ops.py tests/test_autocast.py)
  BENCH_FLAGS=()
fi
mkdir -p "$RESULTS"
LOG="$RESULTS/check.log"
: > "$LOG"
exec > >(tee -a "$LOG") 2>&1
# Time limits (seconds) per step; the whole check stops at DEADLINE whatever the steps say.
LIMIT_TOTAL=480
LIMIT_VERSIONS=60
LIMIT_INSTALL=150
LIMIT_BENCH=200
LIMIT_TESTS=200
DEADLINE=$((SECONDS + LIMIT_TOTAL))
GPU_STATUS=0
INSTALL_STATUS="ok"
step() { printf '\n== %s (at %ss, limit %ss)\n' "$1" "$SECONDS" "$2"; }
# run LIMIT CMD...: CMD under `timeout`, never past the deadline; returns CMD's status (124: timed out)
run() {
  local limit=$1 left=$((DEADLINE - SECONDS))
  shift
  (( left < limit )) && limit=$left
  if (( limit <= 0 )); then echo "(skipped: the ${LIMIT_TOTAL} s budget is spent)"; return 124; fi
  timeout --kill-after=10 "$limit" "$@"
}

step "versions" "$LIMIT_VERSIONS"
run "$LIMIT_VERSIONS" "$PY" - <<'EOF' || GPU_STATUS=1
import platform
from importlib import metadata
import torch
def version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "missing"
print("python", platform.python_version(), "| setuptools", version("setuptools"), "| pybind11", version("pybind11"),
      "| torch", torch.__version__, "(cuda", torch.version.cuda, ") | triton", version("triton"))
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", p.name, f"sm_{p.major}{p.minor}", p.multi_processor_count, "SMs")
else:
    print("no GPU")
EOF

step "install (light core) and build the C++ extension once" "$LIMIT_INSTALL"
SETUPTOOLS_OK=$("$PY" -c "
from importlib import metadata
try:
    print(int(int(metadata.version('setuptools').split('.')[0]) >= 77))
except Exception:
    print(0)")
if [[ $DRY == 1 ]]; then
  echo "(dry run: the package is imported from the checkout, not reinstalled)"
  if ! "$PY" -c "import alkernels._C" 2>/dev/null; then
    run "$LIMIT_INSTALL" "$PY" setup.py -q build_ext --inplace || INSTALL_STATUS="warning: build_ext failed"
  fi
elif [[ $SETUPTOOLS_OK == 1 ]]; then
  run "$LIMIT_INSTALL" "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . \
    || INSTALL_STATUS="warning: pip install failed"
else
  echo "setuptools is older than 77, the minimum pyproject.toml declares (PEP 639 license metadata):"
  echo "not installing; compiling alkernels._C with the C++ compiler directly, importing from the checkout"
  SUFFIX=$("$PY" -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
  INCLUDES=$("$PY" -m pybind11 --includes 2>/dev/null) || INCLUDES=""
  if [[ -z "$INCLUDES" ]]; then
    INSTALL_STATUS="warning: pybind11 is missing, alkernels._C not built"
  else
    BUILD=$(mktemp -d)
    for src in python/*.cpp csrc/*/*.cpp; do
      obj="$BUILD/$(echo "$src" | tr / _).o"
      ${CXX:-c++} -O3 -fPIC -std=c++17 -fopenmp -fno-math-errno -Wno-psabi -Icsrc $INCLUDES -c "$src" -o "$obj" &
    done
    wait
    run "$LIMIT_INSTALL" ${CXX:-c++} -shared -fopenmp "$BUILD"/*.o -o "alkernels/_C$SUFFIX" \
      || INSTALL_STATUS="warning: compiling alkernels._C failed"
  fi
fi
if ! "$PY" -c "import alkernels._C; print('alkernels._C built')"; then
  [[ $INSTALL_STATUS == ok ]] && INSTALL_STATUS="warning: alkernels._C does not import"
fi
echo "install status: $INSTALL_STATUS (the CPU backend's tests skip without alkernels._C; not a GPU failure)"

step "benchmarks" "$LIMIT_BENCH"
run "$LIMIT_BENCH" "$PY" benchmarks/gpu/bench.py all --out "$RESULTS" "${BENCH_FLAGS[@]}" || GPU_STATUS=1

step "Triton tests on $([[ $DRY == 1 ]] && echo 'the interpreter (subset)' || echo CUDA)" "$LIMIT_TESTS"
run "$LIMIT_TESTS" "$PY" -m pytest -q -p no:cacheprovider -o addopts="" "${TESTS[@]}" > "$RESULTS/gpu_tests.log" 2>&1
TEST_STATUS=$?
tail -15 "$RESULTS/gpu_tests.log"
[[ $TEST_STATUS == 0 ]] || GPU_STATUS=1

step "done: GPU status $GPU_STATUS, install status: $INSTALL_STATUS, results in $RESULTS" 0
ls "$RESULTS"
exit $GPU_STATUS
