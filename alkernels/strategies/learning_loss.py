"""Learning loss (Yoo and Kweon 2019): a small module learns to predict the model's loss.

The module taps the encoder at several depths; the query takes the k largest predicted losses.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from alkernels.strategies.base import Pool, Strategy, model_device

#: The EGNN taps: sum-pooled 32-d features after each of the 5 layers, 128-d after the projection.
EGNN_TAP_DIMS = (32, 32, 32, 32, 32, 128)


class LossPredictionModule(nn.Module):
    """Predicted loss from graph-level tapped features.

    Per tap ``t`` (float32 [B, d_t]): Linear(d_t, hidden) then ReLU; the results are
    concatenated and a Linear(len(taps) * hidden, 1) gives the predicted loss, float32 [B].
    """

    def __init__(self, tap_dims: Sequence[int] = EGNN_TAP_DIMS, hidden: int = 128) -> None:
        super().__init__()
        self.branches = nn.ModuleList(nn.Sequential(nn.Linear(d, hidden), nn.ReLU()) for d in tap_dims)
        self.out = nn.Linear(len(tap_dims) * hidden, 1)

    def forward(self, taps: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(taps) != len(self.branches):
            raise ValueError(f"expected {len(self.branches)} tapped features, got {len(taps)}")
        return self.out(torch.cat([b(t) for b, t in zip(self.branches, taps)], dim=1)).squeeze(1)


def ranking_loss(predicted: torch.Tensor, target: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Pairwise ranking loss of the loss-prediction module.

    Pairs (i, B-1-i) of the first B = 2 * (len // 2) samples; A = +1 where target_i > target_j
    else -1; returns (2 / B) * sum max(0, -A (pred_i - pred_j) + margin), a scalar (0 if B = 0).

    Args:
        predicted: float [n], predicted losses.
        target: float [n], the true per-sample losses (detached here).
    """
    b = 2 * (predicted.shape[0] // 2)
    if b == 0:
        return predicted.sum() * 0.0
    i = torch.arange(b // 2, device=predicted.device)
    j = b - 1 - i
    target = target.detach()
    sign = torch.where(target[i] > target[j], 1.0, -1.0).to(predicted.dtype)
    return (2.0 / b) * torch.clamp(-sign * (predicted[i] - predicted[j]) + margin, min=0).sum()


def logits_and_taps(model: nn.Module, batch: Any) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits [B, C] of a classifier with ``encoder`` and ``head`` and the encoder's taps."""
    emb, taps = model.encoder(batch, return_taps=True)
    return model.head(emb), list(taps)


def _check_finite(bad: int, total: int) -> None:
    """Raise ValueError when ``bad`` of ``total`` predicted losses are not finite."""
    if bad:
        raise ValueError(
            f"learning_loss: the loss-prediction module predicted non-finite losses for {bad} of {total} "
            "pool structures: it diverged (lower the learning rate or the ranking weight); refusing to "
            "rank the pool on them"
        )


class LearningLossStrategy(Strategy):
    """Train a loss-prediction module jointly with the model; query the largest predicted losses.

    The training loss is mean cross-entropy + ``weight`` * ranking loss. From epoch
    ``stop_gradient * epochs`` of each round on, the tapped features are detached: the module
    keeps learning but the encoder no longer gets its gradient.

    Args:
        tap_dims: widths of the encoder's taps (the EGNN's by default).
        hidden: width of each tap branch.
        weight: lambda, the ranking-loss weight.
        margin: xi, the ranking margin.
        stop_gradient: fraction of each round's epochs after which the taps are detached.
    """

    name = "learning_loss"

    def __init__(
        self,
        tap_dims: Sequence[int] = EGNN_TAP_DIMS,
        hidden: int = 128,
        weight: float = 1.0,
        margin: float = 1.0,
        stop_gradient: float = 0.6,
    ) -> None:
        self.tap_dims = tuple(tap_dims)
        self.hidden = hidden
        self.weight = weight
        self.margin = margin
        self.stop_gradient = stop_gradient
        self.module: LossPredictionModule | None = None

    def settings(self) -> dict:
        return {
            "tap_dims": list(self.tap_dims),
            "hidden": self.hidden,
            "weight": self.weight,
            "margin": self.margin,
            "stop_gradient": self.stop_gradient,
        }

    def setup(self, model: nn.Module) -> nn.Module:
        self.module = LossPredictionModule(self.tap_dims, self.hidden).to(model_device(model))
        return self.module

    def _module(self) -> LossPredictionModule:
        if self.module is None:
            raise ValueError("learning_loss: call setup(model) before training or querying")
        return self.module

    def training_loss(self, model: nn.Module, batch: Any, *, epoch: int, epochs: int) -> torch.Tensor:
        logits, taps = logits_and_taps(model, batch)
        per_sample = nn.functional.cross_entropy(logits, batch.y, reduction="none")
        if epoch >= self.stop_gradient * epochs:
            taps = [t.detach() for t in taps]
        predicted = self._module()(taps)
        return per_sample.mean() + self.weight * ranking_loss(predicted, per_sample, self.margin)

    @torch.no_grad()
    def predicted_losses(self, model: nn.Module, pool: Pool, *, check: bool = True) -> torch.Tensor:
        """float32 [len(pool)] predicted losses, in pool order, on the CPU (eval mode meanwhile).

        With ``check``, raises ValueError when a prediction is not finite (a diverged module)."""
        module = self._module()
        device = model_device(model)
        was_training = model.training, module.training
        model.eval()
        module.eval()
        try:
            scores = [
                module(model.encoder(batch.to(device), return_taps=True)[1]).float().cpu() for _, batch in pool.chunks()
            ]
        finally:
            model.train(was_training[0])
            module.train(was_training[1])
        predicted = torch.cat(scores) if scores else torch.empty(0)
        if check:
            _check_finite(int((~torch.isfinite(predicted)).sum()), len(predicted))
        return predicted

    def query(self, model: nn.Module, pool: Pool, k: int, *, rng: np.random.Generator) -> np.ndarray:
        from alkernels import acquisition

        self.check_k(pool, k)
        positions, _ = acquisition.topk(self.predicted_losses(model, pool), k)
        return pool.indices[torch.as_tensor(positions).cpu().numpy().astype(np.int64)]

    def query_distributed(
        self, model: nn.Module, pool: Pool, k: int, *, rng: np.random.Generator, group: Any = None
    ) -> np.ndarray:
        """Each rank predicts the losses of its pool shard; the exact top-k is merged on every
        rank (``alkernels.distributed.topk_distributed``)."""
        from alkernels import distributed

        self.check_k(pool, k)
        start, part = pool.shard(distributed.rank(group), distributed.world_size(group))
        predicted = self.predicted_losses(model, part, check=False)
        bad = distributed.all_reduce_sum([float((~torch.isfinite(predicted)).sum())], group=group)[0]
        _check_finite(int(bad), len(pool))  # the same verdict on every rank, so none is left waiting
        positions, _ = distributed.topk_distributed(predicted, k, offset=start, group=group)
        return pool.indices[positions.numpy().astype(np.int64)]
