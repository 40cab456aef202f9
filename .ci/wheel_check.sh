#!/usr/bin/env bash
# The wheel as a lab installs it: a fresh venv with only the pinned CPU torch and the repaired
# wheel from dist/ (core only, no extras), and the core tests run against that installed copy
# from a folder outside the checkout. `make wheel-check` builds dist/ first and calls this.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PY:-python3}"
# The tests that need nothing but the core dependencies (torch, NumPy, tqdm) and pytest: what the
# artefacts in dist/ carry, scoring on every CPU backend, the fused EGNN op and model, the
# strategies and the AL loop.
# (test_core_only.py is left out: it hides the extras of the dev venv, and asserts that there are
# some to hide.)
CORE_TESTS=(
    test_packaging.py
    test_extension_fallback.py
    test_acquisition.py
    test_acquisition_layouts.py
    test_topk_merge.py
    test_strategies.py
    test_egnn.py
    test_message_passing.py
    test_loop.py
)
# Tests in those files that need an extra but do not skip without it (node ids from the repo root).
DESELECT=(
    tests/test_acquisition.py::test_unknown_backend_and_unavailable_backend  # triton
    tests/test_strategies.py::test_center_of_mass_furthest_first_and_restricted_to_pool  # data (ase)
    tests/test_strategies.py::test_center_of_mass_by_z_differs_from_by_mass  # data (ase)
    "tests/test_loop.py::test_loop_invariants[center_of_mass]"  # data (ase)
    tests/test_strategies.py::test_umap_sorts_the_embedding_furthest_from_its_centre  # study (umap)
    tests/test_strategies.py::test_umap_is_deterministic_and_cached  # study (umap)
    tests/test_egnn.py::test_training_lowers_the_loss_on_mp20_sample  # data (ase, pandas)
)

shopt -s nullglob
wheels=("$ROOT"/dist/alkernels-*-manylinux*.whl)
if [ "${#wheels[@]}" -ne 1 ]; then
    echo "wheel_check: expected one manylinux wheel in $ROOT/dist (run make wheel), found ${#wheels[@]}" >&2
    exit 1
fi
WORK="$(mktemp -d "${TMPDIR:-/tmp}/alkernels-wheel-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
unset PYTHONPATH

"$PY" -m venv "$WORK/venv"
pip=("$WORK/venv/bin/python" -m pip install -q)
"${pip[@]}" "$(grep -E '^torch==' "$ROOT/requirements-dev.txt")"  # the CPU build, before the wheel
"${pip[@]}" "${wheels[0]}"
"${pip[@]}" "pytest>=8"
echo "wheel_check: $(basename "${wheels[0]}") installed in a fresh venv (${SECONDS}s)"

cd "$WORK"  # no checkout on sys.path: `import alkernels` can only find the installed copy
export ALKERNELS_DIST_CHECK=1  # tests/test_packaging.py checks the artefacts in dist/
tests=()
for name in "${CORE_TESTS[@]}"; do tests+=("$ROOT/tests/$name"); done
for node in "${DESELECT[@]}"; do tests+=(--deselect "$node"); done
"$WORK/venv/bin/python" - "${tests[@]}" <<'EOF'
"""Check that the installed wheel is what the tests import, then run them in this process."""

import sys
import sysconfig
from pathlib import Path

import alkernels
from alkernels.ops.dispatch import ext

site = Path(sysconfig.get_paths()["platlib"]).resolve()
where = Path(alkernels.__file__).resolve()
assert where.is_relative_to(site), f"alkernels imported from {where}, not from the venv's {site}"
assert ext() is not None, "the wheel's compiled extension alkernels._C does not load"
gomp = {line.split()[-1] for line in open("/proc/self/maps") if "libgomp" in line}
assert len(gomp) == 1, f"one OpenMP runtime, torch's, expected; loaded: {sorted(gomp)}"
print(f"alkernels {alkernels.__version__} from {where.parent}; extension loaded; OpenMP runtime {gomp.pop()}")

import pytest  # after the checks, so that nothing above could come from the checkout

sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
EOF
