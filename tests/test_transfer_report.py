"""The transfer report's findings start from the model-free reference: predicting the median."""

from __future__ import annotations

import pytest

pytest.importorskip("matplotlib")
from alkernels.experiments.transfer.report import _findings, aggregate  # noqa: E402


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
    agg = aggregate(_cells(scratch=1.2, tuned=1.1, median=1.0))
    findings = _findings(agg, [["src"]], ["all"], [10, 100], True, {"src": {10: "all", 100: "all"}})
    first = findings[0]
    assert first.startswith("Against the median baseline (no model): the best model's mean test MAE is lower at 0 of 2")
    assert "10: +10.0% (`src` all)" in first and "say nothing about transfer" in first
    # the scratch comparison still follows
    assert any(f.startswith("PT-FT vs scratch, `src`") for f in findings[1:])


def test_findings_name_the_sizes_where_a_model_beats_the_median():
    agg = aggregate(_cells(scratch=0.9, tuned=0.5, median=1.0))
    first = _findings(agg, [["src"]], ["all"], [10, 100], True, {"src": {10: "all", 100: "all"}})[0]
    assert "lower at 2 of 2 sizes (10: -50.0% (`src` all), 100: -50.0% (`src` all))." in first
    assert "say nothing" not in first
