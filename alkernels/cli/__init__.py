"""The ``alkernels`` command line: one sub-command per module of this package, and the options
every sub-command shares (``--version``, ``-v``/``-q``, ``--progress``/``--no-progress``)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

from alkernels.cli import bench_scoring, data, demo, report, reproduce, run, transfer
from alkernels.distributed.group import DistributedError

COMMANDS = [demo, data, run, reproduce, report, transfer, bench_scoring]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, unless its help already says it (or it has none: a switch,
    a required option, a default of None, which the help text explains)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text.lower()
            or action.required
            or action.nargs == 0
            or action.default in (None, argparse.SUPPRESS)
            or not action.option_strings
        ):
            return text
        return text + " (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one ``alkernels: error:`` line (exit 2) and
    whose help shows the defaults."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"alkernels: error: {message} (see '{self.prog} --help')\n")


def add_output_args(p: argparse.ArgumentParser, *, top: bool) -> None:
    """``-v``, ``-q`` and ``--progress``/``--no-progress``: on the top-level parser with their
    defaults (``top``), and on each sub-command without, so that they may follow it."""

    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    g = p.add_argument_group("output")
    g.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=default(0),
        help="debug lines too, among them every round of every run of a grid (default: progress information on stderr)",
    )
    g.add_argument(
        "-q",
        "--quiet",
        action="count",
        default=default(0),
        help="warnings and errors only on stderr; results still go to stdout (default: progress information on stderr)",
    )
    g.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=default(None),
        help="draw progress bars on stderr, or never (default: only when stderr is a terminal and "
        "TQDM_DISABLE is unset)",
    )


def build_parser() -> Parser:
    """The top-level parser with every sub-command registered."""
    from alkernels import __version__

    parser = Parser(
        prog="alkernels",
        description="Fast active learning for crystal GNNs. Start with 'alkernels demo' (the main "
        "job of 'make demo'); 'alkernels COMMAND --help' describes each command.",
    )
    parser.add_argument("--version", action="version", version=f"alkernels {__version__}")
    add_output_args(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(sub)
    for command in _leaf_parsers(sub):
        add_output_args(command, top=False)
    return parser


def _leaf_parsers(sub: argparse._SubParsersAction) -> Iterator[argparse.ArgumentParser]:
    """The parsers of the commands that run something (``data synth``, not ``data``)."""
    for command in dict.fromkeys(sub.choices.values()):
        nested = [a for a in command._actions if isinstance(a, argparse._SubParsersAction)]
        if nested:
            for inner in nested:
                yield from _leaf_parsers(inner)
        else:
            yield command


@contextmanager
def _progress_setting(progress: bool | None) -> Iterator[None]:
    """``--progress``/``--no-progress`` as ``ALKERNELS_PROGRESS`` (which worker processes inherit)
    while the command runs."""
    from alkernels._logging import PROGRESS_ENV

    before = os.environ.get(PROGRESS_ENV)
    if progress is not None:
        os.environ[PROGRESS_ENV] = "1" if progress else "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PROGRESS_ENV, None)
        else:
            os.environ[PROGRESS_ENV] = before


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``alkernels`` console script; returns the exit code (a usage error,
    ``--help`` and ``--version`` exit through ``SystemExit``, as argparse does)."""
    from alkernels._logging import cli_logging

    args = build_parser().parse_args(argv)
    try:
        with cli_logging(args.verbose - args.quiet, run_lines=getattr(args, "run_lines", True)):
            with _progress_setting(args.progress):
                return int(args.func(args) or 0)
    except ValueError as err:
        return _error(str(err))
    except ImportError as err:  # a missing extra: the message names `pip install 'alkernels[...]'`
        return _error(_extra_message(err))
    except OSError as err:  # a full disk, a missing or unreadable file: name the path, no traceback
        where = f" ({err.filename})" if err.filename else ""
        return _error(f"{err.strerror or err}{where}")
    except DistributedError as err:  # a rank died or hangs: say where, exit non-zero for torchrun
        print(f"alkernels: error: {err}", file=sys.stderr)
        return 1


def _extra_message(err: ImportError) -> str:
    """``err``'s message, naming the extra that provides the missing module when it does not."""
    from alkernels._extras import EXTRAS

    text = str(err)
    if "pip install" in text:
        return text
    top = (err.name or "").split(".")[0]
    extra = next((name for name, modules in EXTRAS.items() if top in modules), None)
    if extra is None:
        return text
    return f"this command needs {top}, part of the optional '{extra}' dependencies: pip install 'alkernels[{extra}]'"


def _error(message: str) -> int:
    """Print ``message`` as one ``alkernels: error:`` line and return exit code 2."""
    text = "; ".join(line.strip() for line in message.strip().splitlines() if line.strip()) or "failed"
    print(f"alkernels: error: {text}", file=sys.stderr)
    return 2
