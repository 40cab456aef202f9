"""Ahead-of-time compilation of every Triton configuration for sm_80 and sm_90 (no GPU needed).

The compile runs in a subprocess without ``TRITON_INTERPRET`` (the interpreter replaces the
kernels by Python functions) and uses the cubin cache of ``alkernels.ops.aot``, so a re-run after
an unrelated change takes seconds; a cold run compiles about 100 kernels in two processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from alkernels.ops.arch import ARCH_LIMITS, check_arch, occupancy
from alkernels.ops.dispatch import HAS_TRITON

ROOT = Path(__file__).resolve().parents[1]


def test_arch_check_refuses_missing_features() -> None:
    for feature in ("bf16", "tf32"):
        check_arch((feature,), 80, "op")
        check_arch((feature,), 90, "op")
        with pytest.raises(ValueError, match=rf"{feature} needs a GPU of compute capability 8.0.*sm_70"):
            check_arch((feature,), 70, "op")
    check_arch((), 61, "op")


def test_occupancy_from_registers_and_shared_memory() -> None:
    # 64 registers x 128 threads: 8 blocks of 4 warps = 32 of 64 warps
    occ = occupancy(90, 64, 0, 4)
    assert (occ.warps, occ.fraction, occ.limiter) == (32, 0.5, "registers")
    # 255 registers: 8 warps fit (allocation rounds 255*32 up to 8192 per warp)
    assert occupancy(80, 255, 0, 4).warps == 8
    # 32 registers: the warp limit binds
    assert occupancy(90, 32, 0, 4).fraction == 1.0 and occupancy(90, 32, 0, 4).limiter in ("warps", "registers")
    # 100 KB of shared memory per block: one block on sm_80 (164 KB), two on sm_90 (228 KB)
    assert occupancy(80, 32, 100 * 1024, 4).blocks == 1
    assert occupancy(90, 32, 100 * 1024, 4).blocks == 2
    assert set(ARCH_LIMITS) >= {61, 70, 80, 90}


@pytest.mark.skipif(not HAS_TRITON, reason="needs the triton extra")
def test_unknown_kernel_is_an_error() -> None:
    """``--kernel`` with a name no configuration has exits 2 naming it and the known kernels,
    before anything compiles, instead of printing an empty table. In a subprocess without
    ``TRITON_INTERPRET``: importing the kernel modules there makes compiled kernels, which must
    not replace the interpreted ones this test process uses."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    argv = [sys.executable, "-m", "alkernels.ops.aot", "--kernel", "nonexistent", "_score_all_kernel", "--arch", "80"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert "error: unknown kernel(s) nonexistent; known: " in done.stderr
    assert "_score_all_kernel" in done.stderr and "_edge_fwd_kernel" in done.stderr
    check = (
        "from alkernels.ops import aot\n"
        "try:\n    aot.run([80], kernels=['_score_all'])\nexcept ValueError as e:\n    print(e)"
    )
    done = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=300)
    assert "unknown kernel" in done.stdout, done.stderr


@pytest.mark.skipif(not HAS_TRITON, reason="needs the triton extra")
def test_every_launcher_choice_is_listed() -> None:
    """The acquisition launcher picks its block configuration from the table that the AOT check
    compiles: every C it accepts maps onto a listed configuration."""
    from alkernels.ops.acquisition import triton_kernels as acq_tk
    from alkernels.ops.message_passing import triton_kernels as mp_tk

    listed = {(c.constexprs["BLOCK_N"], c.constexprs["BLOCK_C"], c.num_warps) for c in acq_tk.aot_configs()}
    for C in (2, 3, 7, 64, 65, 230, 1000, 5000, 8192):
        assert acq_tk.block_config(C) in listed, C
    with pytest.raises(ValueError, match="8192"):
        acq_tk.block_config(8193)
    kinds = {(c.kernel, c.label) for c in mp_tk.aot_configs()}
    assert {k for k, _ in kinds} == {"_edge_fwd_kernel", "_edge_act_kernel", "_edge_bwd_kernel", "_sender_sum_kernel"}
    bwd = [c for c in mp_tk.aot_configs() if c.kernel == "_edge_bwd_kernel"]
    for arch in (70, 80, 90):  # exactly one backward configuration per (precision mode, detach) and arch
        chosen = [(c.label, c.num_warps) for c in bwd if c.chosen_on(arch) and not (c.features and arch < 80)]
        fwd = [
            c
            for c in mp_tk.aot_configs()
            if c.kernel == "_edge_fwd_kernel" and c.chosen_on(arch) and not (c.features and arch < 80)
        ]
        assert len({label for label, _ in chosen}) == len(chosen) == 2 * len(fwd)


@pytest.mark.skipif(not HAS_TRITON, reason="needs the triton extra")
@pytest.mark.timeout(600)
def test_aot_sm80_sm90_compiles_without_spills(tmp_path: Path) -> None:
    """Every configuration compiles for sm_80 and sm_90, never touches local memory, the
    acquisition kernel reaches 50% occupancy, and the EGNN matmuls use tensor cores in tf32/bf16
    (and in fp32, as 3xTF32); the float64 configurations compile spill-free too."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    out = tmp_path / "aot.json"
    proc = subprocess.run(
        [sys.executable, "-m", "alkernels.ops.aot", "--arch", "80", "90", "--check", "--jobs", "2", "--json", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=580,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    doc = json.loads(out.read_text())
    rows = doc["rows"]
    assert {r["arch"] for r in rows} == {80, 90}
    assert all(r["status"] == "ok" for r in rows), [r for r in rows if r["status"] != "ok"]
    assert all(r["stack"] == 0 and r["local_ldst"] == 0 for r in rows)
    acq_rows = [r for r in rows if r["kernel"] == "_score_all_kernel"]
    assert len(acq_rows) == 2 * 13 * 3 and min(r["occupancy"] for r in acq_rows) >= 0.5
    egnn = [r for r in rows if r["kernel"] in ("_edge_fwd_kernel", "_edge_act_kernel", "_edge_bwd_kernel")]
    fp32 = [r for r in egnn if not r["config"].startswith("fp64")]
    assert len(fp32) == 2 * 3 * 4 and len(egnn) == len(fp32) + 2 * 4  # float64: one IEEE mode
    assert all(r["tensor_core_instructions"] + r["wgmma_instructions"] > 0 for r in fp32)
    assert doc["problems"] == {}
