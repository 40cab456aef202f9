"""The one way a constructor accepts the keyword arguments of alkernels 0.1 for a release."""

from __future__ import annotations

import warnings
from collections.abc import Collection


def warn_legacy_keywords(
    owner: str, legacy: dict, known: Collection[str] | None, instead: str, *, depth: int = 2
) -> None:
    """Check the 0.1 keywords ``legacy`` given to ``owner`` and warn that they are deprecated.

    Args:
        owner: the class, as named in messages.
        legacy: the keyword arguments given.
        known: the keywords that are still accepted (None: the caller checks them).
        instead: what to pass instead, e.g. ``"config=LoopConfig(...)"``.
        depth: frames from the caller of this function up to the user's call (1 when called in
            ``owner.__init__`` itself), so the warning points at the user's line.

    Raises:
        TypeError: a keyword that ``owner`` never took.
    """
    unknown = sorted(set(legacy) - set(known)) if known is not None else []
    if unknown:
        raise TypeError(f"{owner} got unexpected keyword arguments {unknown}")
    warnings.warn(
        f"{owner}(..., " + ", ".join(f"{k}=" for k in sorted(legacy)) + f") is deprecated: pass {instead}; "
        "the keywords go in alkernels 0.3",
        DeprecationWarning,
        stacklevel=2 + depth,
    )
