"""One backend vocabulary for every op, and the one helper that resolves it.

Backends (the same words in every op, model, strategy and CLI flag):

``"torch"``
    the plain-PyTorch reference of the op: the specification and the test oracle.
``"cpu"``
    the fused C++/OpenMP kernels of the compiled extension ``alkernels._C`` (CPU tensors).
``"triton"``
    the fused Triton kernels: CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``.
``"auto"``
    ``"triton"`` for CUDA tensors, ``"cpu"`` for CPU tensors when the extension is built,
    else ``"torch"``; and ``"torch"`` whenever the op's fused kernels do not cover the call
    (each op says why not for a call: widths, dtype, device, activation; the fallback is logged
    at debug level on the ``alkernels`` logger, once per reason).

``"reference"`` is accepted as an alias of ``"torch"`` (the name the EGNN op used before).

Instruction sets of the C++ kernels (``isa=`` of the ``alkernels._C`` functions, named as in
``csrc/common/isa.h``): ``"best"`` (the widest build the CPU supports), ``"avx512"``, ``"avx2"``
and ``"baseline"`` (the portable x86-64 build), and ``"avx512bf16"`` (AVX512_BF16 dot products;
only the EGNN edge kernels' ``precision="bf16"`` has that build). Tests run every build the CPU
supports.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import warnings
from collections.abc import Callable
from types import ModuleType

import torch

from alkernels._extras import missing_extra

BACKENDS: tuple[str, ...] = ("auto", "torch", "cpu", "triton")
#: Older names still accepted, mapped to their current backend.
BACKEND_ALIASES: dict[str, str] = {"reference": "torch"}
#: ``isa=`` names of the compiled kernels.
ISAS: tuple[str, ...] = ("best", "avx512", "avx2", "baseline", "avx512bf16")

#: Whether the optional ``triton`` package is installed (checked without importing it).
HAS_TRITON: bool = importlib.util.find_spec("triton") is not None

_state: dict[str, ModuleType | None] = {}
_logged_fallbacks: set[tuple[str, str]] = set()
_log = logging.getLogger("alkernels")

#: Why a fused backend cannot run a call: a function of the backend name returning the reason,
#: or None when it can.
WhyUnsupported = Callable[[str], "str | None"]


def ext() -> ModuleType | None:
    """The compiled extension ``alkernels._C``, or None when it was not built.

    The first call that finds it missing emits one ``RuntimeWarning``; callers then fall back to
    the torch backend.
    """
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
    return _state["module"]


def has_ext() -> bool:
    """True when the compiled extension is importable."""
    return ext() is not None


def interpreting() -> bool:
    """True when Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_usable(device: torch.device | torch.Tensor) -> bool:
    """Whether a Triton kernel can run on ``device``: CUDA, or CPU under the interpreter."""
    if not HAS_TRITON:
        return False
    dev = device.device if isinstance(device, torch.Tensor) else torch.device(device)
    return dev.type == "cuda" or (dev.type == "cpu" and interpreting())


def normalize_backend(backend: str) -> str:
    """``backend`` in the current vocabulary (aliases mapped); ValueError if unknown."""
    name = BACKEND_ALIASES.get(backend, backend)
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    return name


def _fallback(op: str, reason: str) -> str:
    """``"torch"``, logging the reason at debug level once per (op, reason)."""
    if not torch.compiler.is_compiling() and (op, reason) not in _logged_fallbacks:
        _logged_fallbacks.add((op, reason))
        _log.debug("%s: backend 'auto' uses 'torch' (%s)", op, reason)
    return "torch"


def _unavailable(name: str, dev: torch.device) -> str | None:
    """Why the fused backend ``name`` cannot run on ``dev`` at all, or None."""
    if name == "cpu":
        if dev.type != "cpu":
            return f"backend 'cpu' needs CPU tensors, got device {dev}"
        if ext() is None:
            return "backend 'cpu' needs the compiled extension alkernels._C, which is not built"
    elif name == "triton" and HAS_TRITON and not triton_usable(dev):
        return "backend 'triton' needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors)"
    return None


def resolve_backend(
    backend: str,
    device: torch.device | torch.Tensor,
    *,
    op: str,
    unsupported: str | WhyUnsupported | None = None,
) -> str:
    """The concrete backend (``"torch"``, ``"cpu"`` or ``"triton"``) that runs ``op`` on ``device``.

    Args:
        backend: a name of ``BACKENDS`` (or an alias).
        device: the device of the op's inputs (or one of its tensors).
        op: the op's name, for error messages and the fallback log.
        unsupported: why the fused kernels cannot run this call: a reason that holds for every
            fused backend, or a function of the fused backend's name (``"cpu"``, ``"triton"``)
            returning its reason or None. ``"auto"`` then picks ``"torch"`` (logging the reason
            at debug level once) and an explicit fused backend raises with it.

    Raises:
        ValueError: an unknown backend, or a fused backend that cannot run here (the message says
            why: no CUDA tensor, extension not built, ``unsupported``).
        ImportError: backend ``"triton"`` without the ``triton`` extra installed.
    """
    name = normalize_backend(backend)
    dev = device.device if isinstance(device, torch.Tensor) else torch.device(device)
    why: WhyUnsupported = (lambda _: unsupported) if not callable(unsupported) else unsupported  # type: ignore[assignment]
    if name == "auto":
        if dev.type == "cuda" and triton_usable(dev):
            candidate = "triton"
        elif dev.type == "cpu" and ext() is not None:
            candidate = "cpu"
        else:
            return "torch"
        reason = why(candidate)
        return candidate if reason is None else _fallback(op, reason)
    if name == "torch":
        return name
    if name == "triton" and not HAS_TRITON:
        raise missing_extra("triton", f"{op} on backend 'triton'")
    reason = _unavailable(name, dev) or why(name)
    if reason is not None:
        raise ValueError(f"{op}: backend {name!r} cannot run this call ({reason}); use 'torch' or 'auto'")
    return name
