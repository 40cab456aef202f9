"""Task heads on top of the EGNN encoder: space-group classification and property regression."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from alkernels.data.batch import GraphBatch
from alkernels.models.egnn import EGNN, EGNNConfig
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
        self._settings = {
            "dropout": dropout,
            "hidden": hidden,
            "activation": activation,
            "norm": norm,
            "num_classes": num_classes,
        }
        self.inp = nn.Sequential(
            nn.Linear(encoder.out_dim, hidden), _norm(norm, hidden), activation_module(activation), nn.Dropout(dropout)
        )
        self.block = nn.Sequential(
            nn.Linear(hidden, hidden), _norm(norm, hidden), activation_module(activation), nn.Dropout(dropout)
        )
        self.out = nn.Linear(hidden, num_classes)

    def embed(self, batch: GraphBatch) -> torch.Tensor:
        """Encoder output, float [B, encoder.out_dim]."""
        return self.encoder(batch)

    def settings(self) -> dict:
        """The head's and the encoder's settings (JSON-serialisable; part of a run's identity)."""
        return {**self._settings, "encoder": self.encoder.settings()}

    def head(self, emb: torch.Tensor) -> torch.Tensor:
        """Logits [B, num_classes] from embeddings [B, encoder.out_dim]."""
        z = self.inp(emb)
        return self.out(z + self.block(z))

    def forward(self, batch: GraphBatch) -> torch.Tensor:
        """Logits, float [B, num_classes]."""
        return self.head(self.embed(batch))

    @torch.no_grad()
    def mc_logits(self, batch: GraphBatch, T: int) -> torch.Tensor:
        """MC-dropout logits [T, B, num_classes] for scoring, with only the dropout layers active
        (normalisation layers stay in eval mode, so the passes never update BatchNorm statistics);
        every module's mode is restored after. The paper's encoder has no dropout, so it runs
        once and the head T times; an encoder with dropout (``EGNNConfig.dropout``, a variant)
        runs T times as well. Runs under ``torch.no_grad()``: the logits carry no autograd
        graph, whatever the caller's grad mode (train through :meth:`forward` instead)."""
        if T < 1:
            raise ValueError(f"T must be positive, got {T}")
        modes = [(m, m.training) for m in self.modules()]
        try:
            self.eval()
            stochastic_encoder = any(isinstance(m, nn.Dropout) for m in self.encoder.modules())
            emb = None if stochastic_encoder else self.embed(batch)
            for m in self.modules():
                if isinstance(m, nn.Dropout):
                    m.train()
            if emb is None:
                return torch.stack([self.head(self.embed(batch)) for _ in range(T)])
            return torch.stack([self.head(emb) for _ in range(T)])
        finally:
            for m, mode in modes:
                m.train(mode)


def paper_classifier(
    backend: str = "auto",
    dropout: float = 0.1,
    precision: str = "fp32",
    num_classes: int = 230,
    encoder_dropout: float = 0.0,
) -> SpaceGroupClassifier:
    """The paper's classifier: the default :class:`EGNN` and the toolkit head, 230 logits.

    Args:
        backend: edge-op backend (see :mod:`alkernels.ops.dispatch`).
        dropout: head dropout (MC-dropout strategies need > 0).
        precision: matmul precision of the fused edge kernels (see :class:`EGNN`).
        num_classes: logits; 230 for space groups, fewer for a coarser label mode.
        encoder_dropout: dropout on the encoder's node state (``EGNNConfig.dropout``; 0 in the
            paper's model, a labelled variant otherwise).
    """
    encoder = EGNN(EGNNConfig(dropout=encoder_dropout), backend=backend, precision=precision)
    return SpaceGroupClassifier(encoder, dropout=dropout, num_classes=num_classes)


class PropertyRegressor(nn.Module):
    """EGNN encoder + one small MLP head per scalar property, with per-property normalisation.

    Each head is ``Linear(out_dim, hidden) -> act -> Dropout -> Linear(hidden, 1)``; the heads
    predict normalised values ``z = (y - mean) / std`` and are stacked to [B, P] in the order of
    ``targets``. The normalisation (buffers ``target_mean`` and ``target_std``, float [P],
    default 0 and 1) is part of the state dict, so it is saved and loaded with the weights.
    :meth:`forward` returns physical units; :meth:`loss` ignores missing labels (NaN).

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
        if not targets or len(set(targets)) != len(targets) or not all(isinstance(t, str) and t for t in targets):
            raise ValueError(f"targets must be a non-empty list of distinct names, got {targets!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.encoder = encoder
        self.targets = list(targets)
        self.hidden, self.dropout, self.activation = hidden, dropout, activation
        self.heads = nn.ModuleDict({name: self.new_head() for name in self.targets})
        self.register_buffer("target_mean", torch.zeros(len(self.targets)))
        self.register_buffer("target_std", torch.ones(len(self.targets)))

    def new_head(self) -> nn.Sequential:
        """A freshly initialised head with this model's layout (not registered)."""
        return nn.Sequential(
            nn.Linear(self.encoder.out_dim, self.hidden),
            activation_module(self.activation),
            nn.Dropout(self.dropout),
            nn.Linear(self.hidden, 1),
        )

    def set_normalization(self, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor) -> None:
        """Set the per-property ``mean`` and ``std`` (each [P]; every std must be > 0)."""
        mean_t = torch.as_tensor(mean, dtype=self.target_mean.dtype).reshape(-1)
        std_t = torch.as_tensor(std, dtype=self.target_std.dtype).reshape(-1)
        p = len(self.targets)
        if mean_t.shape != (p,) or std_t.shape != (p,):
            raise ValueError(
                f"mean and std need {p} entries (one per target), got {tuple(mean_t.shape)} and {tuple(std_t.shape)}"
            )
        if not (torch.isfinite(mean_t).all() and torch.isfinite(std_t).all() and (std_t > 0).all()):
            raise ValueError(
                f"normalisation must be finite with std > 0, got mean {mean_t.tolist()}, std {std_t.tolist()}"
            )
        self.target_mean.copy_(mean_t)
        self.target_std.copy_(std_t)

    def normalize(self, y: torch.Tensor) -> torch.Tensor:
        """Physical values [B, P] -> normalised ``(y - mean) / std`` (NaN stays NaN)."""
        return (y - self.target_mean) / self.target_std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised values [B, P] -> physical units ``z * std + mean``."""
        return z * self.target_std + self.target_mean

    def embed(self, batch: GraphBatch) -> torch.Tensor:
        """Encoder output, float [B, encoder.out_dim]."""
        return self.encoder(batch)

    def head(self, emb: torch.Tensor) -> torch.Tensor:
        """Normalised predictions [B, P] from embeddings [B, encoder.out_dim]."""
        return torch.cat([self.heads[name](emb) for name in self.targets], dim=1)

    def forward(self, batch: GraphBatch) -> torch.Tensor:
        """Predictions in physical units, float [B, P] with P = len(targets)."""
        return self.denormalize(self.head(self.embed(batch)))

    @staticmethod
    def loss(pred: torch.Tensor, y: torch.Tensor, reduction: str = "entries", error: str = "squared") -> torch.Tensor:
        """Mean error over the labelled entries of ``y`` [B, P] (NaN = missing).

        Args:
            pred: predictions [B, P]. y: labels [B, P], NaN where a structure lacks a property.
            reduction: ``"entries"``: the mean over all labelled entries (a property with more
                labels weighs more); ``"properties"``: the mean over properties of each one's mean
                over its labelled entries, properties without a label in ``y`` left out (every
                property weighs the same, as in multi-property pre-training).
            error: ``"squared"`` (MSE) or ``"absolute"`` (L1, which targets the MAE).

        Returns a zero (still differentiable) loss when no entry is labelled; missing entries get
        exactly zero gradient.
        """
        if pred.shape != y.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and y {tuple(y.shape)} differ in shape")
        if error not in ("squared", "absolute"):
            raise ValueError(f"error must be 'squared' or 'absolute', got {error!r}")
        mask = torch.isfinite(y)
        diff = torch.where(mask, pred - torch.where(mask, y, torch.zeros_like(y)), torch.zeros_like(pred))
        per_entry = diff * diff if error == "squared" else diff.abs()
        if reduction == "entries":
            return per_entry.sum() / mask.sum().clamp(min=1)
        if reduction == "properties":
            counts = mask.sum(dim=0)
            per_property = per_entry.sum(dim=0) / counts.clamp(min=1)
            return per_property.sum() / (counts > 0).sum().clamp(min=1)
        raise ValueError(f"reduction must be 'entries' or 'properties', got {reduction!r}")
