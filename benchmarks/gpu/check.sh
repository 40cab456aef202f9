#!/usr/bin/env bash
# The one-call GPU device check (issue 11): on a machine with one CUDA GPU and the device image
# (torch, numpy, triton, pytest, torch-geometric; no ase/spglib/vesin/pyxtal/umap), from the
# repository root, in under 8 minutes on an H100/H200:
#
#   1. installs alkernels (light core, no dependencies fetched) and builds the C++ extension;
#   2. runs every Triton test on CUDA at full sizes against the torch reference;
#   3. runs the acquisition, EGNN edge-op and whole-training-step benchmarks at the paper's sizes
#      against torch eager / torch.compile / PyG, with the device's measured copy bandwidth and
#      matmul rates as ceilings, writing one JSON per benchmark to $OUT if set, else to
#      benchmarks/results/.
#
#   bash benchmarks/gpu/check.sh             # on the GPU machine
#   bash benchmarks/gpu/check.sh --dry-run   # anywhere: TRITON_INTERPRET=1, toy sizes, CPU
#
# The dry run executes the same steps on a CPU with the Triton interpreter and toy sizes (a
# subset of the tests, no reinstall, the extension built only if missing), writing *_dryrun.json
# to $OUT or a temporary folder; CI runs it (tests/test_gpu_check.py) so that the script is known
# to work before scarce GPU minutes are spent on it. Exit status: 0 when every step passed.
set -uo pipefail
cd "$(dirname "$0")/../.."

DRY=0
case "${1:-}" in
  --dry-run) DRY=1 ;;
  "") ;;
  *) echo "usage: $0 [--dry-run]" >&2; exit 2 ;;
esac
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
if [[ $DRY == 1 ]]; then
  export TRITON_INTERPRET=1
  RESULTS=${OUT:-$(mktemp -d)}
  TESTS=(tests/test_acquisition.py::test_single_pass_identities
         tests/test_message_passing_triton.py::test_triton_is_deterministic
         tests/test_step.py)
  BENCH_FLAGS=(--tiny)
else
  unset TRITON_INTERPRET
  RESULTS=${OUT:-benchmarks/results}
  TESTS=(tests/test_acquisition.py tests/test_message_passing_triton.py tests/test_step.py)
  BENCH_FLAGS=()
fi
mkdir -p "$RESULTS"
STATUS=0
START=$SECONDS
step() { printf '\n== %s (%ss)\n' "$1" $((SECONDS - START)); }

step "environment"
$PY - <<'EOF' || STATUS=1
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
try:
    import triton
    print("triton", triton.__version__)
except ImportError:
    print("triton missing")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", p.name, f"sm_{p.major}{p.minor}", p.multi_processor_count, "SMs")
else:
    print("no GPU")
EOF

step "install (light core) and build the C++ extension"
if [[ $DRY == 1 ]]; then
  $PY -c "import alkernels" || STATUS=1
  if ! $PY -c "import alkernels._C" 2>/dev/null; then
    $PY setup.py -q build_ext --inplace || STATUS=1
  fi
  echo "(dry run: the package is imported from the checkout, not reinstalled)"
else
  $PY -m pip install -q --no-deps --no-build-isolation -e . || STATUS=1
  $PY setup.py -q build_ext --inplace || STATUS=1
fi
$PY -c "import alkernels._C; print('alkernels._C built')" || STATUS=1

step "Triton tests on $([[ $DRY == 1 ]] && echo 'the interpreter (subset)' || echo CUDA)"
$PY -m pytest -q -p no:cacheprovider -o addopts="" "${TESTS[@]}" 2>&1 | tee "$RESULTS/gpu_tests.log" | tail -15
[[ ${PIPESTATUS[0]} == 0 ]] || STATUS=1

step "benchmarks"
$PY benchmarks/gpu/bench.py all --out "$RESULTS" "${BENCH_FLAGS[@]}" || STATUS=1

step "done: status $STATUS, results in $RESULTS"
ls "$RESULTS"
exit $STATUS
