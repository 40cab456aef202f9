"""Safe with files from others: no code runs on load, user files are never destroyed, a planted
lock cannot clobber anything, kernels never read out of bounds, bad structures are rejected rows,
and shared caches survive builders in other PID namespaces."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from alkernels import acquisition as acq
from alkernels.loop.rundir import (
    DamagedCheckpointError,
    ForeignFolderError,
    RunDirectory,
    read_checksummed,
    write_checksummed,
)
from alkernels.ops.dispatch import ext
from alkernels.ops.message_passing import EdgeGraph, build_edge_graph, egnn_edge_op
from helpers import BACKENDS, op_inputs


class Payload:
    """A pickle that, when unpickled with weights_only=False, creates a file."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple:
        return (Path.write_text, (self.target, "pwned"))


def planted(path: Path, target: Path) -> None:
    """A checkpoint-format file whose checksum is right and whose payload runs code."""
    write_checksummed(path, {"next_round": 1, "evil": Payload(target)})


# ---- 1. no code runs on load -----------------------------------------------------------------


def test_a_planted_pickle_payload_never_runs(tmp_path: Path) -> None:
    target = tmp_path / "pwned.txt"
    run = RunDirectory(tmp_path / "run")
    with run.lock():
        run.write_config({"strategy": "random", "seed": 0})
        planted(run.checkpoint_path, target)
        with pytest.raises(DamagedCheckpointError, match="checkpoint.pt.*plain data"):
            run.load_checkpoint()
        planted(run.path / "initial.pt", target)
        with pytest.raises(DamagedCheckpointError, match="initial.pt"):
            run.load_state("initial.pt")
    assert not target.exists()


def test_a_checkpoint_of_the_wrong_structure_is_named_not_a_keyerror(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    write_checksummed(path, {"weights": {}})
    with pytest.raises(DamagedCheckpointError, match=r"checkpoint.pt.*missing keys \['next_round'\]"):
        read_checksummed(path, keys=("next_round", "weights"))
    write_checksummed(path, [1, 2, 3])
    with pytest.raises(DamagedCheckpointError, match="a list, not a dict"):
        read_checksummed(path, keys=("next_round",))


def test_the_transfer_training_state_loads_plain_data_only(tmp_path: Path) -> None:
    from alkernels.transfer.train import STATE_KEYS

    target = tmp_path / "pwned.txt"
    state = tmp_path / ".source-key.state"
    planted(state, target)
    with pytest.raises(DamagedCheckpointError):
        read_checksummed(state, keys=STATE_KEYS)
    assert not target.exists()


# ---- 2. user files are never destroyed -------------------------------------------------------


def user_folder(root: Path) -> dict[str, bytes]:
    files = {
        "records.jsonl": b'{"mine": 1}\n',
        "checkpoint.pt": b"my weights",
        ".notes.tmp": b"draft",
        ".x.123.tmp": b"other",
        "table.md": b"| my | table |\n",
        "summary.json": b"{}",
    }
    root.mkdir()
    for name, data in files.items():
        (root / name).write_bytes(data)
    return files


def test_a_folder_that_is_not_a_run_survives_byte_for_byte(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    files = user_folder(folder)
    with pytest.raises(ForeignFolderError, match="not an alkernels folder"):
        with RunDirectory(folder).lock():
            pass
    from alkernels.cli._common import check_output_dir

    with pytest.raises(ForeignFolderError):
        check_output_dir(str(folder), resume=True)
    from alkernels.experiments.spacegroup import report

    with pytest.raises(ForeignFolderError):
        report.write_report(folder, folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == files


def test_the_cli_refuses_a_foreign_out_folder_before_any_work(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    files = user_folder(folder)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "alkernels",
            "run",
            "--strategy",
            "random",
            "--dataset",
            "builtin:40",
            "--rounds",
            "1",
            "--out",
            str(folder),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "not an alkernels folder" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == files


def test_only_the_librarys_own_temporary_files_are_removed(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path / "run")
    with run.lock():
        pass
    mine = run.path / ".checkpoint.pt.4242.alk-tmp"
    theirs = [run.path / ".notes.tmp", run.path / ".x.1.tmp", run.path / "y.alk-tmp"]
    for p in (mine, *theirs):
        p.write_text("x")
    with run.lock():
        pass
    assert not mine.exists() and all(p.exists() for p in theirs)


def test_a_run_that_never_finished_a_round_can_start_again(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path / "run")
    with run.lock():
        run.write_config({"strategy": "random", "seed": 0, "lr": 1.0})
        run.save_state("initial.pt", {"model": {}, "aux": None})
    assert not run.has_run()
    run.check_identity({"strategy": "random", "seed": 0, "lr": 0.5}, resume=False)  # no "already holds a run"
    with run.lock():
        run.append_record({"round": 0})
    assert run.has_run()


# ---- 3. the lock does not follow a symlink ---------------------------------------------------


def test_a_symlinked_lock_clobbers_nothing(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path / "run")
    with run.lock():
        pass
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (run.path / ".lock").unlink()
    (run.path / ".lock").symlink_to(victim)
    with pytest.raises(ValueError, match="symlink"):
        with run.lock():
            pass
    assert victim.read_text() == "precious\n"
    (run.path / ".lock").unlink()
    (run.path / ".lock").write_text("not a pid, someone's file\n")
    with pytest.raises(ValueError, match="not an alkernels lock file"):
        with run.lock():
            pass
    assert (run.path / ".lock").read_text() == "not a pid, someone's file\n"


# ---- 4. kernels never read out of bounds -----------------------------------------------------


def bad_graphs(graph: EdgeGraph) -> dict[str, EdgeGraph]:
    n, e = graph.num_nodes, graph.num_edges
    src = graph.src.clone()

    def with_(**kw: torch.Tensor) -> EdgeGraph:
        fields = {k: getattr(graph, k) for k in ("src", "dst", "rowptr", "src_perm", "src_ptr")}
        return EdgeGraph(**{**fields, **kw})

    rowptr_dec = graph.rowptr.clone()
    rowptr_dec[2] = rowptr_dec[3] + 1
    perm = graph.src_perm.clone()
    perm[0] = perm[1]
    return {
        "huge sender": with_(src=src.index_fill(0, torch.tensor([0]), 10**9)),
        "negative sender": with_(src=src.index_fill(0, torch.tensor([1]), -5)),
        "sender equal to n": with_(src=src.index_fill(0, torch.tensor([2]), n)),
        "sender 2**62": with_(src=src.index_fill(0, torch.tensor([3]), 2**62)),
        "decreasing rowptr": with_(rowptr=rowptr_dec),
        "src_perm not a permutation": with_(src_perm=perm),
        "src_perm out of range": with_(src_perm=graph.src_perm.index_fill(0, torch.tensor([0]), e + 7)),
        "bad src_ptr": with_(src_ptr=graph.src_ptr.flip(0)),
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_out_of_range_indices_raise_value_error_on_every_backend(backend: str) -> None:
    h, x, shift, graph, w = op_inputs([4, 3], "periodic", 3.5, torch.float32)
    for what, bad in bad_graphs(graph).items():
        with pytest.raises(ValueError):
            m, dx = egnn_edge_op(h, x, shift, bad, w, backend=backend)
            (m.sum() + dx.sum()).backward()  # the backward's sender layouts too
        assert True, what


def test_bad_indices_reach_the_binding_directly_and_raise() -> None:
    """The C++ binding checks every index array itself (a caller that skips Python's checks)."""
    if ext() is None:
        pytest.skip("alkernels._C not built")
    from alkernels.ops.message_passing.cpu import egnn_edge_backward_cpu, egnn_edge_cpu

    h, x, shift, graph, w = op_inputs([4, 3], "periodic", 3.5, torch.float32)
    gm, gdx = torch.zeros(h.shape[0], 128), torch.zeros(h.shape[0], 3)
    for what, bad in bad_graphs(graph).items():
        with torch.no_grad(), pytest.raises(ValueError):
            if what.startswith(("src_perm", "bad src_ptr")):
                egnn_edge_backward_cpu(h, x, shift, bad, w, 0.1, False, gm, gdx)
            else:
                egnn_edge_cpu(h, x, shift, bad, w, 0.1)


def test_build_edge_graph_without_validation_still_builds_consistent_layouts() -> None:
    g = build_edge_graph(torch.tensor([1, 0, 2]), torch.tensor([0, 1, 2]), 3, validate=False)
    assert g.checked and g.rowptr.tolist() == [0, 1, 2, 3]


def test_streaming_offset_overflow_raises() -> None:
    sel = acq.StreamingSelector("bald", 2)
    with pytest.raises(ValueError, match="largest pool position"):
        sel.update(torch.randn(2, 5, 3), offset=2**63 - 2)


# ---- 5. one bad structure never sinks a dataset ------------------------------------------------


def cif(a: float, b: float, c: float, x: str = "0.0") -> str:
    return textwrap.dedent(f"""\
        data_test
        _cell_length_a {a}
        _cell_length_b {b}
        _cell_length_c {c}
        _cell_angle_alpha 90
        _cell_angle_beta 90
        _cell_angle_gamma 90
        _symmetry_space_group_name_H-M 'P 1'
        loop_
        _atom_site_label
        _atom_site_type_symbol
        _atom_site_fract_x
        _atom_site_fract_y
        _atom_site_fract_z
        Na1 Na {x} 0.0 0.0
        Cl1 Cl 0.5 0.5 0.5
        """)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_csv_with_a_huge_cell_and_a_nan_row_keeps_the_good_rows(tmp_path: Path, workers: int) -> None:
    pd = pytest.importorskip("pandas")
    from alkernels.data import read_structures

    rows = [cif(5.6, 5.6, 5.6) for _ in range(298)] + [cif(1e6, 4, 4), cif(5.6, 5.6, 5.6, x="nan"), cif(5.6, 5.6, 5.6)]
    path = tmp_path / "set.csv"
    pd.DataFrame({"material_id": [f"m{k}" for k in range(len(rows))], "cif": rows}).to_csv(path, index=False)
    s = read_structures(path, workers=workers)
    assert len(s) == 299
    reasons = dict(s.rejected)
    assert set(reasons) == {298, 299}
    assert "cell too large" in reasons[298]
    assert "non-finite" in reasons[299] or "unparsable" in reasons[299]


def test_non_finite_positions_are_rejected_rows(tmp_path: Path) -> None:
    ase = pytest.importorskip("ase")
    from alkernels.data import read_structures

    good = ase.Atoms("NaCl", positions=[[0, 0, 0], [2.8, 2.8, 2.8]], cell=np.eye(3) * 5.6, pbc=True)
    bad = good.copy()
    bad.positions[0, 1] = float("nan")
    s = read_structures([good, bad, good])
    assert len(s) == 2 and s.rejected[0][0] == 1 and "non-finite position" in s.rejected[0][1]


def test_a_dense_structure_over_the_edge_cap_is_a_rejected_row() -> None:
    ase = pytest.importorskip("ase")
    from alkernels.data import build_graphs, read_structures

    grid = np.stack(np.meshgrid(*[np.arange(10)] * 3, indexing="ij"), -1).reshape(-1, 3) * 0.55
    dense = ase.Atoms("H" * 1000, positions=grid, cell=np.eye(3) * 5.5, pbc=True)  # 1.6M edges at 4 A
    sparse = ase.Atoms("NaCl", positions=[[0, 0, 0], [2.8, 2.8, 2.8]], cell=np.eye(3) * 5.6, pbc=True)
    s = read_structures([sparse, dense, sparse])
    assert len(s) == 3
    kept = s.drop_dense(cutoff=4.0, max_edges=100_000)
    assert len(kept) == 2 and kept.rejected[-1][0] == "1" and "too dense" in kept.rejected[-1][1]
    with pytest.raises(ValueError, match="too dense"):
        build_graphs([dense], cutoff=4.0, max_edges=100_000, workers=1)
    with pytest.raises(ValueError, match="cutoff must lie in"):
        build_graphs([sparse], cutoff=1e4, workers=1)


def test_cif_size_and_site_bounds_reject_before_parsing(tmp_path: Path) -> None:
    pytest.importorskip("ase")
    from alkernels.data import read_structures
    from alkernels.data.readers import MAX_CIF_SITES

    many = (
        cif(50, 50, 50).rstrip("\n").rsplit("\n", 2)[0]
        + "\n"
        + "".join(f"Na{k} Na {k / 3000:.5f} 0.1 0.2\n" for k in range(MAX_CIF_SITES + 5))
    )
    (tmp_path / "big.cif").write_text(many)
    (tmp_path / "ok.cif").write_text(cif(5.6, 5.6, 5.6))
    s = read_structures(tmp_path)
    assert len(s) == 1 and "atom sites" in dict(s.rejected)["big.cif"]


# ---- 6. shared caches: builds in other PID namespaces ---------------------------------------


def test_a_live_build_in_another_pid_namespace_is_not_removed(tmp_path: Path) -> None:
    """A builder in its own PID namespace (pid 1 or 2 there, which means nothing here) holds its
    temporary folder; another builder's clean-up must leave it alone, and remove it once the
    builder is gone."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare")
    target = tmp_path / "graphs-abc"
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from alkernels.data._store import ArrayWriter
        w = ArrayWriter(Path({str(target)!r}))
        print("ready", flush=True)
        sys.stdin.readline()
        w.abort()
    """)
    try:
        proc = subprocess.Popen(
            ["unshare", "-p", "-f", "--mount-proc", sys.executable, "-c", script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
    except OSError:
        pytest.skip("unshare cannot start")
    first = proc.stdout.readline() if proc.stdout else ""
    if "ready" not in first:
        proc.kill()
        pytest.skip("no PID namespaces here (unshare needs privileges)")
    try:
        temps = list(tmp_path.glob(".graphs-abc.*"))
        assert len(temps) == 1
        from alkernels.data._store import _remove_dead_builds

        _remove_dead_builds(target)
        assert temps[0].exists(), "a live build in another PID namespace was deleted"
    finally:
        proc.communicate("\n", timeout=60)
    # a builder that died without cleaning up: its lock is gone, its folder goes
    dead = tmp_path / ".graphs-abc.99999.x"
    dead.mkdir()
    (dead / ".building").touch()
    _remove_dead_builds(target)
    assert not dead.exists()


# ---- 7. damaged strategy-order caches are rebuilt -------------------------------------------


def test_a_damaged_order_cache_is_rebuilt(tmp_path: Path) -> None:
    from alkernels.data._store import load_cached_array, save_cached_array

    path = tmp_path / "center_of_mass-order-10-abc.npy"
    save_cached_array(path, np.arange(10))
    assert load_cached_array(path).tolist() == list(range(10))
    path.write_bytes(path.read_bytes()[:20])
    with pytest.warns(RuntimeWarning, match="damaged"):
        assert load_cached_array(path) is None
    assert not path.exists()


# ---- 8. the CLI: OS errors and missing extras are one line -----------------------------------


def test_os_errors_are_one_line_cli_errors(tmp_path: Path) -> None:
    from alkernels.cli import main

    missing = tmp_path / "nope.csv"
    code = main(["data", "build-graphs", str(missing), "--cache-dir", str(tmp_path / "c")])
    assert code == 2


def test_cli_error_lines_have_no_traceback(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from alkernels.cli import main

    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert main(["data", "build-graphs", str(empty), "--cache-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("alkernels: error:") and len(err.strip().splitlines()) == 1
