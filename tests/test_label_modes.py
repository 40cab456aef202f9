"""Coarser label modes of the space-group study: crystal systems and Bravais lattices."""

from __future__ import annotations

import json

import numpy as np
import pytest

from alkernels.data import BRAVAIS_LATTICES, CRYSTAL_SYSTEMS, LABEL_MODES, class_labels

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.timeout(120)]

ALL = np.arange(1, 231)


def test_crystal_systems_by_number_ranges():
    systems = class_labels(ALL, "crystal_system")
    starts = [1, 3, 16, 75, 143, 168, 195]
    assert [int(np.argmax(systems == k)) + 1 for k in range(7)] == starts
    assert np.all(np.diff(systems) >= 0)
    assert [CRYSTAL_SYSTEMS[i] for i in class_labels([2, 14, 62, 139, 166, 194, 225], "crystal_system")] == list(
        CRYSTAL_SYSTEMS
    )


def test_bravais_lattices_count_the_textbook_groups():
    counts = dict(zip(BRAVAIS_LATTICES, np.bincount(class_labels(ALL, "bravais"), minlength=14).tolist()))
    assert counts == {
        "aP": 2,
        "mP": 8,
        "mS": 5,
        "oP": 30,
        "oS": 15,
        "oI": 9,
        "oF": 5,
        "tP": 49,
        "tI": 19,
        "hR": 7,
        "hP": 45,
        "cP": 15,
        "cI": 10,
        "cF": 11,
    }
    named = {n: BRAVAIS_LATTICES[c] for n, c in zip(ALL, class_labels(ALL, "bravais"))}
    assert [named[n] for n in (12, 38, 62, 139, 160, 194, 221, 225, 229)] == [
        "mS",
        "oS",
        "oP",
        "tI",
        "hR",
        "hP",
        "cP",
        "cF",
        "cI",
    ]


def test_spacegroup_mode_and_errors():
    assert class_labels([1, 225], "spacegroup").tolist() == [0, 224]
    assert LABEL_MODES == {"spacegroup": 230, "crystal_system": 7, "bravais": 14}
    with pytest.raises(ValueError, match="label mode must be one of"):
        class_labels([1], "lattice")
    with pytest.raises(ValueError, match="1..230"):
        class_labels([0, 5], "bravais")


def test_run_with_a_coarse_label_mode(tmp_path):
    from alkernels.cli import main
    from alkernels.data import load_split

    data = load_split("perovskite:40", cache_dir=tmp_path / "cache", workers=1, label_mode="crystal_system")
    assert data.num_classes == 7
    y = np.array([data.train[i].y for i in range(len(data.train))])
    assert np.array_equal(y, class_labels(data.train_labels, "crystal_system"))
    args = [
        "run",
        "--strategy",
        "margin",
        "--dataset",
        "perovskite:40",
        "--label-mode",
        "crystal_system",
        "--out",
        tmp_path / "r",
        "--rounds",
        2,
        "--epochs",
        1,
        "--initial",
        4,
        "--query-size",
        4,
        "--backend",
        "torch",
        "--cache-dir",
        tmp_path / "cache",
        "--workers",
        1,
    ]
    assert main([str(a) for a in args]) == 0
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["label_mode"] == "crystal_system"
    from alkernels.loop.rundir import RunDirectory

    state = RunDirectory(tmp_path / "r").load_checkpoint()
    assert state["weights"]["model"]["out.weight"].shape[0] == 7
