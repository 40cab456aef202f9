"""Multi-process runs on the CPU: gloo over the loopback interface (GLOO_SOCKET_IFNAME=lo), one
torch thread per rank, every collective bounded by a short process-group timeout and every test by
pytest-timeout.

Two launchers: ``torch.multiprocessing`` (2 ranks meeting through a ``file://`` store, for the
selection and the hang) and ``torchrun --standalone`` (the real launcher, for the AL runs, the
dying rank and the CLI).

Tolerances, 2 ranks against 1 process with the same seed (``tests/distributed_worker.py``: a
narrow EGNN, no training dropout, margin and random): the queried structures (hence every
labelled set) and the accuracies are equal; the test losses agree to 1e-5 relative, because DDP
sums each batch's gradient in two halves. One rank against one process: every record is equal
bit for bit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from alkernels import acquisition as acq
from alkernels import distributed as D
from alkernels.loop import TIMING_KEYS, read_records
from helpers import CRYSTALS, make_loop, without_timings

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "distributed_worker.py"
ENV = {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "GLOO_SOCKET_IFNAME": "lo"}


# ---- launchers ------------------------------------------------------------------------------
def _entry(rank: int, world: int, store: str, timeout: float, fn, args) -> None:
    os.environ.update(ENV)
    torch.set_num_threads(1)
    D.init_process_group(init_method=f"file://{store}", rank=rank, world_size=world, timeout=timeout)
    fn(rank, world, *args)
    D.destroy_process_group()


def spawn(tmp_path: Path, fn, *args, world: int = 2, timeout: float = 20.0) -> None:
    """Run ``fn(rank, world, *args)`` on ``world`` spawned ranks; re-raises a rank's exception."""
    os.environ.update(ENV)
    mp.start_processes(
        _entry, args=(world, str(tmp_path / "store"), timeout, fn, args), nprocs=world, start_method="spawn"
    )


def torchrun(
    *args, nproc: int = 2, timeout: float = 120.0, monitor_interval: float | None = None
) -> tuple[subprocess.CompletedProcess, float]:
    """``torchrun --standalone --nproc_per_node nproc *args``; returns (result, seconds).
    ``monitor_interval``: how often torchrun's agent polls its workers (its default is 0.1 s)."""
    env = {**os.environ, **ENV, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    launcher = ["--standalone", f"--nproc_per_node={nproc}"]
    if monitor_interval is not None:
        launcher.append(f"--monitor-interval={monitor_interval}")
    cmd = [sys.executable, "-m", "torch.distributed.run", *launcher, *map(str, args)]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    return out, time.perf_counter() - t0


# ---- sharded selection ------------------------------------------------------------------------
def _same(got, ref) -> None:
    assert torch.equal(got[0], ref[0].cpu()), (got, ref)
    assert torch.equal(got[1].view(torch.int32), ref[1].cpu().view(torch.int32)), (got, ref)


def _check_selection(rank: int, world: int) -> None:
    g = torch.Generator().manual_seed(11)  # the same draws on every rank
    for trial in range(36):
        n = int(torch.randint(1, 50, (1,), generator=g))
        t, c = (1, 3) if trial % 2 else (4, 5)
        # few distinct values: exact ties everywhere, also across shard boundaries
        logits = (torch.randint(-2, 3, (t, n, c), generator=g) / 2).to(
            [torch.float32, torch.float16, torch.bfloat16][trial % 3]
        )
        mask = torch.rand(n, generator=g) < 0.25
        exclude = [None, mask, torch.nonzero(mask).flatten().tolist()][trial % 3]
        selectable = n - (int(mask.sum()) if exclude is not None else 0)
        k = int(torch.randint(0, selectable + 1, (1,), generator=g))
        if trial % 4 == 0:
            k = selectable  # larger than any one shard
        strategy = acq.STRATEGIES[trial % len(acq.STRATEGIES)]
        cut = int(torch.randint(0, n + 1, (1,), generator=g))  # uneven, possibly empty shards
        lo, hi = D.shard_range(n, rank, world) if trial % 2 else ((0, cut) if rank == 0 else (cut, n))
        ref = acq.select(logits, strategy, k, exclude=exclude)
        _same(D.select_distributed(logits[:, lo:hi], strategy, k, offset=lo, exclude=exclude), ref)
        chunks = [logits[:, a : min(a + 3, hi)] for a in range(lo, hi, 3)]
        _same(D.select_distributed(chunks, strategy, k, offset=lo, exclude=exclude), ref)
        # a streaming selector fed round-robin chunks: ranks' rows interleave
        sel = D.DistributedStreamingSelector(strategy, k, exclude=exclude)
        for j, a in enumerate(range(0, n, 4)):
            if j % world == rank:
                sel.update(logits[:, a : a + 4], a)
        _same(sel.result(), ref)
        scores = acq.score(logits, strategy).clone()
        if exclude is not None:
            scores[mask] = float("nan")
        _same(
            D.topk_distributed(acq.score(logits[:, lo:hi], strategy), k, offset=lo, exclude=exclude),
            acq.topk(scores, k),
        )
    # all ties: the lowest global indices win, across the boundary
    flat = torch.zeros(2, 10, 3)
    lo, hi = D.shard_range(10, rank, world)
    assert D.select_distributed(flat[:, lo:hi], "bald", 7, offset=lo)[0].tolist() == list(range(7))
    # every rank raises the same ValueError, none is left waiting
    with pytest.raises(ValueError, match=r"k = 11 is larger than the pool after exclusion \(10 samples on 2"):
        D.select_distributed(flat[:, lo:hi], "bald", 11, offset=lo)
    bad = torch.randn(2, 10, 3, generator=g)
    bad[1, 8, 0] = float("inf")  # in rank 1's shard
    mine = bad[:, 5 * rank : 5 * rank + 5]
    with pytest.raises(ValueError, match=r"non-finite logits .* pool sample 8; .* \(rank 1\)"):
        D.select_distributed(mine, "bald", 2, offset=5 * rank)
    _same(
        D.select_distributed(mine, "margin", 9, offset=5 * rank, nonfinite="exclude"),
        acq.select(bad, "margin", 9, nonfinite="exclude"),
    )
    with pytest.raises(ValueError, match="shards overlap"):
        D.select_distributed(torch.zeros(2, 5, 3), "bald", 3, offset=0)
    # float64 on one rank: the float32 merge would not rank it as acquisition.select does
    clean = flat[:, lo:hi]
    with pytest.raises(ValueError, match=r"float64 logits: .*\(rank 0\)$"):
        D.select_distributed(clean.double() if rank == 0 else clean, "bald", 2, offset=lo)
    with pytest.raises(ValueError, match=r"float64 scores: .*\(rank 1\)$"):
        D.topk_distributed(torch.rand(5, dtype=torch.float64 if rank else torch.float32), 2, offset=5 * rank)


@pytest.mark.timeout(120)
def test_sharded_selection_equals_select(tmp_path):
    spawn(tmp_path, _check_selection)


def _hang_in_query(rank: int, world: int, out: str) -> None:
    if rank == 1:
        time.sleep(600)  # alive but stuck: the test ends it
    try:
        D.select_distributed(torch.zeros(2, 4, 3), "bald", 2, offset=4 * rank)
    except D.DistributedError as err:
        Path(out).write_text(
            json.dumps({"message": str(err), "unresponsive": list(err.unresponsive), "phase": err.phase})
        )
    os._exit(0)


@pytest.mark.timeout(90)
def test_a_hanging_rank_is_named_within_the_timeout(tmp_path):
    os.environ.update(ENV)
    out = tmp_path / "error.json"
    ctx = mp.start_processes(
        _entry,
        args=(2, str(tmp_path / "store"), 3.0, _hang_in_query, (str(out),)),
        nprocs=2,
        start_method="spawn",
        join=False,
    )
    try:
        t0 = time.perf_counter()
        ctx.processes[0].join(60)
        waited = time.perf_counter() - t0
    finally:
        for p in ctx.processes:
            p.kill()
    report = json.loads(out.read_text())
    assert report["unresponsive"] == [1], report
    assert "rank 0 of 2 failed during gathering top-k headers" in report["message"]
    assert "rank(s) 1 did not answer" in report["message"]
    assert waited < 45  # 3 s collective timeout + at most 3 s of diagnosis, plus start-up


# ---- the AL loop ------------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_one_rank_equals_the_single_process_run_bit_for_bit(tmp_path, monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    D.init_process_group(init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1, timeout=30)
    try:
        for strategy in ("margin", "bald", "learning_loss", "random"):
            single = make_loop(tmp_path, strategy, f"s-{strategy}")
            one = make_loop(tmp_path, strategy, f"d-{strategy}", distributed=True)
            assert without_timings(one.run()) == without_timings(single.run())
            for (name, a), (_, b) in zip(single.model.state_dict().items(), one.model.state_dict().items()):
                assert torch.equal(a, b), name
        # the compute-matched schedule: each round trains its own number of epochs on every path
        single = make_loop(tmp_path, "margin", "s-budget", epochs=None, epoch_budget=3)
        one = make_loop(tmp_path, "margin", "d-budget", epochs=None, epoch_budget=3, distributed=True)
        assert without_timings(one.run()) == without_timings(single.run())
        assert len(set(one.epochs_per_round)) > 1
        config = json.loads((tmp_path / "d-margin" / "config.json").read_text())
        assert config["world_size"] == 1
        with pytest.raises(ValueError, match="settings differ .*world_size: 1 -> null"):
            make_loop(tmp_path, "margin", "d-margin").run(resume=True)
        with pytest.raises(ValueError, match="already holds a run"):  # rank 0's check, sent to every rank
            make_loop(tmp_path, "margin", "d-margin", distributed=True).run()
        # resuming a finished distributed run returns its records unchanged
        again = make_loop(tmp_path, "margin", "d-margin", distributed=True).run(resume=True)
        assert again == read_records(tmp_path / "d-margin" / "records.jsonl")
    finally:
        D.destroy_process_group()


def test_distributed_needs_a_job():
    with pytest.raises(ValueError, match="torchrun environment"):
        make_loop(Path("unused"), "margin", distributed=True)


@pytest.fixture(scope="module")
def two_rank_runs(tmp_path_factory):
    """margin and random without training dropout, bald with dropout 0.1, on 2 ranks."""
    out = tmp_path_factory.mktemp("two-ranks")
    res, _ = torchrun(WORKER, "--out", out, "--strategies", "margin:0,random:0,bald:0.1")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    return out


@pytest.mark.timeout(180)
def test_two_ranks_label_the_same_structures_as_one_process(two_rank_runs, tmp_path):
    from distributed_worker import build_loop

    torch.set_num_threads(1)
    for strategy in ("margin", "random"):
        single = build_loop(tmp_path / strategy, strategy, distributed=False).run()
        two = read_records(two_rank_runs / strategy / "records.jsonl")
        assert [r["queried"] for r in two] == [r["queried"] for r in single]
        assert [r["accuracy"] for r in two] == [r["accuracy"] for r in single]
        np.testing.assert_allclose([r["loss"] for r in two], [r["loss"] for r in single], rtol=1e-5)
        assert json.loads((two_rank_runs / strategy / "config.json").read_text())["world_size"] == 2
        assert sum(1 for r in single if r["queried"]) == 3 and len({r["loss"] for r in single}) == 4


@pytest.mark.timeout(240)
def test_a_dying_rank_fails_the_run_and_resume_finishes_it(two_rank_runs, tmp_path):
    # rank 1 SIGKILLs itself at its 8th training step: in the middle of the third round's (round 2)
    # training. The agent polls every 5 s rather than torchrun's 0.1 s, so that rank 0 (whose next
    # collective fails as soon as its peer is gone) reports the failure itself before the agent
    # stops it; on a loaded machine a 0.1 s poll can win that race.
    res, seconds = torchrun(
        WORKER,
        "--out",
        tmp_path,
        "--strategies",
        "bald:0.1",
        "--kill-rank",
        1,
        "--kill-at",
        8,
        "--timeout",
        30,
        monitor_interval=5,
    )
    output = res.stdout + res.stderr
    assert res.returncode != 0 and seconds < 90, output[-3000:]
    assert "rank 0 of 2 failed during training, round 2" in output, output[-3000:]
    assert "exitcode  : -9" in output  # torchrun's summary: the rank that was killed
    assert [r["round"] for r in read_records(tmp_path / "bald" / "records.jsonl")] == [0, 1]
    res, _ = torchrun(WORKER, "--out", tmp_path, "--strategies", "bald:0.1", "--resume", "--timeout", 30)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    resumed = read_records(tmp_path / "bald" / "records.jsonl")
    expect = read_records(two_rank_runs / "bald" / "records.jsonl")
    assert without_timings(resumed) == without_timings(expect)
    assert len(resumed) == 4 and all(set(r) - set(TIMING_KEYS) for r in resumed)


# ---- the CLI ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cif_dir(tmp_path_factory):
    """24 CIFs of simple crystals, and a graph cache beside them shared by the CLI tests."""
    ase_io = pytest.importorskip("ase.io")
    from ase.build import bulk

    folder = tmp_path_factory.mktemp("cifs")
    for k, (formula, kind, a) in enumerate(
        (c for s in (0.97, 1.0, 1.03) for c in [(f, kd, a * s) for f, kd, a in CRYSTALS])
    ):
        ase_io.write(folder / f"{k:02d}-{formula}.cif", bulk(formula, kind, a=a))
    return folder


@pytest.mark.timeout(180)
def test_cli_run_under_torchrun(cif_dir, tmp_path):
    out = tmp_path / "run"
    res, _ = torchrun(
        "-m",
        "alkernels",
        "run",
        "--distributed",
        "--dist-timeout",
        60,
        "--strategy",
        "margin",
        "--dataset",
        cif_dir,
        "--label",
        "spacegroup",
        "--out",
        out,
        "--rounds",
        3,
        "--epochs",
        1,
        "--initial",
        3,
        "--query-size",
        3,
        "--backend",
        "torch",
        "--dropout",
        0,
        "--cache-dir",
        cif_dir.parent / "cache",
        "--workers",
        1,
        "--threads",
        1,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    records = read_records(out / "records.jsonl")
    assert [r["labelled_count"] for r in records] == [3, 6, 9]
    assert res.stderr.count("distributed: 2 ranks, backend gloo") == 1  # rank 0 alone logs it
    assert res.stdout.count("round  labelled") == 1


def _reproduce(rank: int, world: int, cif_dir: str, out: str) -> None:
    from dataclasses import replace

    from alkernels.cli import main
    from alkernels.experiments.spacegroup import grid

    grid.PRESETS["quick"] = replace(grid.PRESETS["quick"], rounds=3, initial=0.2, query_size=0.2)
    code = main(
        [
            "reproduce",
            "--distributed",
            "--preset",
            "quick",
            "--strategies",
            "margin",
            "--seeds",
            "1",
            "--reset",
            "keep",
            "--epochs",
            "1",
            "--dataset",
            cif_dir,
            "--label",
            "spacegroup",
            "--out",
            out,
            "--cache-dir",
            str(Path(cif_dir).parent / "cache"),
            "--workers",
            "1",
        ]
    )
    assert code == 0


@pytest.mark.timeout(180)
def test_cli_reproduce_distributed(cif_dir, tmp_path):
    out = tmp_path / "grid"
    spawn(tmp_path, _reproduce, str(cif_dir), str(out))
    meta = json.loads((out / "experiment.json").read_text())
    assert meta["strategies"] == ["margin"] and meta["preset"]["rounds"] == 3
    for cell in ("runs/standard/seed0", "runs/keep/margin/seed0"):
        assert json.loads((out / cell / "config.json").read_text())["world_size"] == 2
    assert len(read_records(out / "runs/keep/margin/seed0/records.jsonl")) == 3
    assert (out / "table.md").exists()
