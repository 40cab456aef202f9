"""The batched-graph container that models consume (built by ``alkernels.data.collate``)."""

from __future__ import annotations

from collections.abc import Callable
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
        forces: per-atom force labels, float32 [n, 3] in eV/Angstrom, or None.
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
    forces: torch.Tensor | None = None

    @property
    def num_graphs(self) -> int:
        """B, the number of graphs (a symbolic int while ``torch.compile`` or ``export`` traces)."""
        return self.ptr.shape[0] - 1

    @property
    def num_nodes(self) -> int:
        """n, the number of atoms (symbolic while tracing)."""
        return self.z.shape[0]

    @property
    def num_edges(self) -> int:
        """E, the number of directed edges (symbolic while tracing)."""
        return self.edge_src.shape[0]

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "GraphBatch":
        return replace(
            self, **{f.name: (None if (t := getattr(self, f.name)) is None else fn(t)) for f in fields(self)}
        )

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "GraphBatch":
        """A copy with every tensor moved to ``device``."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "GraphBatch":
        """A copy in pinned (page-locked) host memory, for fast asynchronous copies to a GPU;
        ``torch.utils.data.DataLoader(pin_memory=True)`` calls it on every batch."""
        return self._map(lambda t: t.pin_memory())


# A pytree node: torch.export, torch.compile and torch.utils._pytree flatten a batch into its
# tensors (y and forces may be None), so exported programs take a GraphBatch as their input. An
# exported program saves its example inputs, and torch.export.load reads them with
# weights_only=True: a batch holds tensors only, so it is allowed there.
torch.export.register_dataclass(GraphBatch, serialized_type_name="alkernels.data.batch.GraphBatch")
torch.serialization.add_safe_globals([GraphBatch])
