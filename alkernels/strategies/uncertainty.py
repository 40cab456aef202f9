"""The eight uncertainty strategies: score the pool chunk by chunk with ``alkernels.acquisition``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from alkernels import acquisition
from alkernels.ops.acquisition import check_nonfinite
from alkernels.strategies.base import Pool, Strategy, model_device

#: Strategies that score a single deterministic pass (dropout off), logits [n, C].
SINGLE_PASS = ("entropy", "least_confidence", "margin")
#: Strategies that score T MC-dropout passes from ``model.mc_logits``, logits [T, n, C].
MC_PASS = ("predictive_entropy", "expected_entropy", "bald", "expected_least_confidence", "expected_margin")


class UncertaintyStrategy(Strategy):
    """Query the k highest acquisition scores over the pool.

    The pool is scored in chunks of ``pool.batch_size`` graphs and fed to
    ``acquisition.StreamingSelector``, so memory stays bounded by one chunk and the k best.
    Single-pass strategies call ``model(batch)`` in eval mode; MC strategies call
    ``model.mc_logits(batch, passes)``, which runs the encoder once and the dropout head
    ``passes`` times. Ties go to the lower pool position (see ``acquisition.topk``).

    Args:
        name: one of ``acquisition.STRATEGIES``.
        passes: T, MC-dropout passes for the MC strategies (default 10; ignored otherwise).
        nonfinite: ``"raise"`` (default): non-finite logits raise ValueError naming the dataset
            index of the first such structure; ``"exclude"``: such structures are never queried.
    """

    def __init__(self, name: str, passes: int = 10, nonfinite: str = "raise") -> None:
        if name not in SINGLE_PASS + MC_PASS:
            raise ValueError(f"unknown uncertainty strategy {name!r}")
        if passes < 1:
            raise ValueError(f"passes must be >= 1, got {passes}")
        check_nonfinite(nonfinite)
        self.name = name
        self.passes = passes
        self.nonfinite = nonfinite
        self.mc = name in MC_PASS

    def settings(self) -> dict:
        return {"passes": self.passes if self.mc else None, "nonfinite": self.nonfinite}

    @torch.no_grad()
    def _stream(self, model: nn.Module, pool: Pool, selector: Any, start: int = 0) -> None:
        """Feed the logits of every chunk of ``pool`` to ``selector`` at pool positions
        ``start + offset``; the model is in eval mode meanwhile (MC passes turn dropout on)."""
        device = model_device(model)
        was_training = model.training
        model.eval()
        try:
            for offset, batch in pool.chunks():
                batch = batch.to(device)
                logits = model.mc_logits(batch, self.passes) if self.mc else model(batch)
                try:
                    selector.update(logits.float(), offset=start + offset)
                except acquisition.NonFiniteLogitsError as err:
                    raise ValueError(
                        f"{self.name}: the model gave non-finite logits (NaN or inf) for dataset index "
                        f"{int(pool.indices[err.position - start])}; it may have diverged. Pass "
                        "nonfinite='exclude' (CLI: --nonfinite exclude) to never query such structures"
                    ) from err
        finally:
            model.train(was_training)

    def query(self, model: nn.Module, pool: Pool, k: int, *, rng: np.random.Generator) -> np.ndarray:
        self.check_k(pool, k)
        selector = acquisition.StreamingSelector(self.name, k, nonfinite=self.nonfinite)
        self._stream(model, pool, selector)
        positions, _ = selector.result()
        return pool.indices[torch.as_tensor(positions).cpu().numpy().astype(np.int64)]

    def query_distributed(
        self, model: nn.Module, pool: Pool, k: int, *, rng: np.random.Generator, group: Any = None
    ) -> np.ndarray:
        """Each rank scores its shard of the pool; the exact top-k is merged on every rank
        (``alkernels.distributed.DistributedStreamingSelector``). Equals :meth:`query` whenever
        the model gives each structure the same logits in both runs (MC-dropout masks differ)."""
        from alkernels import distributed

        self.check_k(pool, k)
        start, part = pool.shard(distributed.rank(group), distributed.world_size(group))
        selector = distributed.DistributedStreamingSelector(self.name, k, nonfinite=self.nonfinite, group=group)
        self._stream(model, part, selector, start)
        positions, _ = selector.result()
        return pool.indices[positions.numpy().astype(np.int64)]
