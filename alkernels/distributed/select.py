"""Sharded pool scoring: each rank scores its shard, the local top-k are gathered and merged.

The result equals, bit for bit, ``alkernels.acquisition.select`` (or ``topk``) on the whole pool
in one process: scores are per sample, each rank's local top-k holds every member of the global
top-k that falls in its shard, and the merge (:mod:`alkernels.ops.topk_merge`) keeps the same
order (score descending, ties to the lower global index).

Per query, two collectives on the process group, and no logits or full score vectors cross:

1. ``all_gather`` of a 4-number header per rank (status, candidates, selectable rows, first
   problem row), so every rank raises the same error when any rank could not score its shard or
   the pool after exclusion is smaller than ``k``;
2. ``all_gather`` of each rank's candidates as 8-byte packed keys, padded to the longest list:
   ``ranks x min(k, largest shard)`` keys in all.

Every rank then merges the same candidates and returns the same result.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist

from alkernels.acquisition import (
    Backend,
    Exclude,
    NonFinite,
    StreamingSelector,
    _check_k,
    _check_strategy,
    _chunk_mask,
    _exclude_indices,
)
from alkernels.distributed.group import all_gather_objects, comm_device, phase
from alkernels.ops import topk_merge
from alkernels.ops.acquisition import topk as local_topk

__all__ = ["DistributedStreamingSelector", "select_distributed", "topk_distributed"]

_OK, _FAILED = 0, 1
#: Why float64 logits and scores are refused: the merge packs float32 keys, so a float64 pool
#: would be ranked differently from ``acquisition.select``, which ranks float64 in float64.
_NO_FLOAT64 = (
    "distributed selection merges float32 scores; pass float32 logits or scores "
    "(alkernels.acquisition ranks float64 in float64 in one process)"
)


def _rows(chunk: torch.Tensor) -> int:
    """Pool rows of an [n, C] or [T, n, C] chunk."""
    return int(chunk.shape[-2]) if chunk.ndim >= 2 else int(chunk.shape[0])


def _merge_across_ranks(
    idx: torch.Tensor, val: torch.Tensor, selectable: int, k: int, error: str | None, group: dist.ProcessGroup | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather every rank's candidates (global ``idx`` int64 [c], ``val`` float32 [c], c <= k) and
    merge the global top-k; collective. ``error`` is this rank's scoring failure, if any."""
    device = comm_device(group)
    world = dist.get_world_size(group)
    if error is None and idx.numel() and int(idx.max()) > topk_merge.MAX_INDEX:
        error = f"pool index {int(idx.max())} is above {topk_merge.MAX_INDEX}, the largest a shard may hold"
    with phase("gathering top-k headers"):
        header = torch.tensor([_FAILED if error else _OK, idx.numel(), selectable, 0], dtype=torch.int64, device=device)
        headers = [torch.empty_like(header) for _ in range(world)]
        dist.all_gather(headers, header, group=group)
        table = torch.stack(headers).cpu()
    failed = [r for r in range(world) if int(table[r, 0]) != _OK]
    if failed:
        with phase("exchanging scoring errors"):
            messages = all_gather_objects(error, group=group)
        first = failed[0]
        raise ValueError(
            f"{messages[first]} (rank {first}"
            + (f"; {len(failed) - 1} other rank(s) failed too)" if len(failed) > 1 else ")")
        )
    total = int(table[:, 2].sum())
    if total < k:
        raise ValueError(f"k = {k} is larger than the pool after exclusion ({total} samples on {world} ranks)")
    counts = table[:, 1].tolist()
    width = max(counts)
    keys = torch.zeros(width, dtype=torch.int64, device=device)
    if idx.numel():
        keys[: idx.numel()] = topk_merge.pack_keys(idx.to(device), val.to(device))
    with phase("gathering top-k candidates"):
        gathered = [torch.empty_like(keys) for _ in range(world)]
        dist.all_gather(gathered, keys, group=group)
    candidates = torch.cat([g[:c] for g, c in zip(gathered, counts)])
    merged_idx, merged_val = topk_merge.unpack_keys(candidates)
    if torch.unique(merged_idx).numel() != merged_idx.numel():
        raise ValueError("the ranks' shards overlap: the same pool row was scored on two ranks")
    out_idx, out_val = topk_merge.unpack_keys(topk_merge.merge_topk_keys(candidates, k))
    return out_idx.cpu(), out_val.cpu()


class DistributedStreamingSelector:
    """:class:`~alkernels.acquisition.StreamingSelector` across ranks: each rank streams its own
    rows, :meth:`result` merges the global top-k on every rank.

    Create it on every rank with the same arguments. ``update`` is local (no communication);
    ``result`` is collective, so every rank must call it once. Offsets are GLOBAL pool rows; the
    rows of different ranks must not overlap (an overlap that reaches the candidates raises).
    A ``ValueError`` while scoring a chunk (non-finite logits, a bad shape, float64 logits, which
    the float32 merge cannot rank as :func:`~alkernels.acquisition.select` does) is kept and
    raised by ``result`` on every rank, naming the rank, so no rank is left waiting.

    Args:
        strategy, k, exclude, backend, nonfinite: as in :class:`StreamingSelector`; ``exclude``
            holds global indices (or a bool mask over the whole pool).
        group: the process group (the world by default).
    """

    def __init__(
        self,
        strategy: str,
        k: int,
        *,
        exclude: Exclude = None,
        backend: Backend = "auto",
        nonfinite: NonFinite = "raise",
        group: dist.ProcessGroup | None = None,
    ) -> None:
        _check_strategy(strategy)
        self.k = _check_k(k)
        self.group = group
        self._local = StreamingSelector(strategy, k, exclude=exclude, backend=backend, nonfinite=nonfinite)
        self._error: str | None = None

    def update(self, logits_chunk: torch.Tensor, offset: int) -> None:
        """Score a chunk ([n, C] or [T, n, C]) of global pool rows ``[offset, offset + n)``."""
        if self._error is not None:
            return
        try:
            if isinstance(logits_chunk, torch.Tensor) and logits_chunk.dtype == torch.float64:
                raise ValueError(f"float64 logits: {_NO_FLOAT64}")
            self._local.update(logits_chunk, offset=int(offset))
        except ValueError as err:
            self._error = str(err)

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(global indices int64 [k], scores float32 [k]) over the rows of all ranks, on the CPU;
        the same on every rank. Collective."""
        idx, val, selectable = self._local.candidates()
        return _merge_across_ranks(idx, val, selectable, self.k, self._error, self.group)


def select_distributed(
    local_logits_or_chunks: torch.Tensor | Iterable[torch.Tensor],
    strategy: str,
    k: int,
    *,
    offset: int,
    exclude: Exclude = None,
    group: dist.ProcessGroup | None = None,
    backend: Backend = "auto",
    nonfinite: NonFinite = "raise",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sharded :func:`~alkernels.acquisition.select`: the ``k`` most informative samples of a pool
    whose rows are spread over the ranks. Collective: call it on every rank.

    Args:
        local_logits_or_chunks: this rank's logits [n, C] or [T, n, C] (float32, float16 or
            bfloat16; float64 raises on every rank), or an iterable of such chunks covering
            consecutive rows (streamed: only one chunk is held at a time).
        strategy: one of ``acquisition.STRATEGIES``.
        k: query size, at most the pool size after exclusion (larger than any shard is fine).
        offset: the global pool row of this rank's first row (see :func:`shard_range`).
        exclude: already-labelled samples as GLOBAL indices, or a bool mask over the whole pool.
        group: the process group (the world by default).
        backend, nonfinite: as in :func:`~alkernels.acquisition.select`.

    Returns:
        (global indices int64 [k], scores float32 [k]) on the CPU, identical on every rank and to
        ``select`` on the concatenated pool.
    """
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset must be a non-negative int, got {offset!r}")
    selector = DistributedStreamingSelector(
        strategy, k, exclude=exclude, backend=backend, nonfinite=nonfinite, group=group
    )
    chunks = [local_logits_or_chunks] if isinstance(local_logits_or_chunks, torch.Tensor) else local_logits_or_chunks
    row = offset
    for chunk in chunks:
        selector.update(chunk, row)
        if isinstance(chunk, torch.Tensor):
            row += _rows(chunk)
    return selector.result()


def topk_distributed(
    local_scores: torch.Tensor, k: int, *, offset: int, exclude: Exclude = None, group: dist.ProcessGroup | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sharded :func:`~alkernels.acquisition.topk` of any per-sample scores (a strategy's own,
    e.g. predicted losses). Collective.

    Args:
        local_scores: float [n] (float32, float16 or bfloat16; float64 raises on every rank), the
            scores of global rows ``[offset, offset + n)``; NaN rows are never selected.
        k, offset, exclude, group: as in :func:`select_distributed`.

    Returns:
        (global indices int64 [k], scores float32 [k]) on the CPU, identical on every rank and to
        ``topk`` of the concatenated scores (with ``exclude`` applied).
    """
    _check_k(k)
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset must be a non-negative int, got {offset!r}")
    error = None
    idx = torch.empty(0, dtype=torch.int64)
    val = torch.empty(0, dtype=torch.float32)
    selectable = 0
    if local_scores.ndim != 1:
        error = f"local scores must be 1-D [n], got shape {tuple(local_scores.shape)}"
    elif local_scores.dtype == torch.float64:
        error = f"float64 scores: {_NO_FLOAT64}"
    else:
        scores = local_scores.float()
        mask = _chunk_mask(_exclude_indices(exclude), scores.numel(), scores.device, offset=offset)
        idx, val, count = local_topk(scores, k, mask)
        selectable = int(count)
        idx = idx.cpu() + offset
        val = val.cpu()
    return _merge_across_ranks(idx, val, selectable, k, error, group)
