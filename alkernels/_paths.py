"""Paths given by users: ``~`` and ``~user`` expand to a home directory everywhere, so that
``cache_dir="~/.cache/alkernels"`` never creates a folder literally named ``~``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import overload


@overload
def user_path(path: str | os.PathLike) -> Path: ...


@overload
def user_path(path: None) -> None: ...


def user_path(path: str | os.PathLike | None) -> Path | None:
    """``path`` as a :class:`~pathlib.Path` with a leading ``~`` or ``~user`` expanded (other
    paths unchanged, relative ones stay relative); None stays None."""
    return None if path is None else Path(path).expanduser()
