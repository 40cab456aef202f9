"""Past one machine: sharded pool scoring and data-parallel training with ``torch.distributed``.

Launch with torchrun (``gloo`` on CPU ranks, ``nccl`` on CUDA ranks; no networking or scheduling
of our own)::

    torchrun --nproc_per_node 4 -m alkernels run --distributed ...

or, in your own script run under torchrun::

    from alkernels import distributed as D
    device = D.init_process_group(device="cuda")           # cuda:LOCAL_RANK, nccl
    lo, hi = D.shard_range(len(pool), D.rank(), D.world_size())
    idx, scores = D.select_distributed(my_logits, "bald", k, offset=lo)   # same on every rank

Pieces:

- scoring: :func:`select_distributed`, :func:`topk_distributed` and
  :class:`DistributedStreamingSelector`, exact (bit for bit ``acquisition.select``) with only
  ``ranks x k`` candidates crossing the network; :func:`shard_range` partitions a pool the same
  way on every rank without communication;
- training: :class:`ShardedBatches` (the single-process batches split over ranks),
  :func:`loss_scale`, :class:`DDPLoss` and :func:`wrap_ddp`;
- the job: :func:`init_process_group`, :func:`destroy_process_group`, :func:`rank`,
  :func:`world_size`, :func:`local_rank`, :func:`is_rank_zero`, :func:`rank_zero_first`,
  :func:`phase` and :class:`DistributedError` (failures name the rank and the phase), and the
  small collectives :func:`on_rank_zero`, :func:`broadcast_object`, :func:`gather_objects`,
  :func:`all_gather_objects` and :func:`all_reduce_sum`.

``ActiveLearningLoop(..., distributed=True)`` uses all of them.
"""

from __future__ import annotations

from alkernels.distributed.group import (
    DistributedError,
    all_gather_objects,
    all_reduce_sum,
    broadcast_object,
    comm_device,
    control_group,
    destroy_process_group,
    gather_objects,
    init_process_group,
    is_initialized,
    is_rank_zero,
    local_rank,
    on_rank_zero,
    phase,
    rank,
    rank_zero_first,
    world_size,
)
from alkernels.distributed.select import DistributedStreamingSelector, select_distributed, topk_distributed
from alkernels.distributed.shard import shard_range
from alkernels.distributed.training import DDPLoss, ShardedBatches, loss_scale, wrap_ddp

__all__ = [
    "DDPLoss",
    "DistributedError",
    "DistributedStreamingSelector",
    "ShardedBatches",
    "all_gather_objects",
    "all_reduce_sum",
    "broadcast_object",
    "comm_device",
    "control_group",
    "destroy_process_group",
    "gather_objects",
    "init_process_group",
    "is_initialized",
    "is_rank_zero",
    "local_rank",
    "loss_scale",
    "on_rank_zero",
    "phase",
    "rank",
    "rank_zero_first",
    "select_distributed",
    "shard_range",
    "topk_distributed",
    "world_size",
    "wrap_ddp",
]
