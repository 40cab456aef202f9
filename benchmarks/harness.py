"""How every benchmark test times its call and describes it.

All timings go through :func:`timed`: pytest-benchmark's ``pedantic`` mode with explicit warm-up
and timed rounds (one call per round, the device synchronised inside the timed call), the group
set for pytest-benchmark's own table, and the metadata that :mod:`benchmarks.summary` turns into
ratios stored in ``benchmark.extra_info``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from benchmarks.workloads import sync

#: Roles of the members of a group. The baseline is our implementation that the others are
#: compared with; "ours" marks other variants of ours (e.g. more worker processes); "peer" the
#: implementations we compare against; "reference" a yardstick such as memcpy.
ROLES: tuple[str, ...] = ("baseline", "ours", "peer", "reference")


def timed(
    benchmark: Any,
    fn: Callable[[], object],
    *,
    group: str,
    impl: str,
    role: str,
    items: int,
    unit: str,
    rounds: int,
    warmup: int,
    device: torch.device,
    **meta: Any,
) -> object:
    """Time ``fn()`` and record what was timed; returns the result of the last call.

    Args:
        benchmark: the pytest-benchmark fixture.
        fn: the call to time.
        group: ``SUITE/TABLE/ROW``: members of one group are compared with its baseline.
        impl: the member's name within the group.
        role: one of :data:`ROLES`.
        items: work items per call (samples, graphs, structures); ratios are per item.
        unit: the items' name, for throughput columns.
        rounds: timed rounds.
        warmup: untimed calls first (compilation, caches, allocator).
        device: synchronised after each call.
        meta: further JSON-ready facts (sizes, strategy, ...). Keys with a meaning to the
            summary: ``bytes`` (bytes the call reads, or reads plus writes for a copy),
            ``scaling`` (name of the meta key that is the x axis of a scaling series),
            ``notes`` (a dict of values the report prints next to the row) and
            ``peak_extra_mib`` (set after timing, from :mod:`benchmarks.memory`).
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    benchmark.group = group
    benchmark.extra_info.update(impl=impl, role=role, items=items, unit=unit, **meta)

    def call() -> object:
        out = fn()
        sync(device)
        return out

    return benchmark.pedantic(call, rounds=rounds, warmup_rounds=warmup, iterations=1)
