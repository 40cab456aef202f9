"""The scripts under examples/ run, at tiny sizes, and do what their docstrings say."""

from __future__ import annotations

import importlib.util
import runpy
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch.utils.data import DataLoader

from alkernels import acquisition as acq

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

pytestmark = pytest.mark.timeout(120)


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pytorch_streaming_runs_as_a_script(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    argv = [
        "pytorch_streaming.py",
        "--pool",
        "400",
        "--initial",
        "20",
        "--k",
        "15",
        "--rounds",
        "2",
    ]
    monkeypatch.setattr(sys, "argv", argv + ["--passes", "4", "--batch-size", "64", "--epochs", "2"])
    runpy.run_path(str(EXAMPLES / "pytorch_streaming.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "round 1:" in out and "50 labelled" in out


def test_pytorch_streaming_rounds() -> None:
    example = load("pytorch_streaming")
    records = example.main(
        [
            "--pool",
            "300",
            "--initial",
            "10",
            "--k",
            "20",
            "--rounds",
            "3",
            "--passes",
            "3",
            "--epochs",
            "2",
            "--strategy",
            "margin",
        ]
    )
    assert [r["labelled"] for r in records] == [30, 50, 70]
    assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in records)
    with pytest.raises(SystemExit, match="exceeds --pool"):
        example.main(["--pool", "50", "--initial", "10", "--k", "20", "--rounds", "3"])


@pytest.mark.parametrize("strategy", ["bald", "margin", "expected_entropy"])
def test_pytorch_streaming_query_equals_select_on_stacked_logits(strategy: str) -> None:
    example = load("pytorch_streaming")
    data, _ = example.blobs(500, 1, classes=7, features=5, seed=3)
    torch.manual_seed(0)
    model = example.MLP(5, 7)
    loader = DataLoader(data, batch_size=64, shuffle=False)
    torch.manual_seed(1)
    positions, scores = example.query(model, loader, strategy, k=40, passes=5)
    torch.manual_seed(1)  # the same dropout masks, batch by batch
    stacked = torch.cat([example.mc_logits(model, x, 5) for x, _ in loader], dim=1)
    assert stacked.shape == (5, 500, 7)
    want_idx, want_val = acq.select(stacked, strategy, 40)
    assert torch.equal(positions, want_idx) and torch.equal(scores, want_val)


def test_mc_logits_keeps_non_dropout_layers_in_eval_mode() -> None:
    example = load("pytorch_streaming")
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 3)
    )
    x = torch.randn(16, 4)
    out = example.mc_logits(model, x, passes=6)
    assert out.shape == (6, 16, 3)
    assert not torch.allclose(out[0], out[1])  # dropout was active
    assert not model.training and not model[1].training  # everything back in eval mode
    single = example.mc_logits(model, x, passes=1)
    assert torch.equal(single[0], model(x))  # one pass is the deterministic forward


def test_forces_example_trains_and_the_force_error_falls() -> None:
    pytest.importorskip("ase")
    example = load("forces")
    records = example.main(["--structures", "80", "--epochs", "4", "--layers", "2"])
    assert [r["epoch"] for r in records] == [0, 1, 2, 3, 4]
    assert min(r["force_mae"] for r in records[1:]) < 0.9 * records[0]["force_mae"]
