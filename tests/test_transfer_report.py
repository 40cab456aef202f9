"""The transfer report's findings start from the model-free reference: predicting the median."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from alkernels.experiments.transfer.report import _by_repeat, _findings  # noqa: E402


def _cells(scratch: float, tuned: float, median: float) -> list[dict]:
    """Two repeats at sizes 10 and 100 of scratch and one fine-tuned strategy from ``src``."""
    out = []
    for size in (10, 100):
        for repeat, wobble in enumerate((-0.01, 0.01)):
            out.append(
                {
                    "source": "none",
                    "strategy": "scratch",
                    "size": size,
                    "repeat": repeat,
                    "test_mae": scratch * size / 10 + wobble,
                    "median_mae": median * size / 10,
                }
            )
            out.append(
                {
                    "source": "src",
                    "strategy": "all",
                    "size": size,
                    "repeat": repeat,
                    "test_mae": tuned * size / 10 + wobble,
                    "median_mae": median * size / 10,
                }
            )
    return out


def test_findings_say_when_no_model_beats_the_median():
    findings, versus, _ = _findings(
        _by_repeat(_cells(scratch=1.2, tuned=1.1, median=1.0)), [["src"]], ["all"], [10, 100], True
    )
    first = findings[0]
    assert first.startswith("Against the median baseline (no model): 0 of 4 (model, size) cells")
    assert "say nothing about transfer" in first
    # the paired scratch comparison still follows: the same wobble in both, so a zero-width interval
    assert findings[1] == "`src` all vs scratch: lower at 10, 100; higher at no size; interval contains 0 at 0 of 2."
    assert versus["src"]["all"][10].mean == pytest.approx(100 * (1.1 / 1.2 - 1))


def test_findings_name_the_sizes_where_a_model_beats_the_median():
    findings, _, _ = _findings(
        _by_repeat(_cells(scratch=0.9, tuned=0.5, median=1.0)), [["src"]], ["all"], [10, 100], True
    )
    assert findings[0].startswith(
        "Against the median baseline (no model): 3 of 4 (model, size) cells"
    )  # not scratch at 10
    assert "say nothing" not in findings[0]


def test_detectable_percent_scales_the_paired_spread_to_the_reference():
    from alkernels.experiments.spacegroup.stats import detectable_effect
    from alkernels.experiments.transfer.report import detectable_percent

    ref = {0: 2.0, 1: 2.0, 2: 2.0, 3: 2.0}
    tuned = {0: 1.9, 1: 1.8, 2: 1.85, 3: 1.7, 7: 0.1}  # repeat 7 has no partner and is left out
    sd = float(np.std([-0.1, -0.2, -0.15, -0.3], ddof=1))
    assert detectable_percent(tuned, ref) == pytest.approx(detectable_effect(sd, 4) * 100 / 2.0)
    assert detectable_percent(tuned, ref, power=0.9) > detectable_percent(tuned, ref)
    assert detectable_percent({0: 1.0}, ref) is None  # one shared repeat: no spread to measure
    assert detectable_percent({0: 1.5, 1: 1.5}, ref) is None  # identical differences: no spread


def test_a_cell_is_at_the_budget_when_it_used_all_epochs_or_the_step_cap():
    from alkernels.experiments.transfer.report import at_budget

    capped = {"max_epochs": 150, "max_steps": 200}
    uncapped = {"max_epochs": 150, "max_steps": None}
    assert at_budget({"epochs": 14, "steps": 200}, capped)  # the step cap ended it
    assert not at_budget({"epochs": 14, "steps": 200}, uncapped)  # the patience ended it
    assert at_budget({"epochs": 150, "steps": 2250}, uncapped)
    assert not at_budget({"epochs": 64, "steps": 128}, capped)
