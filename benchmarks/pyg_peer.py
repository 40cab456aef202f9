"""The EGNN peer written with PyTorch Geometric: each layer's edge work as a ``MessagePassing``.

Embedding, node MLPs, activations and pooling are the wrapped encoder's own modules, so the peer
computes the same function with the same weights; only the edge work (gather, edge MLP,
coordinate gate, scatter-add) goes through torch_geometric.
"""

from __future__ import annotations

import torch
from torch_geometric.nn import MessagePassing

from alkernels.data import GraphBatch
from alkernels.models import EGNN
from alkernels.models.egnn import EGNNLayer, check_batch, edge_shift_vectors, sum_pool


class PygEdgeOp(MessagePassing):
    """The edge work of one :class:`EGNNLayer` with sum aggregation over receivers."""

    def __init__(self, layer: EGNNLayer) -> None:
        super().__init__(aggr="add", flow="source_to_target")
        self.layer = layer

    def forward(
        self, h: torch.Tensor, x: torch.Tensor, shift: torch.Tensor, edge_index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Aggregated messages [n, hidden] and coordinate updates [n, 3]."""
        out = self.propagate(edge_index, h=h, x=x, shift=shift)
        hidden = out.shape[1] - 3
        return out[:, :hidden], out[:, hidden:]

    def message(
        self, h_i: torch.Tensor, h_j: torch.Tensor, x_i: torch.Tensor, x_j: torch.Tensor, shift: torch.Tensor
    ) -> torch.Tensor:
        """Per edge: the edge MLP output and the gated unit vector, concatenated [E, hidden + 3]."""
        d = x_j + shift - x_i
        r = d.norm(dim=1, keepdim=True)
        m = self.layer.edge_mlp(torch.cat([h_j, h_i, (d * d).sum(dim=1, keepdim=True)], dim=1))
        gate = torch.tanh(self.layer.coord_mlp(m))
        return torch.cat([m, d / (r + self.layer.cfg.eps) * gate], dim=1)


class PygEGNN(torch.nn.Module):
    """``encoder`` with every layer's edge work done by :class:`PygEdgeOp`."""

    def __init__(self, encoder: EGNN) -> None:
        super().__init__()
        self.encoder = encoder
        self.ops = torch.nn.ModuleList(PygEdgeOp(layer) for layer in encoder.layers)

    def forward(self, batch: GraphBatch) -> torch.Tensor:
        """Graph embeddings [B, proj_dim], as ``EGNN.forward``."""
        enc = self.encoder
        check_batch(batch)
        shift = edge_shift_vectors(batch, torch.float32)
        edge_index = torch.stack([batch.edge_src, batch.edge_dst])
        h, x = enc.input(enc.embedding(batch.z)), batch.pos
        for k, (layer, op) in enumerate(zip(enc.layers, self.ops)):
            m, dx = op(h, x, shift, edge_index)
            h, x = h + layer.node_mlp(torch.cat([h, m], dim=1)), x + dx
            if k < len(enc.layers) - 1:
                h = enc.act(h)
        return sum_pool(enc.projection(h), batch.batch, batch.num_graphs)
