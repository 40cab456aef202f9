"""The resumable active-learning loop, the reproduction grid and its report.

- :class:`ActiveLearningLoop` runs one strategy for one seed (``loop.py``).
- ``experiment.py`` builds datasets and models and runs the paper's grid (presets ``quick`` and
  ``paper``).
- ``report.py`` turns a grid's records into ``table.md`` and the plots.
"""
from __future__ import annotations

from alkernels.loop.loop import RECORD_KEYS, TIMING_KEYS, ActiveLearningLoop, labelled_schedule, read_records

__all__ = ["ActiveLearningLoop", "RECORD_KEYS", "TIMING_KEYS", "labelled_schedule", "read_records"]
