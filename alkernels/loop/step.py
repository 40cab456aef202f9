"""A training step for the GPU path: fixed shapes, no host synchronisation, fused optimiser.

On a GPU the step of the paper's classifier is a few hundred small kernels, so what costs time
besides the edge op is launch overhead and the host waiting for the device. :class:`TrainStep`
removes both:

* batches are padded to **buckets** of fixed node, edge and graph counts (:func:`bucket_for`,
  :func:`pad_batch`), so every step of a bucket has the same shapes;
* nothing in the step reads a value back to the host: the encoder skips its value checks
  (``EGNN.validate_inputs``; batches are checked once when padded), the CSR layouts are built
  with ``searchsorted`` (:func:`alkernels.ops.message_passing.build_edge_graph`), the loss is
  returned as a tensor;
* the node MLPs, readout and head run under bfloat16 autocast (``amp=True``); the fused edge op
  takes float32 inputs and uses its own ``precision``;
* the optimiser is AdamW with ``fused=True`` (one kernel for all parameters) on CUDA;
* with ``graphs=True`` each bucket's step (forward, backward, optimiser) is captured once in a
  CUDA graph and replayed: one launch per step.

On the CPU none of this applies: ``TrainStep`` then runs the plain eager step (same numbers as
the AL loop's). Padding nodes carry atomic number 0 (the embedding's frozen zero row), belong to
one extra padding graph whose label is ``ignore_index``, and padding edges are self-loops on the
last padding node (zero length, so they move no coordinate); real graphs' outputs do not depend
on the padding.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from alkernels.data.batch import GraphBatch
from alkernels.loop.trainer import Trainer
from alkernels.models.egnn import check_batch

#: Label of the padding graph; ``cross_entropy`` ignores it.
IGNORE_INDEX = -100


def bucket_for(batch: GraphBatch, node_step: int = 256, edge_step: int = 4096) -> tuple[int, int, int]:
    """The bucket ``(nodes, edges, graphs)`` of ``batch``: node and edge counts rounded up to
    multiples of ``node_step`` / ``edge_step`` (at least one padding node), graphs + 1 (the
    padding graph). Few distinct buckets means few captured graphs."""
    nodes = (batch.num_nodes // node_step + 1) * node_step
    edges = -(-max(batch.num_edges, 1) // edge_step) * edge_step
    return nodes, edges, batch.num_graphs + 1


def pad_batch(batch: GraphBatch, nodes: int, edges: int, graphs: int) -> GraphBatch:
    """``batch`` padded to exactly ``nodes`` atoms, ``edges`` edges and ``graphs`` graphs.

    Checks the batch's values once (atomic numbers, edge order) so the step need not.

    Raises:
        ValueError: the bucket is smaller than the batch, or the batch breaks its contract.
    """
    check_batch(batch)
    n, e, b = batch.num_nodes, batch.num_edges, batch.num_graphs
    if nodes <= n or edges < e or graphs <= b:
        raise ValueError(
            f"bucket (nodes {nodes}, edges {edges}, graphs {graphs}) must exceed the batch's "
            f"({n} nodes, {e} edges, {b} graphs) by a padding node and graph"
        )
    if e and bool((batch.edge_dst[1:] < batch.edge_dst[:-1]).any()):
        raise ValueError("edge_dst must be sorted (non-decreasing)")
    if n and (int(batch.z.min()) < 0 or int(batch.z.max()) > 255):
        raise ValueError("atomic numbers must be non-negative")
    dev = batch.z.device
    pad_n, pad_e, pad_b = nodes - n, edges - e, graphs - b
    last = torch.full((pad_e,), nodes - 1, dtype=torch.int64, device=dev)
    ptr_tail = torch.full((pad_b,), nodes, dtype=torch.int64, device=dev)
    y = batch.y
    if y is not None:
        fill = torch.full(
            (pad_b, *y.shape[1:]),
            IGNORE_INDEX if not y.is_floating_point() else float("nan"),
            dtype=y.dtype,
            device=dev,
        )
        y = torch.cat([y, fill])
    return replace(
        batch,
        z=torch.cat([batch.z, torch.zeros(pad_n, dtype=batch.z.dtype, device=dev)]),
        pos=torch.cat([batch.pos, torch.zeros(pad_n, 3, dtype=batch.pos.dtype, device=dev)]),
        cell=torch.cat([batch.cell, torch.eye(3, dtype=batch.cell.dtype, device=dev).expand(pad_b, 3, 3)]),
        edge_src=torch.cat([batch.edge_src, last]),
        edge_dst=torch.cat([batch.edge_dst, last]),
        edge_shift=torch.cat([batch.edge_shift, torch.zeros(pad_e, 3, dtype=batch.edge_shift.dtype, device=dev)]),
        batch=torch.cat([batch.batch, torch.full((pad_n,), b, dtype=torch.int64, device=dev)]),
        ptr=torch.cat([batch.ptr, ptr_tail]),
        y=y,
        forces=None
        if batch.forces is None
        else torch.cat([batch.forces, torch.full((pad_n, 3), float("nan"), dtype=batch.forces.dtype, device=dev)]),
    )


class TrainStep:
    """One optimiser step of a classifier on a batch: ``loss = step(batch)``.

    Args:
        model: a classifier mapping a :class:`GraphBatch` to logits [B, C] whose encoder is
            ``model.encoder`` (an :class:`alkernels.models.EGNN`), e.g.
            :func:`alkernels.models.paper_classifier`.
        lr, weight_decay: AdamW settings.
        amp: run the node MLPs, readout and head under bfloat16 autocast (CUDA only).
        graphs: capture each bucket's step in a CUDA graph and replay it (CUDA only).
        node_step, edge_step: bucket granularity (see :func:`bucket_for`).

    Returns from ``step(batch)``: the mean cross-entropy over the real graphs, a 0-d float32
    tensor on the model's device (read it with ``.item()`` outside the hot loop, if at all).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        amp: bool = True,
        graphs: bool = False,
        node_step: int = 256,
        edge_step: int = 4096,
    ) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        cuda = self.device.type == "cuda"
        self.amp = amp and cuda
        self.graphs = graphs and cuda
        self.node_step, self.edge_step = node_step, edge_step
        params = [p for p in model.parameters() if p.requires_grad]
        # CUDA graphs replay into fixed gradient buffers: zero them in place, never free them
        self.trainer = Trainer.adamw(
            params, lr=lr, weight_decay=weight_decay, fused=cuda, capturable=self.graphs, set_to_none=not self.graphs
        )
        self.optimizer = self.trainer.optimizer
        if cuda:
            model.encoder.validate_inputs = False
        self._captured: dict[tuple[int, int, int], tuple[torch.cuda.CUDAGraph, GraphBatch, torch.Tensor]] = {}

    def _loss(self, batch: GraphBatch) -> torch.Tensor:
        # autocast's weight-cast cache must be off under CUDA-graph capture (PyTorch's guidance)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp, cache_enabled=not self.graphs):
            logits = self.model(batch)
        return nn.functional.cross_entropy(logits.float(), batch.y, ignore_index=IGNORE_INDEX)

    def _eager(self, batch: GraphBatch) -> torch.Tensor:
        return self.trainer.step(self._loss(batch))

    def _padded(self, batch: GraphBatch, key: tuple[int, int, int]) -> GraphBatch:
        """``batch`` padded to bucket ``key`` (on the host when it is there, where the value
        checks cost nothing) and moved to the model's device without waiting."""
        padded = pad_batch(batch, *key)
        if padded.z.device == self.device:
            return padded
        if padded.z.device.type == "cpu":
            padded = replace(padded, **{k: v.pin_memory() for k, v in vars(padded).items() if v is not None})
        return replace(
            padded, **{k: v.to(self.device, non_blocking=True) for k, v in vars(padded).items() if v is not None}
        )

    def _replay(self, batch: GraphBatch, key: tuple[int, int, int]) -> torch.Tensor:
        if key not in self._captured:
            static = self._padded(batch, key)
            for p in self.model.parameters():  # gradients live in fixed buffers across replays
                if p.requires_grad and p.grad is None:
                    p.grad = torch.zeros_like(p)
            # warm up outside the graph (kernel compilation, optimiser state, allocations), then
            # undo the warm-up's updates in place so that training sees exactly one step per call
            params = [p for p in self.model.parameters() if p.requires_grad]
            weights = [p.detach().clone() for p in params]
            before = {
                p: {k: v.clone() for k, v in self.optimizer.state[p].items()}
                for p in params
                if p in self.optimizer.state
            }
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    self._eager(static)
            torch.cuda.current_stream().wait_stream(side)
            with torch.no_grad():
                for p, w in zip(params, weights):
                    p.copy_(w)
                    for k, v in self.optimizer.state[p].items():
                        if p in before:
                            v.copy_(before[p][k])
                        else:
                            v.zero_()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                loss = self._eager(static)
            self._captured[key] = (graph, static, loss)
        graph, static, loss = self._captured[key]
        padded = self._padded(batch, key)
        for name in ("z", "pos", "cell", "edge_src", "edge_dst", "edge_shift", "batch", "ptr", "y", "forces"):
            if getattr(padded, name) is not None:
                getattr(static, name).copy_(getattr(padded, name), non_blocking=True)
        graph.replay()
        return loss.clone()  # the captured loss buffer is overwritten by the next replay

    def __call__(self, batch: GraphBatch) -> torch.Tensor:
        """One step on ``batch`` (labels ``batch.y`` int64 [B]; best passed on the host, as the
        data loader yields it: padding and checks happen there); returns the loss tensor."""
        if batch.y is None:
            raise ValueError("the batch has no labels y")
        self.model.train()
        if self.device.type != "cuda":
            return self._eager(batch)
        key = bucket_for(batch, self.node_step, self.edge_step)
        if self.graphs:
            return self._replay(batch, key)
        return self._eager(self._padded(batch, key))
