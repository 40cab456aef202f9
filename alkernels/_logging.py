"""What alkernels writes while it works: log lines through named loggers, and progress bars.

Log lines go to the ``alkernels`` logger and its children (``alkernels.loop``,
``alkernels.experiments``, ...), which have no handler of their own: a program that configures
:mod:`logging` sees them (``logging.basicConfig(level=logging.INFO)``), and without configuration
only warnings reach stderr. The ``alkernels`` command configures them with :func:`configure_cli`.

Progress bars (tqdm, on stderr) are drawn only when stderr is a terminal. ``TQDM_DISABLE=1``
turns them off, and ``ALKERNELS_PROGRESS`` (``1`` or ``0``, set by the command's ``--progress`` /
``--no-progress`` and inherited by worker processes) decides before both.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

#: The parent of every alkernels logger.
ROOT = "alkernels"
#: Environment variable that forces progress bars on (``1``) or off (``0``).
PROGRESS_ENV = "ALKERNELS_PROGRESS"
#: The loggers of single runs (a line per round or step); a grid's log shows them with ``-v`` only.
RUN_LOGGERS = ("alkernels.loop", "alkernels.gp.loop")

_TRUE = ("1", "true", "yes", "on")
#: The arguments of the last :func:`configure_cli` in this process (worker processes repeat it).
_applied: tuple[int, bool] | None = None


class _CliFormatter(logging.Formatter):
    """Information as it is; warnings and errors prefixed like the command's own messages."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"alkernels: {record.levelname.lower()}: {message}"
        return message


class _CliHandler(logging.StreamHandler):
    """The command's handler: writes to whatever ``sys.stderr`` is when a line is logged."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(_CliFormatter())

    @property
    def stream(self) -> Any:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # the base class assigns it; the current stderr wins
        pass


def configure_cli(verbosity: int, *, run_lines: bool = True) -> None:
    """Send alkernels' log lines to stderr for the command line.

    Args:
        verbosity: below 0 warnings only (``-q``), 0 information (the default), above 0 debug
            lines too (``-v``).
        run_lines: whether the per-round lines of single runs (:data:`RUN_LOGGERS`) show at the
            default verbosity; a grid of many runs hides them unless ``-v`` is given.
    """
    global _applied
    _applied = (verbosity, run_lines)
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    root = logging.getLogger(ROOT)
    for handler in [h for h in root.handlers if isinstance(h, _CliHandler)]:
        root.removeHandler(handler)
    root.addHandler(_CliHandler())
    root.setLevel(level)
    for name in RUN_LOGGERS:
        quiet = verbosity == 0 and not run_lines
        logging.getLogger(name).setLevel(logging.WARNING if quiet else logging.NOTSET)


@contextmanager
def cli_logging(verbosity: int, *, run_lines: bool = True) -> Iterator[None]:
    """:func:`configure_cli` for the length of one command; the loggers are restored after it
    (a program that calls the command's ``main`` keeps its own logging)."""
    global _applied
    names = (ROOT, *RUN_LOGGERS)
    before = [(logging.getLogger(n), logging.getLogger(n).level, list(logging.getLogger(n).handlers)) for n in names]
    applied = _applied
    configure_cli(verbosity, run_lines=run_lines)
    try:
        yield
    finally:
        for logger, level, handlers in before:
            logger.setLevel(level)
            logger.handlers[:] = handlers
        _applied = applied


def cli_settings() -> tuple[int, bool] | None:
    """The arguments of the last :func:`configure_cli` in this process (None: never called),
    for worker processes to log as their parent does."""
    return _applied


def emit(log: Callable[[str], None] | None, logger: logging.Logger, message: str, level: int = logging.INFO) -> None:
    """Give ``message`` to the caller's ``log`` callback when there is one, else to ``logger``."""
    if log is not None:
        log(message)
    else:
        logger.log(level, message)


def bars_shown() -> bool:
    """Whether progress bars are drawn here: :data:`PROGRESS_ENV` when set, else not with
    ``TQDM_DISABLE`` set, else when stderr is a terminal."""
    forced = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if forced:
        return forced in _TRUE
    if os.environ.get("TQDM_DISABLE", "").strip().lower() in _TRUE:
        return False
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def progress_bar(iterable: Iterable | None = None, *, enabled: bool = True, **kwargs: Any) -> Any:
    """A tqdm bar on stderr, drawn when ``enabled`` and :func:`bars_shown`; takes tqdm's
    keyword arguments (``total``, ``desc``, ``leave``, ...) except ``disable``."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=not (enabled and bars_shown()), **kwargs)
