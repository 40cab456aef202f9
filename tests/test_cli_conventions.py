"""The command line's conventions: one-line usage errors before any work, help texts with
defaults, ``-v``/``-q`` through :mod:`logging`, progress bars only on a terminal, ``alkernels
demo`` as ``make demo``'s job, and the loop's log lines."""

from __future__ import annotations

import argparse
import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from alkernels import _logging
from alkernels.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``main(argv)`` in this process."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:  # usage errors, as argparse exits
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_error_line(code: int, err: str, message: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("alkernels: error: "), err
    assert message in lines[0], err


# -- usage errors -------------------------------------------------------------------------------
RUN = ["run", "--strategy", "margin", "--dataset", "perovskite:20", "--out", "{out}", "--cache-dir", "{cache}"]


def _folder(kind: str, tmp_path: Path) -> Path:
    """A folder that ``report`` or ``transfer --report-only`` must not take for a grid."""
    folder = tmp_path / kind
    folder.mkdir()
    if kind == "single-run":
        (folder / "config.json").write_text("{}")
        (folder / "records.jsonl").write_text("")
    elif kind == "transfer-study":
        (folder / "experiment.json").write_text("{}")
        (folder / "cells.jsonl").write_text("")
    elif kind == "grid":
        (folder / "runs.jsonl").write_text("")
    return folder


BAD = [
    (["bench-scoring", "--pool", "-5"], "argument --pool: must be >= 1, got -5"),
    (["bench-scoring", "--pool", "10", "--k", "20"], "--k 20 exceeds --pool 10"),
    (["demo", "--pool", "-5"], "unrecognized arguments: --pool -5"),
    (["demo", "--seeds", "0"], "argument --seeds: must be >= 1, got 0"),
    ([*RUN, "--rounds", "-1"], "argument --rounds: must be >= 1, got -1"),
    ([*RUN, "--epochs", "0"], "argument --epochs: must be >= 1, got 0"),
    ([*RUN, "--batch-size", "0"], "argument --batch-size: must be >= 1"),
    ([*RUN, "--lr", "0"], "argument --lr: must be > 0, got 0"),
    ([*RUN, "--dropout", "1"], "argument --dropout: must be in [0, 1), got 1"),
    ([*RUN, "--test-fraction", "1.0"], "argument --test-fraction: must be in (0, 1)"),
    ([*RUN, "--initial", "0"], "argument --initial: a count must be >= 1, got 0"),
    ([*RUN, "--query-size", "1.5"], "argument --query-size: a fraction must be in (0, 1], got 1.5"),
    ([*RUN, "--threads", "0"], "argument --threads: must be >= 1, got 0"),
    ([*RUN, "--workers", "many"], "argument --workers: expected an integer >= 1, got 'many'"),
    (["run", "--strategy", "margin", "--out", "{out}"], "the following arguments are required: --dataset"),
    (["run", "--strategy", "margin", "--dataset", "{missing}", "--out", "{out}"], "the file does not exist"),
    (
        ["run", "--strategy", "gp_variance", "--dataset", "perovskite:20", "--out", "{out}", "--cache-dir", "{cache}"],
        "--strategy gp_variance is a regression strategy: add --task regression",
    ),
    (
        ["run", "--task", "regression", "--strategy", "margin", "--target", "y", *RUN[3:]],
        "margin is a classification strategy: drop --task regression",
    ),
    (["reproduce", "--seeds", "0", "--out", "{out}"], "argument --seeds: must be >= 1, got 0"),
    (["reproduce", "--processes", "0", "--out", "{out}"], "argument --processes: must be >= 1, got 0"),
    (["reproduce", "--preset", "nope", "--out", "{out}"], "unknown spacegroup preset 'nope'"),
    (
        ["reproduce", "--study", "gp-regression", "--data-dir", "{missing}", "--out", "{out}"],
        "does not exist: the gp-regression preset 'perovskite' reads perov5_val.csv.gz, perov5_test.csv.gz",
    ),
    (["reproduce", "--embedding", "composition", "--out", "{out}"], "--embedding applies to the gp-regression study"),
    (
        ["reproduce", "--study", "gp-regression", "--embedding", "checkpoint:{missing}", "--out", "{out}"],
        "embedding checkpoint '",
    ),
    (
        ["reproduce", "--study", "gp-regression", "--preset", "perovskite-pretrained", "--out", "{out}"],
        "give --embedding checkpoint:PATH",
    ),
    (["report", "{missing}"], "does not exist"),
    (["report", "{single-run}"], "holds a single run of 'alkernels run'"),
    (["report", "{transfer-study}"], "rebuild its report with 'alkernels transfer --report-only --out"),
    (["report", "{empty}"], "holds no grid records"),
    (["transfer", "--report-only", "--out", "{missing}"], "is not a folder"),
    (["transfer", "--report-only", "--out", "{grid}"], "rebuild it with 'alkernels report"),
    (["transfer", "--out", "{out}"], "--pretrain, --pretrain-data, --finetune, --finetune-data required"),
    (["transfer", "--out", "{out}", "--repeats", "0"], "argument --repeats: must be >= 1, got 0"),
    (["transfer", "--out", "{out}", "--sizes", "0,10"], "argument --sizes: expected integers >= 1"),
    (["data", "synth", "--n", "-3", "--out", "{out}"], "argument --n: must be >= 1, got -3"),
    (["data", "build-graphs", "{missing}", "--cache-dir", "{cache}", "--max-edges", "0"], "argument --max-edges"),
    ([], "the following arguments are required: COMMAND"),
    (["nope"], "argument COMMAND: invalid choice: 'nope'"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a[:3]) + f" #{i}" for i, (a, _) in enumerate(BAD)])
def test_a_usage_error_is_one_line_before_any_work(argv, message, tmp_path, capsys):
    names = {"out": tmp_path / "out", "cache": tmp_path / "cache", "missing": tmp_path / "missing"}
    for kind in ("single-run", "transfer-study", "grid", "empty"):
        if "{" + kind + "}" in argv:
            names[kind] = _folder(kind, tmp_path)
    code, out, err = run_cli([a.format(**names) for a in argv], capsys)
    assert_one_error_line(code, err, message.format(**names))
    assert out == ""
    # checked before any data is generated or any folder made
    assert not names["out"].exists() and not names["cache"].exists() and not names["missing"].exists()


def _subprocess(*argv: str, env: dict | None = None, script: str | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", script] if script else [sys.executable, "-m", "alkernels", *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, env=env, cwd=ROOT)


def test_the_installed_command_exits_2_without_a_traceback(tmp_path):
    for argv, message in [
        (["bench-scoring", "--pool", "-5"], "argument --pool: must be >= 1, got -5"),
        (
            ["reproduce", "--study", "gp-regression", "--data-dir", str(tmp_path / "none"), "--out", str(tmp_path)],
            "--data-dir",
        ),
    ]:
        res = _subprocess(*argv)
        assert_one_error_line(res.returncode, res.stderr, message)
    res = _subprocess("--version")
    assert res.returncode == 0 and res.stdout.startswith("alkernels ")


def test_a_missing_extra_names_the_pip_command(tmp_path):
    from test_core_only import HIDE_EXTRAS  # hides every package outside the core's dependencies

    argv = ["data", "synth", "--n", "3", "--out", str(tmp_path / "x")]
    res = _subprocess(script=HIDE_EXTRAS + f"from alkernels.cli import main\nraise SystemExit(main({argv!r}))\n")
    assert_one_error_line(res.returncode, res.stderr, "pip install 'alkernels[data]'")


# -- help -----------------------------------------------------------------------------------------
def _commands(parser: argparse.ArgumentParser, name: str = "alkernels"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _commands(sub, f"{name} {sub_name}")


def test_every_flag_has_a_help_text_and_a_shown_default():
    for name, parser in _commands(build_parser()):
        text = parser.format_help()
        assert "``" not in text and "add_parser" not in text, name
        formatter = parser._get_formatter()
        for action in parser._actions:
            if not action.option_strings or action.dest in ("help", "version"):
                continue
            shown = formatter._expand_help(action) if action.help else ""
            assert shown, f"{name} {action.option_strings[0]} has no help"
            if action.nargs != 0 and not action.required:  # "required:": required unless --report-only
                assert "default" in shown.lower() or shown.startswith("required: "), f"{name}: {shown}"


def test_strategy_help_lists_every_strategy_per_task():
    from alkernels.gp import GP_STRATEGIES
    from alkernels.strategies import PAPER_STRATEGIES

    run = dict(_commands(build_parser()))["alkernels run"]
    (strategy,) = [a for a in run._actions if a.dest == "strategy"]
    classification, regression = strategy.help.split("; regression")
    assert all(name in classification for name in PAPER_STRATEGIES)
    assert all(name in regression for name in GP_STRATEGIES)


def test_transfer_shows_its_required_flags():
    transfer = dict(_commands(build_parser()))["alkernels transfer"]
    usage = transfer.format_usage()
    assert "--pretrain-data PATH[,PATH...]\n" in usage and "--finetune COL --finetune-data PATH --out OUT" in usage
    assert "alkernels transfer --report-only --out OUT" in usage
    text = transfer.format_help()
    assert "required (all but --out may be left out with --report-only):" in text
    assert text.count("required: ") == 5


def test_run_defaults_are_the_demo_presets():
    from alkernels.experiments.spacegroup.grid import PRESETS

    demo = PRESETS["demo"]
    args = build_parser().parse_args(["run", "--strategy", "margin", "--dataset", "perovskite:20", "--out", "x"])
    assert (args.lr, args.cutoff, args.epochs, args.rounds) == (demo.lr, demo.cutoff, demo.epochs, demo.rounds)
    assert (args.batch_size, args.dropout, args.passes) == (demo.batch_size, demo.dropout, demo.passes)
    assert (args.initial, args.query_size, args.graph_mode) == (demo.initial, demo.query_size, demo.graph_mode)
    assert args.test_fraction == demo.split[-1] and (args.lr, args.cutoff) == (1e-3, 4.5)


# -- demo and bench-scoring -----------------------------------------------------------------------
def test_demo_runs_make_demos_job(monkeypatch):
    from alkernels.cli import reproduce

    seen = []
    monkeypatch.setattr(reproduce, "run", lambda args: seen.append(args) or 0)
    assert main(["demo"]) == 0
    (args,) = seen
    assert (args.preset, args.strategies, args.seeds, args.reset) == ("demo", "margin,random", 1, "keep")
    assert (args.processes, args.out, args.study) == (2, "runs/demo", "spacegroup")
    recipe = (ROOT / "Makefile").read_text().split("\ndemo: $(STAMP)\n")[1].splitlines()[0]
    assert recipe.strip() == "$(BIN)/alkernels demo"


def test_bench_scoring_prints_every_acquisition_function(capsys):
    from alkernels import acquisition

    code, out, err = run_cli(["bench-scoring", "--pool", 50, "--passes", 2, "--classes", 5, "--k", 7], capsys)
    assert code == 0 and err == ""
    assert "pool T=2 N=50 C=5: all 8 strategies in one pass" in out
    assert all(f"\n{name} " in out for name in acquisition.STRATEGIES)


# -- logging ---------------------------------------------------------------------------------------
@pytest.fixture
def restore_logging():
    """The alkernels loggers as they were before the test configured them."""
    names = [_logging.ROOT, *_logging.RUN_LOGGERS]
    before = {n: (logging.getLogger(n).level, list(logging.getLogger(n).handlers)) for n in names}
    yield
    for name, (level, handlers) in before.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.handlers[:] = handlers


def test_verbosity_sets_the_levels(restore_logging, capsys):
    root, loop = logging.getLogger("alkernels"), logging.getLogger("alkernels.loop.loop")
    _logging.configure_cli(0)
    assert root.isEnabledFor(logging.INFO) and not root.isEnabledFor(logging.DEBUG)
    assert loop.isEnabledFor(logging.INFO)
    _logging.configure_cli(0, run_lines=False)  # a grid: no line per round of every run
    assert root.isEnabledFor(logging.INFO) and not loop.isEnabledFor(logging.INFO)
    _logging.configure_cli(1, run_lines=False)
    assert root.isEnabledFor(logging.DEBUG) and loop.isEnabledFor(logging.DEBUG)
    _logging.configure_cli(-1)
    assert not root.isEnabledFor(logging.INFO) and root.isEnabledFor(logging.WARNING)
    _logging.configure_cli(0)
    _logging.configure_cli(0)  # configuring twice keeps one handler
    logging.getLogger("alkernels.experiments").info("a line")
    logging.getLogger("alkernels.experiments").warning("take care")
    assert capsys.readouterr().err == "a line\nalkernels: warning: take care\n"


@pytest.mark.usefixtures("one_thread", "restore_logging")
@pytest.mark.parametrize("flag", [[], ["-q"]])
def test_quiet_keeps_the_results_and_drops_the_progress_lines(flag, tmp_path, capsys):
    argv = ["run", "--strategy", "random", "--dataset", "perovskite:12", "--out", tmp_path / "r", "--rounds", 2]
    argv += ["--epochs", 1, "--initial", 2, "--query-size", 2, "--backend", "torch", "--cache-dir", tmp_path / "c"]
    code, out, err = run_cli([*argv, "--workers", 1, *flag], capsys)  # -q after the sub-command
    last = out.splitlines()[-1].split()
    assert code == 0 and (last[0], last[2]) == ("1", "4")  # round 1 (of 0-1) with 4 labelled
    if flag:
        assert err == ""
    else:
        assert "dataset perovskite:12" in err and "round 1/1: 4 labelled" in err and "\r" not in err


# -- progress bars --------------------------------------------------------------------------------
def _synth_with_stderr_on(tty: bool, out: Path, *flags: str, **env: str) -> bytes:
    """What ``alkernels data synth`` (a bar over the generated structures) writes to stderr, a
    pseudo-terminal when ``tty``, else a pipe."""
    environ = {k: v for k, v in os.environ.items() if k not in ("TQDM_DISABLE", _logging.PROGRESS_ENV)} | env
    argv = [sys.executable, "-m", "alkernels", "data", "synth", "--generator", "perovskite", "--n", "4"]
    argv += ["--workers", "1", "--out", str(out), *flags]
    if not tty:
        res = subprocess.run(argv, capture_output=True, timeout=180, env=environ, cwd=ROOT)
        assert res.returncode == 0, res.stderr
        return res.stderr
    import fcntl
    import struct
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))  # a terminal 80 wide
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=slave, env=environ, cwd=ROOT)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the command exited and closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.wait(timeout=180) == 0
    return b"".join(chunks)


def test_progress_bars_only_on_a_terminal(tmp_path):
    pytest.importorskip("ase")
    assert _synth_with_stderr_on(False, tmp_path / "a") == b""  # stderr to a pipe or a file: no bar
    assert b"\rperovskite: 100%" in _synth_with_stderr_on(False, tmp_path / "b", "--progress")
    assert b"\rperovskite: 100%" in _synth_with_stderr_on(True, tmp_path / "c")
    assert b"perovskite:" not in _synth_with_stderr_on(True, tmp_path / "d", TQDM_DISABLE="1")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_settings(monkeypatch):
    monkeypatch.setattr(sys, "stderr", _Terminal())
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.delenv(_logging.PROGRESS_ENV, raising=False)
    assert _logging.bars_shown()
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert not _logging.bars_shown()
    monkeypatch.setenv(_logging.PROGRESS_ENV, "1")  # --progress wins over the environment
    assert _logging.bars_shown() and _logging.progress_bar(range(2), enabled=False).disable
    monkeypatch.setenv(_logging.PROGRESS_ENV, "0")  # --no-progress
    monkeypatch.delenv("TQDM_DISABLE")
    assert not _logging.bars_shown()


# -- the library's own output -----------------------------------------------------------------------
def _tiny_loop(out: Path, progress: bool):
    from alkernels.data import GraphDataset, random_graphs
    from alkernels.loop import ActiveLearningLoop, LoopConfig, LoopRuntime
    from alkernels.models import paper_classifier

    data = GraphDataset(random_graphs(10, atoms=(3, 6), seed=0), y=np.arange(10) % 3)
    return ActiveLearningLoop(
        lambda: paper_classifier(backend="torch"),
        "random",
        data[np.arange(8)],
        data[np.arange(8, 10)],
        LoopConfig(initial=2, query_size=2, rounds=2, epochs=1, batch_size=4),
        out_dir=out,
        runtime=LoopRuntime(progress=progress),
    )


@pytest.mark.usefixtures("one_thread")
def test_the_loop_logs_each_round_and_numbers_rounds_as_its_records(tmp_path, caplog, capsys, monkeypatch):
    monkeypatch.setenv(_logging.PROGRESS_ENV, "1")  # a bar, as on a terminal
    with caplog.at_level(logging.INFO, logger="alkernels.loop"):
        records = _tiny_loop(tmp_path / "run", progress=True).run()
    assert [r["round"] for r in records] == [0, 1]
    lines = [r.getMessage() for r in caplog.records if r.name == "alkernels.loop.loop"]
    assert lines[0].startswith("random, seed 0: starting with round 0 of rounds 0-1 (2 labelled)")
    assert lines[1].startswith("round 0/1: 2 labelled, accuracy") and lines[2].startswith("round 1/1: 4 labelled")
    bars = capsys.readouterr().err
    assert "round 0/1 (2 labelled)" in bars and "round 1/1 (4 labelled)" in bars


@pytest.mark.usefixtures("one_thread")
def test_the_fit_bar_names_its_score_and_its_mae(capsys, monkeypatch):
    from alkernels import transfer
    from alkernels.data import random_graphs
    from alkernels.models import EGNN, EGNNConfig

    monkeypatch.setenv(_logging.PROGRESS_ENV, "1")
    small = EGNNConfig(num_layers=1, node_dim=8, edge_hidden=8, coord_hidden=8, node_hidden=8, proj_dim=8)
    props = transfer.PropertyData(random_graphs(8, atoms=(3, 5), seed=0), {"a": np.arange(8.0)})
    fit = transfer.pretrain(EGNN(small), props, ["a"], config=transfer.TrainConfig(max_epochs=1), progress=True)
    bar = capsys.readouterr().err
    # the normalised score and the MAE in the target's units, each under its own name
    assert "val_score=" in bar and f"val_mae={fit.val_mae['a']:.4g}" in bar
