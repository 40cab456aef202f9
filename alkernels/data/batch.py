"""The batched-graph container that models consume (built by ``alkernels.data.collate``)."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch


@dataclass
class GraphBatch:
    """A batch of B crystal graphs with n atoms and E directed edges in total.

    Edges are j -> i (``edge_src`` = j sends, ``edge_dst`` = i receives), sorted by ``edge_dst``
    so that every receiver owns one contiguous segment (CSR by receiver). The displacement of an
    edge is ``pos[src] + edge_shift @ cell[batch[src]] - pos[dst]``; in ``matsciml`` mode
    ``edge_shift`` is all zeros.

    Attributes:
        z: int64 [n], atomic numbers 1..99.
        pos: float32 [n, 3], Cartesian positions in Angstrom.
        cell: float32 [B, 3, 3], lattice vectors as rows.
        edge_src: int64 [E], sender node index (global within the batch).
        edge_dst: int64 [E], receiver node index, non-decreasing.
        edge_shift: float32 [E, 3], integer periodic-image shift of the sender, in cell units.
        batch: int64 [n], graph index of each node.
        ptr: int64 [B + 1], node offsets of the graphs.
        y: labels or targets, [B] int64 (classes) or [B, P] float32 (properties), or None.
    """

    z: torch.Tensor
    pos: torch.Tensor
    cell: torch.Tensor
    edge_src: torch.Tensor
    edge_dst: torch.Tensor
    edge_shift: torch.Tensor
    batch: torch.Tensor
    ptr: torch.Tensor
    y: torch.Tensor | None = None

    @property
    def num_graphs(self) -> int:
        """B, the number of graphs."""
        return int(self.ptr.numel() - 1)

    @property
    def num_nodes(self) -> int:
        """n, the number of atoms."""
        return int(self.z.numel())

    @property
    def num_edges(self) -> int:
        """E, the number of directed edges."""
        return int(self.edge_src.numel())

    def to(self, device: torch.device | str) -> "GraphBatch":
        """A copy with every tensor moved to ``device``."""
        moved = {
            f.name: (getattr(self, f.name).to(device) if getattr(self, f.name) is not None else None)
            for f in fields(self)
        }
        return replace(self, **moved)
