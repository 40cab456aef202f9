"""Shared helpers for the Triton backends (GPU, or the CPU interpreter under TRITON_INTERPRET=1)."""
from __future__ import annotations

import os

import torch

try:  # triton is an optional extra
    import triton  # noqa: F401

    HAS_TRITON = True
except ImportError:  # pragma: no cover - depends on the environment
    HAS_TRITON = False


def interpreting() -> bool:
    """True when Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_usable(t: torch.Tensor) -> bool:
    """Whether a Triton kernel can run on tensor ``t``: CUDA tensor, or CPU under the interpreter."""
    if not HAS_TRITON:
        return False
    return t.is_cuda or (t.device.type == "cpu" and interpreting())
