"""Deterministic partition of a pool (or any range) over ranks, without communication."""

from __future__ import annotations


def shard_range(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """The contiguous block ``[start, stop)`` of ``range(n)`` that ``rank`` owns.

    Blocks follow rank order and differ in size by at most one (the first ``n % world_size``
    ranks get one more). Every rank computes every block from ``n`` and ``world_size`` alone, so
    the partition is identical everywhere; a rank's block is empty when ``n < world_size``.
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size}")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)
