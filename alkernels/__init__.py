"""alkernels: fast active learning for graph neural networks on crystals.

Subpackages (imported on first access):
    acquisition  fused uncertainty scoring and top-k selection over an AL pool
    ops          kernels with backend dispatch (torch reference, C++ CPU, Triton GPU)
    data         crystal readers, periodic graphs, the built-in dataset
    models       the paper's EGNN and its heads
    strategies   the 12 query strategies
    loop         the resumable active-learning loop
    distributed  sharded pool scoring and data-parallel training under torchrun
    gp           GP regression for active learning: incremental exact posterior, the loop (``gp`` extra)
    cli          the ``alkernels`` command
"""

from __future__ import annotations

import importlib
from types import ModuleType

from alkernels._version import __version__ as __version__  # re-exported: the one version string

_SUBMODULES = ("acquisition", "ops", "data", "models", "strategies", "loop", "gp", "distributed", "cli")


def __getattr__(name: str) -> ModuleType:
    if name in _SUBMODULES:
        return importlib.import_module(f"alkernels.{name}")
    raise AttributeError(f"module 'alkernels' has no attribute {name!r}")
