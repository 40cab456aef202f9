"""Loader for the optional compiled extension ``alkernels._C``.

``ext()`` returns the module, or ``None`` when it was not built; in that case a single
``RuntimeWarning`` is emitted the first time a caller asks for it, and the callers fall back
to the torch backend.
"""
from __future__ import annotations

import warnings
from types import ModuleType

_state: dict[str, object] = {}


def ext() -> ModuleType | None:
    """Return ``alkernels._C`` if it imports, else ``None`` (warning once)."""
    if "module" not in _state:
        try:
            from alkernels import _C  # type: ignore[attr-defined]
        except ImportError as err:  # pragma: no cover - depends on the build
            _C = None
            warnings.warn(
                f"alkernels._C is not available ({err}); using the torch backend. "
                "Reinstall with a C++17 compiler to get the fused CPU kernels.",
                RuntimeWarning,
                stacklevel=3,
            )
        _state["module"] = _C
    return _state["module"]  # type: ignore[return-value]


def has_ext() -> bool:
    """True when the compiled extension is importable."""
    return ext() is not None
