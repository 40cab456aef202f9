"""The resumable pool-based active-learning loop.

:class:`ActiveLearningLoop` runs one strategy for one seed and writes ``records.jsonl`` and a
checkpoint after every round. The studies built on it (grids, presets, reports) live in
:mod:`alkernels.experiments`.
"""

from __future__ import annotations

from alkernels.loop.loop import (
    RECORD_KEYS,
    TIMING_KEYS,
    ActiveLearningLoop,
    LoopConfig,
    LoopRuntime,
    labelled_schedule,
    read_records,
)
from alkernels.loop.trainer import Trainer

__all__ = [
    "ActiveLearningLoop",
    "LoopConfig",
    "LoopRuntime",
    "RECORD_KEYS",
    "TIMING_KEYS",
    "Trainer",
    "labelled_schedule",
    "read_records",
]
