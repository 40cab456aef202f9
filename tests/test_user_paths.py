"""Paths given by users expand ``~`` (issue 24): with ``HOME`` pointed at a temporary folder and the
working directory elsewhere, every public path argument lands under that home, and no folder
literally named ``~`` appears in the working directory."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

from alkernels._paths import user_path
from helpers import CRYSTALS, TEST, TRAIN, TapModel, toy_collate

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ``HOME`` under ``tmp_path``; the working directory is ``tmp_path / "work"``."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    return home


def assert_no_tilde_folder() -> None:
    made = [str(p) for p in Path.cwd().rglob("*") if "~" in p.name]
    assert made == [], f"literal '~' paths created: {made}"


def write_crystals_csv(path: Path) -> None:
    """The CIFs of :data:`helpers.CRYSTALS` with a numeric ``energy`` column."""
    ase_io = pytest.importorskip("ase.io")
    from ase.build import bulk

    pd = pytest.importorskip("pandas")
    cifs = []
    for formula, kind, a in CRYSTALS:
        buf = io.BytesIO()
        ase_io.write(buf, bulk(formula, kind, a=a), format="cif")
        cifs.append(buf.getvalue().decode())
    pd.DataFrame({"cif": cifs, "energy": np.arange(len(cifs), dtype=np.float64)}).to_csv(path, index=False)


def test_user_path(home: Path) -> None:
    assert user_path("~/cache") == home / "cache"
    assert user_path(Path("~")) == home
    assert user_path("runs/~x") == Path("runs/~x")  # only a leading ~ expands
    assert user_path(None) is None


def test_data_paths_expand(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("vesin")
    from alkernels.data import build_graphs, read_structures
    from alkernels.data._store import default_cache_dir
    from alkernels.data.specs import load_property_graphs

    write_crystals_csv(home / "crystals.csv")
    structures = read_structures("~/crystals.csv", workers=1)
    assert len(structures) == len(CRYSTALS)
    graphs = build_graphs(structures, cutoff=4.0, workers=1, cache_dir="~/.cache/alkernels")
    assert len(graphs) == len(CRYSTALS)
    assert len(list((home / ".cache" / "alkernels").glob("graphs-*"))) == 1
    graphs, columns = load_property_graphs("~/crystals.csv", ["energy"], cutoff=4.0, workers=1, cache_dir="~/props")
    assert len(graphs) == len(CRYSTALS) and columns["energy"].tolist() == list(range(len(CRYSTALS)))
    assert len(list((home / "props").glob("graphs-*"))) == 1
    monkeypatch.setenv("ALKERNELS_CACHE", "~/env-cache")
    assert default_cache_dir() == home / "env-cache"
    assert_no_tilde_folder()


def test_run_and_checkpoint_paths_expand(home: Path) -> None:
    from alkernels import strategies, transfer
    from alkernels.loop import ActiveLearningLoop, LoopConfig, LoopRuntime, read_records
    from alkernels.loop.rundir import RunDirectory
    from alkernels.models import EGNN, EGNNConfig, PropertyRegressor

    config = LoopConfig(initial=0.1, query_size=0.1, rounds=2, epochs=1, seed=0, batch_size=6, lr=3e-2)
    loop = ActiveLearningLoop(
        TapModel, "random", TRAIN, TEST, config, out_dir="~/runs/al",
        runtime=LoopRuntime(eval_batch_size=8), collate_fn=toy_collate,
    )  # fmt: skip
    assert loop.out_dir == home / "runs" / "al"
    assert len(loop.run()) == 2
    assert len(read_records("~/runs/al/records.jsonl")) == 2
    assert RunDirectory("~/runs/al").path == home / "runs" / "al"

    small = EGNNConfig(num_layers=1, node_dim=8, edge_hidden=8, coord_hidden=8, node_hidden=8, proj_dim=8)
    model = PropertyRegressor(EGNN(small), ["a"], hidden=8)
    assert transfer.save(model, "~/ckpt/pt.ckpt") == home / "ckpt" / "pt.ckpt"
    loaded = transfer.load("~/ckpt/pt.ckpt")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    assert strategies.get("center_of_mass", cache_dir="~/orders").cache_dir == home / "orders"
    assert_no_tilde_folder()


def test_gp_out_dir_expands(home: Path) -> None:
    pytest.importorskip("gpytorch")
    from alkernels.gp import GPActiveLearner, GPConfig, GPFitConfig, GPLoopConfig

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    y = x[:, 0] + 0.1 * rng.normal(size=60)
    run = GPActiveLearner(
        x, y, np.arange(50), np.arange(50, 60), GPLoopConfig(initial=10, queries=3, seed=0),
        out_dir="~/gp", gp=GPConfig(fit=GPFitConfig(iterations=2)),
    )  # fmt: skip
    run.run()
    assert run.out_dir == home / "gp" and (home / "gp" / "records.jsonl").is_file()
    assert_no_tilde_folder()
