"""``benchmarks/report.py`` on synthetic GP loop result files: the "GP active-learning loop"
section of the benchmarks README, its numbers, the plot, and the GP headline row in both READMEs
(no benchmark is run)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report() -> Any:
    """``benchmarks/report.py`` as a module (the benchmarks folder need not be importable)."""
    spec = importlib.util.spec_from_file_location("alk_bench_report", ROOT / "benchmarks" / "report.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _environment(preset: str, threads: int) -> dict[str, Any]:
    return {
        "date": "2026-01-02T03:04:05+00:00",
        "preset": preset,
        "device": "cpu",
        "device_name": "Test CPU",
        "cpu": "Test CPU",
        "cpu_count": 2,
        "threads": threads,
        "omp_num_threads": str(threads),
        "extension": True,
        "fused_backend": "cpu",
        "commit": "0123456789abcdef",
        "platform": "Linux",
        "python": "3.11.0",
        "versions": {"torch": "2.13.0", "gpytorch": "1.15.2", "scipy": "1.16.0"},
        "load_average": [0.5, 0.75],
    }


def _gp_result(
    report: Any, dataset: str, preset: str, threads: int, queries: int, initial: int, numpy_ratio: float
) -> dict[str, Any]:
    """A GP loop result of ``benchmarks/test_gp.py``'s format: ours's loop 2 s; numpy_refit's
    loop 2 s x ``numpy_ratio``; gpytorch_refit 50x; gpytorch_fantasy timed at one step only."""
    steps = [1, queries // 2, queries - 1]
    return {
        "format": report.GP_FORMAT,
        "environment": _environment(preset, threads),
        "sizes": {"dataset": dataset, "queries": queries, "sample_steps": steps, "step_rounds": 1},
        "ours": {
            "workload": dataset,
            "queries": queries,
            "initial": initial,
            "tracked": 1500,
            "dim": 32,
            "loop_seconds": 2.0,
            "picks": list(range(queries)),
            "step_seconds": {str(s): 0.0004 + 1e-7 * s for s in steps},
        },
        "peers": {
            "numpy_refit": {
                "step_seconds": {str(s): 0.010 * (i + 1) for i, s in enumerate(steps)},
                "loop_seconds_integrated": 2.0 * numpy_ratio,
                "ratio_to_ours": numpy_ratio,
                "same_picks": True,
            },
            "gpytorch_refit": {
                "step_seconds": {str(s): 0.1 for s in steps},
                "loop_seconds_integrated": 100.0,
                "ratio_to_ours": 50.0,
                "same_picks": True,
            },
            "gpytorch_fantasy": {"step_seconds": {str(steps[0]): 0.2}, "same_picks": False},
        },
        "small": {
            "ours": {"loop_seconds": 0.05, "queries": 60, "initial": 30, "tracked": 400, "same_picks": True},
            "numpy_refit": {"loop_seconds": 0.15, "queries": 60, "initial": 30, "tracked": 400, "same_picks": True},
        },
        "memory": {
            "measured": [
                {
                    "dtype": "float64",
                    "n": 1500,
                    "p": 3000,
                    "d": 128,
                    "initial_block": 150,
                    "formula_bytes": 64 * 2**20,
                    "held_bytes": 66 * 2**20,
                    "peak_bytes_updates": 66 * 2**20,
                    "peak_bytes_predict_4096": 150 * 2**20,
                }
            ],
            "n_max_24GiB": {"float64": {"0": 56690, "10000": 51893}, "float32": {"0": 80199, "10000": 75343}},
        },
    }


def _section(text: str, title: str) -> str:
    """The Markdown section ``## title`` of ``text`` (up to the next ``## ``)."""
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def _row(text: str, first_cell: str) -> list[str]:
    """The cells of the first table row of ``text`` whose first cell starts with ``first_cell``."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].startswith(first_cell):
            return cells
    raise AssertionError(f"no table row starting with {first_cell!r}")


def test_gp_section_and_headline(tmp_path: Path, report: Any) -> None:
    pytest.importorskip("matplotlib")
    results = tmp_path / "results"
    results.mkdir()
    quick = _gp_result(report, "synthetic", "quick", 1, queries=300, initial=120, numpy_ratio=37.5)
    full = _gp_result(report, "perovskite", "full", 1, queries=3000, initial=606, numpy_ratio=412.3)
    (results / "gp_synthetic_cpu_1t.json").write_text(json.dumps(quick))
    (results / "gp_perovskite_cpu_1t.json").write_text(json.dumps(full))
    # the format of the GP benchmark before it recorded one: listed, not rendered
    older = {k: v for k, v in quick.items() if k != "format"}
    (results / "gp_synthetic_cpu_2t.json").write_text(json.dumps(older))
    root_readme = tmp_path / "ROOT.md"
    root_readme.write_text(f"# Top\n\n{report.HEADLINE_START}\nold\n{report.HEADLINE_END}\n\nrest\n")
    readme, plots = tmp_path / "README.md", tmp_path / "plots"

    report.main(
        ["--results", str(results), "--readme", str(readme), "--plots", str(plots), "--root-readme", str(root_readme)]
    )
    text = readme.read_text()

    gp = _section(text, "GP active-learning loop")
    assert gp.index("### `gp_perovskite_cpu_1t.json`") < gp.index("### `gp_synthetic_cpu_1t.json`")
    assert "gp_synthetic_cpu_2t.json" not in gp
    assert "gp_synthetic_cpu_2t.json" in _section(text, "Other result files")
    perov = gp[gp.index("### `gp_perovskite_cpu_1t.json`") : gp.index("### `gp_synthetic_cpu_1t.json`")]
    assert "**Test CPU** (cpu, 2 CPUs), 1 thread (OMP_NUM_THREADS=1)" in perov
    assert "gpytorch 1.15.2" in perov and "2026-01-02T03:04:05+00:00" in perov
    assert "load average 0.5 at start, 0.75 at end" in perov and "`--bench-size full`" in perov
    assert "3,000 queries from n = 606 labelled, 1,500 tracked points" in perov
    header = _row(perov, "implementation")
    assert header == [
        "implementation",
        "loop s",
        "ours faster by",
        "ms/query at n = 607",
        "ms/query at n = 2,106",
        "ms/query at n = 3,605",
        "same picks",
    ]
    assert _row(perov, "ours:") == [report.GP_IMPLEMENTATIONS["ours"], "2.00", "–", "0.40", "0.55", "0.70", "–"]
    assert _row(perov, "(b)") == [
        report.GP_IMPLEMENTATIONS["numpy_refit"],
        "825 (integrated)",
        "412×",
        "10.0",
        "20.0",
        "30.0",
        "yes",
    ]
    assert _row(perov, "(a)")[1:3] == ["100 (integrated)", "50.0×"]
    fantasy = [report.GP_IMPLEMENTATIONS["gpytorch_fantasy"], "–", "–", "200", "–", "–", "**no**"]
    assert _row(perov, "(c)") == fantasy
    # table order: ours, (a), (b), (c)
    assert perov.index("| ours:") < perov.index("| (a)") < perov.index("| (b)") < perov.index("| (c)")
    small = perov[perov.index("Direct whole loop") :]
    assert _row(small, "(b)") == [report.GP_IMPLEMENTATIONS["numpy_refit"], "0.150", "3.00×", "yes"]
    assert _row(small, "ours:")[1:] == ["0.050", "–", "–"]
    assert _row(perov, "float64") == ["float64", "1,500", "3,000", "128", "64.0", "66.0 (+3.1%)", "66.0", "150.0"]
    assert _row(perov, "10,000") == ["10,000", "75,343", "51,893"]
    assert "![gp_perovskite_cpu_1t_per_query](plots/gp_perovskite_cpu_1t_per_query.png)" in perov
    assert (plots / "gp_perovskite_cpu_1t_per_query.png").stat().st_size > 0
    assert (plots / "gp_synthetic_cpu_1t_per_query.png").exists()
    # the printed table of benchmarks/test_gp.py is this renderer's output
    assert "\n".join(report.render_gp_result(full)) in perov

    # the headline: from the larger loop (3,000 queries), naming its file, in both READMEs
    figure = "GP AL loop: incremental update vs the study's per-query refit (`numpy_refit`), whole loop time"
    row = _row(_section(text, "Headline figures"), figure)
    assert row[1] == "412× (perovskite, 3,000 queries from n = 606; refit integrated over 3 sampled steps)"
    assert row[2] == "`gp_perovskite_cpu_1t.json` (Test CPU, 1 thread, full)"
    root = root_readme.read_text()
    assert "old" not in root and root.endswith(f"{report.HEADLINE_END}\n\nrest\n")
    assert _row(root, figure) == row


def test_gp_headline_needs_the_refit_ratio(report: Any, tmp_path: Path) -> None:
    """Without two timed steps of numpy_refit there is no ratio: no GP headline, and the section
    still renders."""
    doc = _gp_result(report, "synthetic", "quick", 1, queries=300, initial=120, numpy_ratio=37.5)
    rows = report.headline_rows({}, {}, {"gp_synthetic_cpu_1t": doc}, tmp_path)
    assert [r[0].split("`")[1] for r in rows] == ["gpytorch_refit", "numpy_refit"]
    for peer in ("numpy_refit", "gpytorch_refit"):
        del doc["peers"][peer]["ratio_to_ours"], doc["peers"][peer]["loop_seconds_integrated"]
    assert report.headline_rows({}, {}, {"gp_synthetic_cpu_1t": doc}, tmp_path) == []
    lines = report.render_gp_result(doc)
    numpy_row = next(line for line in lines if line.startswith("| (b)"))
    assert "| – | – | 10.0 | 20.0 | 30.0 | yes |" in numpy_row
    assert report.render_gp({}, tmp_path, tmp_path)[-2].startswith("No GP results yet")


def test_headline_never_comes_from_a_quick_run(report: Any) -> None:
    """A quick run names its file by size and lands in an ignored folder; should one be
    committed anyway, the headline ignores it and takes the full one."""
    group = {"table": "score + top-k", "row": "bald", "members": {"eager": {"speedup": 9.0}}}
    quick = {
        "environment": _environment("quick", 2),
        "suites": {"acquisition": {"groups": {"acquisition/score + top-k/bald": group}}},
    }
    assert report._preferred({"acquisition_cpu_2t_quick": quick}, "acquisition", lambda data: True) is None
    full = {"environment": _environment("full", 1), "suites": quick["suites"]}
    picked = report._preferred(
        {"acquisition_cpu_2t_quick": quick, "acquisition_cpu_1t_full": full}, "acquisition", lambda data: True
    )
    assert picked is not None and picked[0] == "acquisition_cpu_1t_full"


def test_benchmark_summaries_default_to_an_ignored_folder_named_by_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import conftest

    assert conftest.result_name("egnn", "cpu", 2, "quick") == "egnn_cpu_2t_quick.json"
    assert conftest.result_name("egnn", "cpu", 2, "full") != conftest.result_name("egnn", "cpu", 2, "quick")
    assert "benchmarks/results/local/" in (ROOT / ".gitignore").read_text().splitlines()


def test_roofline_work_model_by_hand():
    """One edge and no atoms: 5 layers x forward+backward (4x) x 2 FLOP per multiply-add x the
    fused per-edge multiply-adds (the r^2 column of the first edge Linear, 128 x 128 twice, and the
    coordinate MLP 128 x 64 + 64 x 64 + 64 x 1); one atom and no edge: 3x the per-node work."""
    from benchmarks.roofline import flops_per_pass

    per_edge = 128 + 2 * 128 * 128 + 128 * 64 + 64 * 64 + 64
    assert flops_per_pass(0, 1) == 5 * 2 * 4 * per_edge
    per_node = 64 * 128 + 160 * 128 + 2 * 128 * 128 + 128 * 32
    assert flops_per_pass(1, 0) == 5 * 2 * 3 * per_node


def test_the_step_profile_in_the_docs_is_the_committed_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/performance.md's profile block is what benchmarks/profile_training.py renders from the
    committed result (no hand edits), whose parts add up to its instrumented totals."""
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import profile_training

    result = json.loads((ROOT / "benchmarks" / "results" / "profile_cpu_2t.json").read_text())
    doc = (ROOT / "docs" / "performance.md").read_text()
    block = doc.split(profile_training.START, 1)[1].split(profile_training.END, 1)[0]
    assert block.strip() == profile_training.table(result).strip()
    s = result["training"]["seconds"]
    parts = s["data"] + s["encoder forward"] + s["head and loss"] + s["backward"] + s["optimizer"]
    assert parts <= s["total"] and parts > 0.95 * s["total"]
    assert s["edge forward"] < s["encoder forward"] and s["edge backward"] < s["backward"]
    p = result["pool"]["seconds"]
    assert p["data"] + p["encoder"] + p["head passes"] + p["selection"] <= p["total"]
    opt = result["training"]["optimizer"]
    assert opt["multi-tensor"]["max_abs_weight_diff"] == 0.0 and opt["fused"]["max_abs_weight_diff"] > 0.0
