"""Task heads on top of the EGNN encoder: space-group classification and property regression."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from alkernels.data.batch import GraphBatch
from alkernels.models.egnn import EGNN
from alkernels.ops.activations import activation_module


def _norm(name: str | None, width: int) -> nn.Module:
    if name is None:
        return nn.Identity()
    if name == "layer":
        return nn.LayerNorm(width)
    if name == "batch":
        return nn.BatchNorm1d(width)
    raise ValueError(f"norm must be None, 'layer' or 'batch', got {name!r}")


class SpaceGroupClassifier(nn.Module):
    """EGNN encoder + the toolkit's classification head, 230 space-group logits.

    Head: ``z = drop(act(norm(L1 emb)))``, residual block ``z = z + drop(act(norm(L2 z)))``,
    ``logits = L3 z``. Dropout is never applied to the logits. Labels are space-group numbers
    minus one (0..229); train with mean cross-entropy.

    Args:
        encoder: the :class:`EGNN` (its ``out_dim`` is the head's input width).
        dropout: dropout probability inside the head (needed > 0 for MC-dropout strategies).
        hidden: head width.
        activation: ``"relu"`` or ``"silu"``. norm: ``None``, ``"layer"`` or ``"batch"``.
        num_classes: number of logits.
    """

    def __init__(
        self,
        encoder: EGNN,
        dropout: float = 0.1,
        hidden: int = 128,
        activation: str = "relu",
        norm: str | None = None,
        num_classes: int = 230,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.encoder = encoder
        self.inp = nn.Sequential(nn.Linear(encoder.out_dim, hidden), _norm(norm, hidden), activation_module(activation), nn.Dropout(dropout))
        self.block = nn.Sequential(nn.Linear(hidden, hidden), _norm(norm, hidden), activation_module(activation), nn.Dropout(dropout))
        self.out = nn.Linear(hidden, num_classes)

    def embed(self, batch: GraphBatch) -> torch.Tensor:
        """Encoder output, float [B, encoder.out_dim]."""
        return self.encoder(batch)

    def head(self, emb: torch.Tensor) -> torch.Tensor:
        """Logits [B, num_classes] from embeddings [B, encoder.out_dim]."""
        z = self.inp(emb)
        return self.out(z + self.block(z))

    def forward(self, batch: GraphBatch) -> torch.Tensor:
        """Logits, float [B, num_classes]."""
        return self.head(self.embed(batch))

    def mc_logits(self, batch: GraphBatch, T: int) -> torch.Tensor:
        """MC-dropout logits [T, B, num_classes]: the encoder runs once (it has no dropout), the
        head T times with only its dropout active (normalisation layers stay in eval mode, so the
        passes never update BatchNorm statistics); every module's mode is restored after."""
        if T < 1:
            raise ValueError(f"T must be positive, got {T}")
        modes = [(m, m.training) for m in self.modules()]
        try:
            self.eval()
            emb = self.embed(batch)
            for m in self.modules():
                if isinstance(m, nn.Dropout):
                    m.train()
            return torch.stack([self.head(emb) for _ in range(T)])
        finally:
            for m, mode in modes:
                m.train(mode)


def paper_classifier(backend: str = "auto", dropout: float = 0.1, precision: str = "fp32",
                     num_classes: int = 230) -> SpaceGroupClassifier:
    """The paper's classifier: the default :class:`EGNN` and the toolkit head, 230 logits.

    Args:
        backend: edge-op backend (see :mod:`alkernels.ops.dispatch`).
        dropout: head dropout (MC-dropout strategies need > 0).
        precision: Triton matmul precision (see :class:`EGNN`).
        num_classes: logits; 230 for space groups, fewer for a coarser label mode.
    """
    return SpaceGroupClassifier(EGNN(backend=backend, precision=precision), dropout=dropout,
                                num_classes=num_classes)


class PropertyRegressor(nn.Module):
    """EGNN encoder + one small MLP head per scalar property.

    Each head is ``Linear(out_dim, hidden) -> act -> Dropout -> Linear(hidden, 1)``; the output
    stacks them to [B, P] in the order of ``targets``. :meth:`loss` ignores missing labels (NaN).

    Args:
        encoder: the :class:`EGNN`.
        targets: property names, e.g. ``["formation_energy", "band_gap"]``.
        hidden: head width. dropout: dropout inside each head. activation: ``"relu"``/``"silu"``.
    """

    def __init__(
        self,
        encoder: EGNN,
        targets: Sequence[str],
        hidden: int = 128,
        dropout: float = 0.0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if not targets or len(set(targets)) != len(targets):
            raise ValueError(f"targets must be a non-empty list of distinct names, got {targets!r}")
        self.encoder = encoder
        self.targets = list(targets)
        self.heads = nn.ModuleDict(
            {
                name: nn.Sequential(
                    nn.Linear(encoder.out_dim, hidden), activation_module(activation), nn.Dropout(dropout), nn.Linear(hidden, 1)
                )
                for name in self.targets
            }
        )

    def embed(self, batch: GraphBatch) -> torch.Tensor:
        """Encoder output, float [B, encoder.out_dim]."""
        return self.encoder(batch)

    def forward(self, batch: GraphBatch) -> torch.Tensor:
        """Predictions, float [B, P] with P = len(targets)."""
        emb = self.embed(batch)
        return torch.cat([self.heads[name](emb) for name in self.targets], dim=1)

    @staticmethod
    def loss(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean squared error over the labelled entries of ``y`` [B, P] (NaN = missing).

        Returns a zero (still differentiable) loss when no entry is labelled.
        """
        if pred.shape != y.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and y {tuple(y.shape)} differ in shape")
        mask = torch.isfinite(y)
        diff = torch.where(mask, pred - torch.where(mask, y, torch.zeros_like(y)), torch.zeros_like(pred))
        return (diff * diff).sum() / mask.sum().clamp(min=1)
