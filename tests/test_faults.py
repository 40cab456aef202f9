"""Fault injection: runs killed with SIGKILL at chosen points, damaged files, two writers at once.

After each fault: (a) nothing that was finished is lost, (b) nothing damaged is used, (c) the
message names the file. Runs happen in subprocesses (the driver below) so that a kill is a real
kill; the uninterrupted reference is the same driver without a fault.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from alkernels.data import _store, build_graphs
from alkernels.loop import TIMING_KEYS, read_records
from alkernels.loop.rundir import DamagedRunError

pytestmark = pytest.mark.timeout(180)

# One small AL run (the fused EGNN on 24 random cells, 4 rounds), with an optional fault:
#   argv: out_dir  resume(0/1)  fault  count  [restart_round(0/1)]
# faults: none | train_step (SIGKILL at the count-th optimiser step) | after_record (SIGKILL right
# after the count-th record is durable, before its checkpoint) | records_rewrite (SIGKILL inside the
# atomic rewrite of records.jsonl, after the temporary file is written) | hold (sleep holding the lock)
DRIVER = textwrap.dedent(
    """
    import os, signal, sys, time
    import numpy as np, torch
    from alkernels.data import GraphDataset, random_graphs
    from alkernels.loop import ActiveLearningLoop, LoopConfig, rundir
    from alkernels.models import EGNN, EGNNConfig, SpaceGroupClassifier

    out, resume, fault, count = sys.argv[1], sys.argv[2] == "1", sys.argv[3], int(sys.argv[4])
    restart = len(sys.argv) > 5 and sys.argv[5] == "1"
    torch.set_num_threads(1)
    data = GraphDataset(random_graphs(24, atoms=(2, 5), seed=7), y=np.arange(24) % 3)

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    calls = [0]
    def counted(fn):
        def wrapped(*args, **kwargs):
            result = fn(*args, **kwargs)
            calls[0] += 1
            if calls[0] == count:
                die()
            return result
        return wrapped

    if fault == "train_step":
        torch.optim.AdamW.step = counted(torch.optim.AdamW.step)
    elif fault == "after_record":
        rundir.RunDirectory.append_record = counted(rundir.RunDirectory.append_record)
    elif fault == "records_rewrite":
        original = rundir.atomic_write_bytes
        def rewrite(path, payload):
            if path.name == "records.jsonl":
                tmp = path.with_name(f".{path.name}.{os.getpid()}.alk-tmp")
                tmp.write_bytes(payload)
                die()
            return original(path, payload)
        rundir.atomic_write_bytes = rewrite
    elif fault == "hold":
        rundir.RunDirectory.append_record = lambda self, record: (print("holding", flush=True), time.sleep(60))

    def model():
        cfg = EGNNConfig(num_layers=2, node_dim=16, edge_hidden=16, coord_hidden=16, node_hidden=16, proj_dim=16)
        return SpaceGroupClassifier(EGNN(cfg, backend="auto"), dropout=0.2, hidden=16, num_classes=3)

    loop = ActiveLearningLoop(model, "bald", data[np.arange(18)], data[np.arange(18, 24)],
                              LoopConfig(initial=3, query_size=3, rounds=4, epochs=2, seed=5, batch_size=4, lr=1e-2),
                              out_dir=out)
    loop.run(resume=resume, restart_round=restart)
    print("done", flush=True)
    """
)


def drive(
    out: Path, *, resume: bool = False, fault: str = "none", count: int = 0, restart: bool = False, wait: bool = True
) -> subprocess.CompletedProcess | subprocess.Popen:
    args = [sys.executable, "-c", DRIVER, str(out), "1" if resume else "0", fault, str(count), "1" if restart else "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if not wait:
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return subprocess.run(args, capture_output=True, text=True, timeout=150, env=env)


def without_timings(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("reference") / "run"
    done = drive(out)
    assert done.returncode == 0, done.stderr[-2000:]
    records = read_records(out / "records.jsonl")
    assert len(records) == 4
    return without_timings(records)


def killed(done: subprocess.CompletedProcess) -> bool:
    return done.returncode == -signal.SIGKILL


@pytest.mark.parametrize(
    "fault, count, rounds_kept",
    [
        ("train_step", 4, 1),  # inside round 2's training (steps 3-6)
        ("after_record", 2, 2),  # round 2's record is durable, its checkpoint is not written
    ],
)
def test_kill_then_resume_loses_nothing_finished(tmp_path: Path, reference, fault, count, rounds_kept) -> None:
    out = tmp_path / "run"
    assert killed(drive(out, fault=fault, count=count))
    assert len(read_records(out / "records.jsonl")) == rounds_kept  # (a) finished rounds are there
    done = drive(out, resume=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert without_timings(read_records(out / "records.jsonl")) == reference  # the round is redone exactly
    assert not list(out.glob(".*.alk-tmp"))


def test_kill_during_the_records_rewrite_keeps_the_file_whole(tmp_path: Path, reference) -> None:
    out = tmp_path / "run"
    assert killed(drive(out, fault="after_record", count=2))  # a record newer than the checkpoint
    before = (out / "records.jsonl").read_bytes()
    assert killed(drive(out, resume=True, fault="records_rewrite"))  # killed while dropping it
    assert (out / "records.jsonl").read_bytes() == before  # old content, whole
    done = drive(out, resume=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert without_timings(read_records(out / "records.jsonl")) == reference
    assert not list(out.glob(".*.alk-tmp"))  # the stale temp file is gone


def test_damaged_checkpoint_is_refused_by_name_then_restarted(tmp_path: Path, reference) -> None:
    out = tmp_path / "run"
    assert killed(drive(out, fault="after_record", count=3))
    ckpt = out / "checkpoint.pt"
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0x10  # one flipped bit
    ckpt.write_bytes(bytes(data))
    done = drive(out, resume=True)
    assert done.returncode != 0
    assert f"checkpoint {ckpt} is damaged (its bytes do not match the stored checksum)" in done.stderr  # (b), (c)
    done = drive(out, resume=True, restart=True)  # redo from the previous checkpoint
    assert done.returncode == 0, done.stderr[-2000:]
    assert without_timings(read_records(out / "records.jsonl")) == reference
    assert list(out.glob("checkpoint.pt.damaged-*"))


def test_truncated_checkpoint_names_the_file(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert killed(drive(out, fault="after_record", count=2))
    ckpt = out / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    done = drive(out, resume=True)
    assert done.returncode != 0 and f"checkpoint {ckpt} is damaged" in done.stderr


def test_damaged_record_line_is_named_not_dropped(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert killed(drive(out, fault="after_record", count=3))
    path = out / "records.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[1][:20], lines[2]]) + "\n")  # line 2 damaged, line 3 intact
    with pytest.raises(DamagedRunError, match=rf"{path}, line 2: damaged record"):
        read_records(path)
    done = drive(out, resume=True)
    assert done.returncode != 0 and f"{path}, line 2: damaged record" in done.stderr
    assert path.read_text().count("\n") == 3  # nothing after it was dropped


def test_two_writers_into_one_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = drive(out, fault="hold", wait=False)
    try:
        assert first.stdout.readline().strip() == "holding"  # inside round 1, lock held
        second = drive(out)
        assert second.returncode != 0
        assert f"{out} is in use by another run (process {first.pid})" in second.stderr
    finally:
        first.kill()
        first.wait()
    done = drive(out, resume=True)  # the lock died with its holder
    assert done.returncode == 0, done.stderr[-2000:]


def test_cli_refuses_a_second_writer_before_any_work(tmp_path: Path) -> None:
    from alkernels.cli import main

    out = tmp_path / "run"
    holder = drive(out, fault="hold", wait=False)
    try:
        assert holder.stdout.readline().strip() == "holding"
        err_file = tmp_path / "err.txt"
        with open(err_file, "w") as err:
            code = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "alkernels",
                    "run",
                    "--strategy",
                    "margin",
                    "--dataset",
                    "perovskite:20",
                    "--out",
                    str(out),
                    "--resume",
                ],
                stderr=err,
                timeout=120,
            ).returncode
        assert code == 2 and f"is in use by another run (process {holder.pid})" in err_file.read_text()
    finally:
        holder.kill()
        holder.wait()
    assert (
        main(
            [
                "run",
                "--strategy",
                "margin",
                "--dataset",
                "perovskite:20",
                "--out",
                str(tmp_path / "f"),
                "--device",
                "cuda:7",
            ]
        )
        == 2
    )  # validated before any data is generated


CACHE_DRIVER = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from ase import Atoms
    from alkernels.data import _store, build_graphs
    appended = [0]
    original = _store.ArrayWriter.append
    def append(self, name, array):
        original(self, name, array)
        appended[0] += 1
        if appended[0] == 6:
            os.kill(os.getpid(), signal.SIGKILL)
    _store.ArrayWriter.append = append
    rng = np.random.default_rng(0)
    atoms = [Atoms(numbers=[11, 17], scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]], cell=4 * np.eye(3), pbc=True)
             for _ in range(40)]
    build_graphs(atoms, cutoff=5.0, workers=1, cache_dir=sys.argv[1])
    """
)


def test_kill_during_a_cache_build_leaves_nothing_that_is_used(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CACHE_DRIVER, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert killed(done)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("graphs-")]  # no entry published
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".graphs-")]  # the dead build's temp folder
    from ase import Atoms

    atoms = [
        Atoms(numbers=[11, 17], scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]], cell=4 * np.eye(3), pbc=True)
        for _ in range(40)
    ]
    graphs = build_graphs(atoms, cutoff=5.0, workers=1, cache_dir=tmp_path)
    assert graphs.num_edges > 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".graphs-")]  # removed as dead
    _store._VERIFIED.clear()
    _store.load_store(graphs.path)  # intact, checksums included


def test_records_file_with_a_torn_last_line_is_repaired(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps({"round": 0}) + "\n" + '{"round": 1, "acc')
    from alkernels.loop.rundir import read_records as read

    assert read(path, repair=True) == [{"round": 0}]
    assert path.read_text() == json.dumps({"round": 0}) + "\n"
