"""An interatomic potential on the EGNN: per-structure energies and per-atom forces ``-dE/dx``.

The forces are the gradient of the energy through every EGNN layer (the edge op's backward on
the fused backends), and a loss on them needs that gradient's gradient: training differentiates
the fused op twice (``alkernels::egnn_edge_backward`` is itself differentiable, see
:mod:`alkernels.ops.message_passing.op`).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from alkernels.data.batch import GraphBatch
from alkernels.models.egnn import EGNN, sum_pool
from alkernels.ops.activations import activation_module


class EnergyForceModel(nn.Module):
    """EGNN encoder + a per-atom energy head; forces are ``-dE/d(positions)``.

    ``E_b = scale * sum_{i in b} e_i + shift * n_b`` with ``e_i = head(node_i)``, where ``node_i``
    is the encoder's per-atom embedding (:meth:`EGNN.node_features`) and ``head`` is
    ``Linear(proj_dim, hidden) -> act -> Linear(hidden, 1)``; the sum makes the energy
    extensive. ``shift`` (eV per atom) and ``scale`` (eV) are buffers set by
    :meth:`set_normalization` and saved with the weights. ``F_i = -dE/dx_i`` through the whole
    encoder, the fused edge op included.

    Args:
        encoder: the :class:`EGNN` (any backend; ReLU MLPs run on the fused kernels).
        hidden: width of the energy head. activation: ``"relu"`` or ``"silu"``.

    ``forward`` builds the graph of the forces only when gradients are enabled, so that a loss on
    them can be back-propagated (training); under ``torch.no_grad()`` it still returns forces,
    without a graph.

    ``torch.compile(model, fullgraph=True)`` compiles energies and forces with no graph break
    when ``torch._dynamo.config.trace_autograd_ops`` is True (PyTorch's switch for tracing
    ``torch.autograd.grad``) and the batch's positions already require grad
    (``batch.pos.requires_grad_()``: a compiled region cannot return outputs of a tensor it made
    require grad itself).
    """

    def __init__(self, encoder: EGNN, hidden: int = 128, activation: str = "relu") -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Sequential(
            nn.Linear(encoder.out_dim, hidden), activation_module(activation), nn.Linear(hidden, 1)
        )
        self._settings = {"hidden": hidden, "activation": activation}
        self.register_buffer("energy_shift", torch.zeros(()))
        self.register_buffer("energy_scale", torch.ones(()))

    def settings(self) -> dict:
        """The head's and the encoder's settings (JSON-serialisable)."""
        return {**self._settings, "encoder": self.encoder.settings()}

    def set_normalization(self, shift: float, scale: float) -> None:
        """Energy per atom ``shift`` (eV) and ``scale`` (eV, > 0): typically the mean energy per
        atom of the training set, and the RMS of its force components times 1 Angstrom (then the
        head's outputs start at the forces' order of magnitude; the per-atom energies' standard
        deviation is the choice for energies alone)."""
        if not (torch.isfinite(torch.tensor([shift, scale])).all() and scale > 0):
            raise ValueError(f"normalisation must be finite with scale > 0, got shift {shift}, scale {scale}")
        self.energy_shift.fill_(shift)
        self.energy_scale.fill_(scale)

    def energy(self, batch: GraphBatch) -> torch.Tensor:
        """Energies [B] (eV) in the parameters' dtype (also under autocast, where the head's Linear
        layers return the autocast dtype: the sum over atoms and the forces stay in full precision)."""
        atoms = self.head(self.encoder.node_features(batch))[:, 0].to(self.energy_scale.dtype)
        counts = (batch.ptr[1:] - batch.ptr[:-1]).to(atoms.dtype)
        total = sum_pool(atoms[:, None], batch.batch, batch.num_graphs)[:, 0]
        return self.energy_scale * total + self.energy_shift * counts

    def forward(self, batch: GraphBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(energy [B], forces [n, 3])`` in eV and eV/Angstrom, float in the parameters' dtype.

        With gradients enabled the forces carry the graph that a force loss needs (create_graph);
        under ``torch.no_grad()`` they are plain values."""
        create = torch.is_grad_enabled()
        pos = batch.pos if batch.pos.requires_grad else batch.pos.detach().requires_grad_(True)
        with torch.enable_grad():
            energy = self.energy(replace(batch, pos=pos))
            (grad,) = torch.autograd.grad(energy.sum(), pos, create_graph=create)
        if not create:
            energy = energy.detach()
        return energy, -grad.to(energy.dtype)

    @staticmethod
    def loss(
        energy: torch.Tensor,
        forces: torch.Tensor,
        batch: GraphBatch,
        energy_weight: float = 1.0,
        force_weight: float = 1.0,
    ) -> torch.Tensor:
        """``energy_weight * mean(((E - E_ref) / n_atoms)^2) + force_weight * mean((F - F_ref)^2)``.

        Args:
            energy: predicted [B]. forces: predicted [n, 3].
            batch: holds the references: ``y`` [B] or [B, 1] energies (eV) and ``forces`` [n, 3]
                (eV/Angstrom); NaN marks a missing label (a structure without an energy, atoms
                without forces), which then adds nothing.

        Returns:
            a 0-d tensor (eV^2 per atom^2 and eV^2 / Angstrom^2, weighted).
        """
        if batch.y is None or batch.forces is None:
            raise ValueError("the batch needs reference energies (y) and forces for the loss")
        ref_e = batch.y.reshape(-1).to(energy.dtype)
        if ref_e.shape != energy.shape or batch.forces.shape != forces.shape:
            raise ValueError(
                f"references {tuple(ref_e.shape)}, {tuple(batch.forces.shape)} do not match the "
                f"predictions {tuple(energy.shape)}, {tuple(forces.shape)}"
            )
        counts = (batch.ptr[1:] - batch.ptr[:-1]).clamp(min=1).to(energy.dtype)
        return energy_weight * _masked_mse((energy - ref_e) / counts) + force_weight * _masked_mse(
            forces - batch.forces.to(forces.dtype)
        )


def _masked_mse(diff: torch.Tensor) -> torch.Tensor:
    """Mean of ``diff**2`` over its finite entries (NaN references add nothing, with zero gradient)."""
    ok = torch.isfinite(diff)
    sq = torch.where(ok, diff, torch.zeros_like(diff)) ** 2
    return sq.sum() / ok.sum().clamp(min=1)
