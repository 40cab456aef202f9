"""The strategy interface, the unlabelled pool, and the name registry."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from alkernels.data.dataset import collate


@dataclass
class Pool:
    """The unlabelled part of a training set.

    Attributes:
        dataset: the whole training set (a map-style ``Dataset`` of graphs).
        indices: int64 [N], the dataset indices still unlabelled, in increasing order.
            Strategies return a subset of these.
        batch_size: graphs per chunk when the pool is scored.
        collate_fn: turns a list of dataset items into one batch (``alkernels.data.collate``
            by default); the batch must support ``.to(device)``.
    """

    dataset: Dataset
    indices: np.ndarray
    batch_size: int = 256
    collate_fn: Callable[[list[Any]], Any] = field(default=collate)

    def __post_init__(self) -> None:
        self.indices = np.asarray(self.indices, dtype=np.int64)
        if self.indices.ndim != 1:
            raise ValueError(f"pool indices must be 1-D, got shape {self.indices.shape}")
        if self.batch_size < 1:
            raise ValueError(f"pool batch_size must be >= 1, got {self.batch_size}")

    def __len__(self) -> int:
        return int(self.indices.size)

    def shard(self, rank: int, world_size: int) -> tuple[int, "Pool"]:
        """``(start, part)``: ``rank``'s contiguous part of the pool (positions ``[start, start +
        len(part))``, see ``alkernels.distributed.shard_range``)."""
        from alkernels.distributed.shard import shard_range

        lo, hi = shard_range(len(self), rank, world_size)
        return lo, replace(self, indices=self.indices[lo:hi])

    def chunks(self) -> Iterator[tuple[int, Any]]:
        """Yield ``(offset, batch)`` over the pool in order; ``offset`` is the pool position of
        the chunk's first graph."""
        loader = DataLoader(
            Subset(self.dataset, self.indices.tolist()),
            batch_size=self.batch_size,
            shuffle=False,
            collate_fn=self.collate_fn,
        )
        offset = 0
        for batch in loader:
            yield offset, batch
            offset += _batch_len(batch)


def _batch_len(batch: Any) -> int:
    num_graphs = getattr(batch, "num_graphs", None)
    if num_graphs is not None:
        return int(num_graphs)
    return len(batch)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameter-free model)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


class Strategy:
    """A query strategy: picks which unlabelled structures to label next.

    Subclasses implement :meth:`query`. A strategy that trains something alongside the model
    (learning loss) also overrides :meth:`setup` and :meth:`training_loss`; the loop calls
    them, so every strategy can be used by the same loop.
    """

    name: str = ""

    def query(self, model: nn.Module, pool: Pool, k: int, *, rng: np.random.Generator) -> np.ndarray:
        """Pick ``k`` distinct dataset indices from ``pool.indices``.

        Args:
            model: the classifier after this round's training.
            pool: the unlabelled structures.
            k: how many to pick, 1 <= k <= len(pool).
            rng: the loop's seeded generator (used by strategies with randomness).

        Returns:
            int64 [k], dataset indices in the order of preference (best first).
        """
        raise NotImplementedError

    def query_distributed(
        self, model: nn.Module, pool: Pool, k: int, *, rng: np.random.Generator, group: Any = None
    ) -> np.ndarray:
        """:meth:`query` in a multi-process run: called on every rank with the same pool, model
        weights and ``rng`` state; returns the same indices on every rank. Collective.

        The default runs :meth:`query` on rank 0 only and sends its answer and ``rng``'s new
        state to the other ranks (which wait, within the process group's timeout). Strategies
        that score the pool override it to score one shard per rank (the uncertainty strategies
        and learning loss do).

        Args:
            group: the ``torch.distributed`` process group of the sharded strategies (the world by
                default); the default implementation always uses the whole job.
        """
        from alkernels import distributed

        def answer() -> tuple[np.ndarray, dict]:
            return np.asarray(self.query(model, pool, k, rng=rng), dtype=np.int64), rng.bit_generator.state

        chosen, rng.bit_generator.state = distributed.on_rank_zero(answer, what=f"its {self.name} query")
        return chosen

    def settings(self) -> dict:
        """The strategy's options that change which structures it picks (JSON-serialisable);
        part of a run's identity, so a resume with other options is refused. Default: none."""
        return {}

    def setup(self, model: nn.Module) -> nn.Module | None:
        """Create the strategy's own trainable module for ``model``, or None (the default).

        The loop optimises it jointly with the model, checkpoints it, and resets it along
        with the model weights.
        """
        return None

    def training_loss(self, model: nn.Module, batch: Any, *, epoch: int, epochs: int) -> torch.Tensor:
        """The scalar loss of one training batch (default: mean cross-entropy).

        Args:
            batch: a collated batch with labels ``batch.y`` (int64 [B], class indices).
            epoch: 0-based epoch within the current round; epochs: epochs per round.
        """
        return nn.functional.cross_entropy(model(batch), batch.y)

    def check_k(self, pool: Pool, k: int) -> None:
        """Raise ValueError unless 1 <= k <= len(pool)."""
        if not 1 <= k <= len(pool):
            raise ValueError(f"{self.name}: query size {k} must be between 1 and the pool size {len(pool)}")


_REGISTRY: dict[str, Callable[..., Strategy]] = {}


def register(name: str, factory: Callable[..., Strategy] | None = None, *, overwrite: bool = False):
    """Register a strategy factory under ``name``; usable as a decorator or called directly.

    ``factory(**kwargs)`` must return a :class:`Strategy`. Re-registering a taken name raises
    ValueError unless ``overwrite=True``.
    """

    def _add(f: Callable[..., Strategy]) -> Callable[..., Strategy]:
        if name in _REGISTRY and not overwrite:
            raise ValueError(f"strategy {name!r} is already registered (pass overwrite=True)")
        _REGISTRY[name] = f
        return f

    return _add(factory) if factory is not None else _add


def unregister(name: str) -> None:
    """Remove a registered strategy (ValueError if unknown)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown strategy {name!r}")
    del _REGISTRY[name]


def available() -> list[str]:
    """Names of every registered strategy, in registration order."""
    return list(_REGISTRY)


def get(name: str, **kwargs: Any) -> Strategy:
    """Instantiate the strategy registered as ``name`` with ``kwargs``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown strategy {name!r}; available: {', '.join(_REGISTRY)}")
    strategy = _REGISTRY[name](**kwargs)
    if not strategy.name:
        strategy.name = name
    return strategy
