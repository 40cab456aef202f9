"""``alkernels transfer`` at tiny sizes: outputs, resuming, and clear errors for bad settings."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

ase_io = pytest.importorskip("ase.io")
pd = pytest.importorskip("pandas")
from ase.build import bulk  # noqa: E402

from alkernels.cli import main  # noqa: E402
from alkernels.experiments.transfer.study import CELL_KEYS, read_cells  # noqa: E402
from helpers import CRYSTALS  # noqa: E402

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.timeout(240)]


def _csv(path, scales, columns):
    rows = []
    for scale in scales:
        for formula, kind, a in CRYSTALS[:7]:
            atoms = bulk(formula, kind, a=a * scale)
            buf = io.BytesIO()
            ase_io.write(buf, atoms, format="cif")
            rows.append({"cif": buf.getvalue().decode(), "volume": atoms.get_volume() / len(atoms), "n": len(atoms)})
    frame = pd.DataFrame(rows)
    for name, fn in columns.items():
        frame[name] = fn(frame)
    frame.drop(columns=["volume", "n"]).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("transfer-data")
    pt = _csv(
        folder / "pt.csv",
        np.linspace(0.94, 1.06, 5),
        {"p1": lambda f: f["volume"], "p2": lambda f: np.where(np.arange(len(f)) % 2, f["n"], np.nan)},
    )
    ft = _csv(
        folder / "ft.csv",
        np.linspace(0.95, 1.05, 4),
        {"q": lambda f: 0.1 * f["volume"] ** 1.5, "empty": lambda f: np.full(len(f), np.nan)},
    )
    return {"pt": pt, "ft": ft, "folder": folder}


def args(files, out, *extra):
    base = [
        "transfer",
        "--pretrain",
        "p1",
        "--pretrain",
        "p1,p2",
        "--pretrain-data",
        files["pt"],
        "--finetune",
        "q",
        "--finetune-data",
        files["ft"],
        "--sizes",
        "4,8",
        "--repeats",
        "2",
        "--strategies",
        "scratch,all,head,new_head_frozen_trunk,new_head_frozen_embedding,last_k_layers=1",
        "--init-head",
        "p1",
        "--test-size",
        "6",
        "--pt-epochs",
        "2",
        "--ft-epochs",
        "2",
        "--workers",
        "1",
        "--cache-dir",
        files["folder"] / "cache",
        "--out",
        out,
    ]
    return [str(a) for a in base + list(extra)]


def without_times(cells):
    return [{k: v for k, v in c.items() if k not in ("seconds", "cpu_seconds")} for c in cells]


def test_transfer_study_writes_its_report_and_resumes(files, tmp_path, capsys):
    out = tmp_path / "study"
    assert main(args(files, out)) == 0
    cells = read_cells(out)
    # 2 sizes x 2 repeats x (scratch once + 5 strategies x 2 sources)
    assert len(cells) == 44 and all(tuple(c) == CELL_KEYS for c in cells)
    assert {c["source"] for c in cells} == {"none", "p1", "p1+p2"}
    assert all(np.isfinite(c["test_mae"]) and c["n_train"] + c["n_val"] == c["size"] for c in cells)
    for name in ("table.md", "summary.json", "mae_vs_size.png", "sources_vs_size.png", "experiment.json"):
        assert (out / name).is_file(), name
    table = (out / "table.md").read_text()
    assert "## Pre-trained on `p1+p2`" in table and "## Change of the test MAE against scratch" in table
    # every fine-tuned model against scratch, paired over the subsamples; MPT against its single source
    fine_tuned = ("all", "head", "new_head_frozen_trunk", "new_head_frozen_embedding", "last_k_layers=1")
    assert all(f"| `{src}` | {name} |" in table for src in ("p1", "p1+p2") for name in fine_tuned)
    assert "MPT `p1+p2` vs `p1`, all:" in table
    summary = json.loads((out / "summary.json").read_text())
    assert {"pretraining", "paired_vs_scratch_percent", "mae", "findings"} <= set(summary)
    for name in ("experiment.json", "summary.json", "table.md", "cells.jsonl"):
        assert str(tmp_path) not in (out / name).read_text(), f"{name} records a machine path"
    assert len(list((out / "pretrained").glob("*.ckpt"))) == 2

    # a finished study is skipped; an interrupted one resumes and recomputes the same records
    assert main(args(files, out)) == 0
    assert "44 cells, 44 already finished" in capsys.readouterr().err
    lines = (out / "cells.jsonl").read_text().splitlines()
    (out / "cells.jsonl").write_text("\n".join(lines[:-5]) + "\n" + lines[-5][:20])  # a torn last line
    assert main(args(files, out)) == 0
    assert without_times(read_cells(out)) == without_times(cells)

    # other settings in the same folder are refused; the report can be rebuilt alone
    assert main(args(files, out, "--seed", "1")) == 2
    assert "other settings (seed differ)" in capsys.readouterr().err
    (out / "table.md").unlink()
    assert main(["transfer", "--report-only", "--out", str(out)]) == 0
    results = lambda text: text.split("## Pre-training")[0]  # noqa: E731  (the times grew with the re-runs)
    assert results((out / "table.md").read_text()) == results(table)


@pytest.mark.parametrize(
    "change, message",
    [
        (["--pretrain", "nope"], "pre-training column 'nope' is in none of the pre-training files"),
        (["--finetune", "nope"], "fine-tuning column 'nope' is not in ft.csv"),
        (["--finetune", "empty"], "has no labels in column 'empty'"),
        (["--sizes", "4,40"], "size 40 is larger than the fine-tuning pool"),
        (["--strategies", "scratch,freeze_everything"], "unknown fine-tuning strategy 'freeze_everything'"),
        (["--strategies", "all", "--init-head", "p2x"], "source 'p1+p2' has 2 heads"),
        (["--sizes", "1,4"], "sizes must be integers >= 2"),
    ],
)
def test_bad_settings_get_a_clear_error(files, tmp_path, capsys, change, message):
    argv = args(files, tmp_path / "bad")
    flag = change[0]
    if flag == "--pretrain":  # replace both sources
        argv = [a for k, a in enumerate(argv) if not (a == "--pretrain" or (k and argv[k - 1] == "--pretrain"))]
        argv += change
    else:
        for k in range(0, len(change), 2):
            i = argv.index(change[k])
            argv[i + 1] = change[k + 1]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("alkernels: error:") and message in err, err
    assert not (tmp_path / "bad" / "cells.jsonl").exists()
