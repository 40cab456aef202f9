"""The one-call GPU device check runs end to end as a dry run (CPU, Triton interpreter, toy sizes),
so that the script is known to work before GPU minutes are spent on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from alkernels.ops.dispatch import HAS_TRITON

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not HAS_TRITON, reason="needs the triton extra")
@pytest.mark.timeout(600)
def test_check_sh_dry_run(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu" / "check.sh"), "--dry-run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=580,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "| setuptools" in proc.stdout and "| pybind11" in proc.stdout  # the versions come first
    assert proc.stdout.index("== versions") < proc.stdout.index("== install") < proc.stdout.index("== benchmarks")
    assert proc.stdout.index("== benchmarks") < proc.stdout.index("== Triton tests")  # the payload first
    assert proc.stdout.count(", limit ") >= 4 and "install status: ok" in proc.stdout
    assert len(list(tmp_path.iterdir())) <= 8 and (tmp_path / "check.log").exists()
    for name in ("acquisition", "edge_op", "train_step"):
        doc = json.loads((tmp_path / f"gpu_{name}_dryrun.json").read_text())
        assert doc["benchmark"] == f"gpu_{name}" and doc["dry_run"] is True
        assert {"device", "versions", "sizes", "ceilings", "date", "rows"} <= set(doc)
        peers = {r["peer"]: r for r in doc["rows"]}
        assert all("median_s" in r for r in peers.values()), peers
    train = json.loads((tmp_path / "gpu_train_step_dryrun.json").read_text())
    assert all(r["grid_projection"]["runs"] == 72 for r in train["rows"])
    assert (tmp_path / "gpu_tests.log").exists()


def test_check_sh_refuses_to_write_into_the_tree_unless_asked() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu" / "check.sh")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "set OUT" in proc.stderr
