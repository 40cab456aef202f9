"""The ``alkernels`` command line. Each submodule adds one sub-command via ``add_parser``."""

from __future__ import annotations

import argparse
import sys

from alkernels.cli import data, demo, report, reproduce, run, transfer
from alkernels.distributed.group import DistributedError

COMMANDS = [demo, data, run, reproduce, report, transfer]


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every sub-command registered."""
    from alkernels import __version__

    parser = argparse.ArgumentParser(prog="alkernels", description="Fast active learning for crystal GNNs.")
    parser.add_argument("--version", action="version", version=f"alkernels {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``alkernels`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ValueError as err:
        return _error(str(err))
    except ImportError as err:  # a missing extra: the message names `pip install 'alkernels[...]'`
        return _error(str(err))
    except OSError as err:  # a full disk, a missing or unreadable file: name the path, no traceback
        where = f" ({err.filename})" if err.filename else ""
        return _error(f"{err.strerror or err}{where}")
    except DistributedError as err:  # a rank died or hangs: say where, exit non-zero for torchrun
        print(f"alkernels: error: {err}", file=sys.stderr)
        return 1


def _error(message: str) -> int:
    """Print ``message`` as one ``alkernels: error:`` line and return exit code 2."""
    text = "; ".join(line.strip() for line in message.strip().splitlines() if line.strip()) or "failed"
    print(f"alkernels: error: {text}", file=sys.stderr)
    return 2
