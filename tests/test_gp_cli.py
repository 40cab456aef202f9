"""``alkernels run --task regression``, ``reproduce --study gp-regression`` and ``report`` on a
tiny generated CSV, and every bad configuration."""

from __future__ import annotations

import gzip
import io
import json

import ase.io
import numpy as np
import pandas as pd
import pytest
from ase.build import bulk

pytest.importorskip("gpytorch")

from alkernels.loop import read_records  # noqa: E402
from helpers import CRYSTALS, assert_packed_report_rebuilds, cli

pytestmark = pytest.mark.timeout(300)


def write_csv(path, target="formation_energy_per_atom", nan_rows=(5,)):
    """40 small crystals as an MP-20-style CSV (cif column), with a smooth target and NaN rows."""
    rows = []
    for k, scale in enumerate(np.linspace(0.95, 1.05, 5)):
        for j, (formula, kind, a) in enumerate(CRYSTALS):
            atoms = bulk(formula, kind, a=a * scale)
            buf = io.BytesIO()
            ase.io.write(buf, atoms, format="cif")
            value = float(np.sin(j) + 2.0 * (scale - 1.0) + 0.01 * k)
            rows.append({"material_id": f"m-{k}-{j}", "cif": buf.getvalue().decode(), target: value})
    frame = pd.DataFrame(rows)
    frame.loc[list(nan_rows), target] = np.nan
    with gzip.open(path, "wt") as f:
        frame.to_csv(f, index=False)
    return path


@pytest.fixture(scope="module")
def csv(tmp_path_factory):
    return write_csv(tmp_path_factory.mktemp("data") / "tiny.csv.gz")


def run_args(csv, out, *extra):
    return [
        "run",
        "--task",
        "regression",
        "--target",
        "formation_energy_per_atom",
        "--dataset",
        csv,
        "--out",
        out,
        "--initial",
        6,
        "--queries",
        6,
        "--batch",
        2,
        "--fit-iterations",
        5,
        "--embedding",
        "composition",
        "--cache-dir",
        out.parent / "cache",
        "--workers",
        1,
        "--threads",
        1,
        *extra,
    ]


def test_regression_run_smoke(csv, tmp_path, capsys):
    assert cli(*run_args(csv, tmp_path / "x", "--strategy", "gp_batch_variance")) == 0
    captured = capsys.readouterr()
    printed = captured.out  # the results; the progress lines and warnings go to stderr
    assert "31 pool / 8 test structures" in captured.err and "alkernels: warning: skipped 1 rows" in captured.err
    assert "m-0-5: target 'formation_energy_per_atom' is missing or not a number: nan" in captured.err
    # step 0 scores the initial set; --queries 6 in batches of 2 make 3 more steps
    assert "6 queries in 3 steps of up to 2, after step 0" in printed
    records = read_records(tmp_path / "x" / "records.jsonl")
    assert [r["labelled_count"] for r in records] == [6, 8, 10, 12]
    assert printed.strip().splitlines()[-1].split()[:2] == ["3", "12"]
    config = json.loads((tmp_path / "x" / "config.json").read_text())
    assert config["task"] == "regression" and config["embedding"] == "composition" and config["skipped"] == 1
    assert str(tmp_path) not in json.dumps(config)
    # resuming a finished run changes nothing; a second run without --resume is refused
    assert cli(*run_args(csv, tmp_path / "x", "--strategy", "gp_batch_variance", "--resume")) == 0
    assert read_records(tmp_path / "x" / "records.jsonl") == records
    assert cli(*run_args(csv, tmp_path / "x", "--strategy", "gp_batch_variance")) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_regression_run_with_a_trained_encoder_then_its_checkpoint(csv, tmp_path):
    args = run_args(csv, tmp_path / "t", "--strategy", "gp_variance", "--embedding-epochs", 1, "--backend", "torch")
    args[args.index("composition")] = "train-initial"
    assert cli(*args) == 0
    encoders = list((tmp_path / "cache").glob("encoder-*.pt"))
    assert len(encoders) == 1
    args = run_args(csv, tmp_path / "c", "--strategy", "random", "--backend", "torch")
    args[args.index("composition")] = f"checkpoint:{encoders[0]}"
    assert cli(*args) == 0
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    assert config["embedding"] == "checkpoint" and config["checkpoint"] == encoders[0].name


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--strategy", "gp_variance", "--target", "nope"], "target column 'nope' not found"),
        (["--strategy", "gp_variance", "--queries", 30], "the pool has 31"),
        (["--strategy", "gp_variance", "--kernel", "cubic"], "unknown kernel 'cubic'"),
        (["--strategy", "margin"], "unknown regression strategy 'margin'"),
        (["--strategy", "gp_variance", "--noise", "loud"], "--noise must be 'learn', 0 or a positive variance"),
        (["--strategy", "gp_variance", "--embedding", "megnet"], "unknown embedding 'megnet'"),
        (["--strategy", "gp_variance", "--embedding", "checkpoint:/nonexistent.pt"], "does not exist"),
        (["--strategy", "gp_variance", "--gp-method", "sparse", "--noise", "0"], "needs noise > 0"),
    ],
)
def test_regression_bad_configuration_is_a_clear_error(csv, tmp_path, capsys, extra, message):
    args = run_args(csv, tmp_path / "x", *extra)
    if "--target" in extra:
        k = args.index("--target")
        del args[k : k + 2]
        args += ["--target", extra[extra.index("--target") + 1]]
    assert cli(*args) == 2
    assert message in capsys.readouterr().err


def test_regression_needs_a_target_and_a_file(csv, tmp_path, capsys):
    args = run_args(csv, tmp_path / "x", "--strategy", "gp_variance")
    k = args.index("--target")
    del args[k : k + 2]
    assert cli(*args) == 2
    assert "needs --target COLUMN" in capsys.readouterr().err
    args = run_args(tmp_path / "missing.csv", tmp_path / "y", "--strategy", "gp_variance")
    assert cli(*args) == 2
    assert "does not exist" in capsys.readouterr().err


def test_reproduce_then_report_a_regression_grid(csv, tmp_path, capsys):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "mp20_sample.csv.gz").write_bytes(csv.read_bytes())
    out = tmp_path / "grid"
    args = [
        "reproduce",
        "--study",
        "gp-regression",
        "--preset",
        "mp20-composition",
        "--queries",
        6,
        "--seeds",
        2,
        "--strategies",
        "gp_variance,gp_batch_variance:3,random",
        "--data-dir",
        data_dir,
        "--out",
        out,
        "--cache-dir",
        tmp_path / "cache",
        "--workers",
        1,
        "--threads",
        1,
    ]
    assert cli(*args) == 0
    meta = json.loads((out / "experiment.json").read_text())
    assert meta["study"] == "gp-regression" and meta["n_train"] == 31 and meta["skipped"] == 1
    assert len(list(out.glob("runs/*/seed*/records.jsonl"))) == 6
    table = (out / "table.md").read_text()
    assert "| gp_batch_variance (b=3) |" in table and "Labels needed to reach random's final MAE" in table
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["reach"]["arms"]) == {"gp_variance-b1", "gp_batch_variance-b3", "random-b1"}
    # random's mean curve reaches its own final MAE at the end at the latest
    assert 0 <= summary["reach"]["arms"]["random-b1"]["queries"] <= 6
    assert (out / "mae.png").stat().st_size > 0
    # report rebuilds the same table; the committed compact form alone does too, with no machine paths
    (out / "table.md").unlink()
    assert cli("report", out) == 0
    assert (out / "table.md").read_text() == table
    assert_packed_report_rebuilds(out, tmp_path, table)
    capsys.readouterr()
    assert cli(*args) == 0  # everything finished: only the report is rewritten
    assert "6 runs (6 already finished)" in capsys.readouterr().err


def test_reproduce_rejects_unknown_presets_and_arms(tmp_path, capsys):
    assert cli("reproduce", "--study", "gp-regression", "--preset", "quick", "--out", tmp_path / "g") == 2
    assert "unknown gp-regression preset 'quick'" in capsys.readouterr().err
    assert cli("reproduce", "--study", "gp-regression", "--strategies", "gp_variance:x", "--out", tmp_path / "g") == 2
    assert "expected STRATEGY or STRATEGY:BATCH" in capsys.readouterr().err
