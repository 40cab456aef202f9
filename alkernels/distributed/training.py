"""Data-parallel training that is the same optimisation as the single-process loop.

Each epoch draws the global batches exactly as the single-process ``DataLoader(shuffle=True,
generator=g)`` would (same generator, same consumption), and every global batch is split over
the ranks in contiguous parts (:class:`ShardedBatches`), so the ranks see disjoint parts of the
labelled set. Each rank's mean loss is scaled by :func:`loss_scale` so that
``DistributedDataParallel``'s gradient average equals the gradient of the mean loss over the
whole global batch: with one rank the run is bit for bit the single-process one, with more it
differs only by floating-point summation order (and by the dropout masks each rank draws).

``torch.utils.data.DistributedSampler`` is not used: it pads the labelled set by repeating
samples, gives every rank ``batch_size`` samples (so the effective batch grows with the number of
ranks) and shuffles differently from the single-process loader, which would make the distributed
run a different experiment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from alkernels.distributed.group import phase
from alkernels.distributed.shard import shard_range

__all__ = ["DDPLoss", "ShardedBatches", "loss_scale", "wrap_ddp"]


class ShardedBatches:
    """The global batches of a seeded shuffle of ``range(n)``, each split over the ranks.

    Iterating yields, per global batch, ``(positions, global_size)``: this rank's contiguous part
    of the batch (a list of positions in ``range(n)``; empty only when the batch is smaller than
    the number of ranks) and the batch's total size. Every rank must hold a generator in the same
    state; one iteration (one epoch) advances it exactly as one epoch of
    ``DataLoader(range(n), batch_size, shuffle=True, generator=generator)`` does.

    Args:
        n: number of items (e.g. the labelled set's size).
        batch_size: global batch size (the single-process run's).
        generator: the shuffling generator, identical on every rank.
        rank, world_size: this rank and the number of ranks.
    """

    def __init__(self, n: int, batch_size: int, *, generator: torch.Generator, rank: int, world_size: int) -> None:
        if n < 1 or batch_size < 1:
            raise ValueError(f"need n >= 1 and batch_size >= 1, got n={n}, batch_size={batch_size}")
        shard_range(0, rank, world_size)  # validates rank and world size
        self.n, self.batch_size, self.rank, self.world_size = n, batch_size, rank, world_size
        self._order = DataLoader(range(n), batch_size=batch_size, shuffle=True, generator=generator, collate_fn=list)

    def __len__(self) -> int:
        return len(self._order)

    def __iter__(self) -> Iterator[tuple[list[int], int]]:
        for batch in self._order:
            lo, hi = shard_range(len(batch), self.rank, self.world_size)
            yield [int(i) for i in batch[lo:hi]], len(batch)


def loss_scale(local_size: int, global_size: int, world_size: int) -> float:
    """Factor for a rank's MEAN loss over ``local_size`` samples so that DDP's average over
    ``world_size`` ranks gives the gradient of the mean over all ``global_size`` samples:
    ``local_size * world_size / global_size`` (exactly 1.0 for a single rank)."""
    return local_size * world_size / global_size


class DDPLoss(nn.Module):
    """The model, the strategy's extra module and a loss function as one module.

    DDP synchronises gradients only for modules whose ``forward`` it runs, while a strategy's
    loss may call parts of the model (``model.encoder``, a loss-prediction module). Wrapping all
    of them here makes one DDP forward cover every parameter. The loss also gets an exact zero
    that depends on every parameter, so parameters a step does not use (the EGNN's last
    coordinate MLP on the torch backend) or a rank with an empty part of the batch still take
    part in the all-reduce: DDP then needs no ``find_unused_parameters`` search. The zero adds
    nothing to any gradient; a parameter that no rank uses gets a zero gradient instead of none.

    Args:
        model: the network being trained.
        aux: the strategy's trainable module (or None).
        loss_fn: ``loss_fn(model, batch, **kwargs) -> scalar`` mean loss of a batch.
    """

    def __init__(self, model: nn.Module, aux: nn.Module | None, loss_fn: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self.aux = aux
        self.loss_fn = loss_fn

    def forward(self, batch: Any | None, scale: float = 1.0, **kwargs: Any) -> torch.Tensor:
        """``loss_fn(model, batch, **kwargs) * scale`` plus the zero that reaches every parameter
        (only the zero when ``batch`` is None: this rank's part of the batch is empty)."""
        zero = sum(p.reshape(-1)[:1].sum() for p in self.parameters() if p.requires_grad) * 0.0
        if batch is None:
            return zero
        return self.loss_fn(self.model, batch, **kwargs) * scale + zero


def wrap_ddp(
    module: nn.Module, device: torch.device, *, find_unused_parameters: bool = False
) -> DistributedDataParallel:
    """``DistributedDataParallel(module)`` on this rank's device (a collective: rank 0's
    parameters and buffers are broadcast to every rank).

    A :class:`DDPLoss` uses every parameter in every step, so ``find_unused_parameters`` (one
    walk over the autograd graph per step) stays off; turn it on for other modules whose steps
    skip parameters."""
    with phase("wrapping the model in DistributedDataParallel"):
        return DistributedDataParallel(
            module,
            device_ids=[device] if device.type == "cuda" else None,
            find_unused_parameters=find_unused_parameters,
        )
