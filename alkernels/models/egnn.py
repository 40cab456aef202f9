"""The paper's E(n)-equivariant GNN encoder (``docs/model.md``), built on the fused edge op.

Defaults reproduce the Open MatSciML Toolkit EGNN with the paper's Table 2 hyper-parameters:
5 layers 32 wide, edge MLP 65-128-128-128, coordinate MLP 128-64-64-1 + tanh, node MLP
160-128-128-128-32, eps 0.1, sum aggregation, ReLU between layers 1-4, node projection
32-128-128-128 and a sum readout to a [B, 128] graph embedding; 600,064 parameters.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from alkernels.data.batch import GraphBatch
from alkernels.ops.activations import activation_module, check_activation
from alkernels.ops.checks import check_atomic_numbers
from alkernels.ops.dispatch import normalize_backend
from alkernels.ops.message_passing import EdgeGraph, EdgeWeights, build_edge_graph, check_precision, egnn_edge_op


@dataclass(frozen=True)
class EGNNConfig:
    """Hyper-parameters of :class:`EGNN` (defaults: the paper's Table 2).

    Attributes:
        num_layers: EGNN layers.
        node_dim: width F of the node state h.
        edge_hidden: width H of the edge MLP phi_e (and of the message m_ij).
        coord_hidden: width C of the coordinate MLP phi_x.
        node_hidden: width of the node MLP phi_h.
        proj_dim: width of the node projection and of the graph embedding.
        num_species: rows of the atomic-number embedding (Z = 0 is a frozen zero row).
        eps: added to the distance before normalising the edge direction.
        activation: ``"relu"`` (paper) or ``"silu"``; used in every MLP and between layers.
        coord_aggregation: ``"sum"`` (paper) or ``"mean"`` (original EGNN) of coordinate updates.
        detach_norm: normalise the edge direction by the detached distance (original EGNN).
        dropout: dropout probability on the node state after every layer (a variant, 0 in the
            paper's model: the toolkit's EGNN has no dropout in the encoder). With it the
            encoder is stochastic in training and in MC-dropout scoring
            (:meth:`~alkernels.models.SpaceGroupClassifier.mc_logits` then runs it T times).
    """

    num_layers: int = 5
    node_dim: int = 32
    edge_hidden: int = 128
    coord_hidden: int = 64
    node_hidden: int = 128
    proj_dim: int = 128
    num_species: int = 100
    eps: float = 0.1
    activation: str = "relu"
    coord_aggregation: str = "sum"
    detach_norm: bool = False
    dropout: float = 0.0

    def __post_init__(self) -> None:
        check_activation(self.activation)
        if self.coord_aggregation not in ("sum", "mean"):
            raise ValueError(f"coord_aggregation must be 'sum' or 'mean', got {self.coord_aggregation!r}")
        if self.num_layers < 1:
            raise ValueError("num_layers must be at least 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")

    def record(self) -> dict:
        """The fields as run identities, study settings and checkpoints record them: every field,
        ``dropout`` only when it is set, so that what was recorded before the option existed
        (the paper's model) still matches."""
        out = asdict(self)
        if not out["dropout"]:
            del out["dropout"]
        return out

    @classmethod
    def original(cls, **overrides: object) -> "EGNNConfig":
        """The Satorras et al. (2021) options: mean coordinate aggregation, direction normalised
        by the detached norm + 1e-8, SiLU. MLP layout stays the paper's unless overridden."""
        base = dict(coord_aggregation="mean", detach_norm=True, eps=1e-8, activation="silu")
        base.update(overrides)
        return cls(**base)  # type: ignore[arg-type]


def _mlp(widths: list[int], act: str, final_act: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for k, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if final_act or k < len(widths) - 2:
            layers.append(activation_module(act))
    return nn.Sequential(*layers)


class EGNNLayer(nn.Module):
    """One EGNN layer: fused edge work (:func:`egnn_edge_op`) plus the per-node update.

    ``h_i' = h_i + phi_h([h_i, m_i])`` and ``x_i' = x_i + dx_i`` (``dx_i / deg_i`` for mean
    aggregation).
    """

    def __init__(self, cfg: EGNNConfig) -> None:
        super().__init__()
        f, e, c, hid = cfg.node_dim, cfg.edge_hidden, cfg.coord_hidden, cfg.node_hidden
        self.cfg = cfg
        self.edge_mlp = _mlp([2 * f + 1, e, e, e], cfg.activation, final_act=True)
        self.coord_mlp = _mlp([e, c, c, 1], cfg.activation, final_act=False)
        # The spec's coordinate MLP ends in a bias-free Linear initialised with gain 0.001.
        last = nn.Linear(c, 1, bias=False)
        nn.init.xavier_uniform_(last.weight, gain=0.001)
        self.coord_mlp[-1] = last
        self.node_mlp = _mlp([f + e, hid, hid, hid, f], cfg.activation, final_act=False)

    def edge_weights(self) -> EdgeWeights:
        """The edge and coordinate MLP parameters in the layout of the fused op."""
        e, x = self.edge_mlp, self.coord_mlp
        return EdgeWeights(
            e[0].weight,
            e[0].bias,
            e[2].weight,
            e[2].bias,
            e[4].weight,
            e[4].bias,
            x[0].weight,
            x[0].bias,
            x[2].weight,
            x[2].bias,
            x[4].weight,
        )

    def forward(
        self,
        h: torch.Tensor,
        x: torch.Tensor,
        shift: torch.Tensor,
        graph: EdgeGraph,
        backend: str = "auto",
        precision: str = "fp32",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """h [n, F], x [n, 3], shift [E, 3] -> updated (h [n, F], x [n, 3])."""
        m, dx = egnn_edge_op(
            h,
            x,
            shift,
            graph,
            self.edge_weights(),
            eps=self.cfg.eps,
            detach_norm=self.cfg.detach_norm,
            activation=self.cfg.activation,
            backend=backend,
            precision=precision,
        )
        if self.cfg.coord_aggregation == "mean":
            deg = (graph.rowptr[1:] - graph.rowptr[:-1]).clamp(min=1).to(dx.dtype)
            dx = dx / deg[:, None]
        return h + self.node_mlp(torch.cat([h, m], dim=1)), x + dx


def edge_shift_vectors(batch: GraphBatch, dtype: torch.dtype) -> torch.Tensor:
    """[E, 3] Cartesian shift of each edge, ``edge_shift @ cell[batch[src]]`` (fixed per batch), in
    ``dtype``. An elementwise product and sum, not a matmul, so that autocast never rounds the
    shifts to a lower precision (CPU and CUDA autocast cast ``einsum`` and ``matmul``)."""
    cell = batch.cell.to(dtype)[batch.batch[batch.edge_src]]  # [E, 3, 3]
    return (batch.edge_shift.to(dtype)[:, :, None] * cell).sum(dim=1)


def sum_pool(values: torch.Tensor, batch_index: torch.Tensor, num_graphs: int) -> torch.Tensor:
    """[n, D] node values -> [B, D] per-graph sums."""
    return values.new_zeros(num_graphs, values.shape[1]).index_add_(0, batch_index, values)


def check_batch(batch: GraphBatch) -> None:
    """Raise ValueError when ``batch`` breaks the :class:`GraphBatch` contract in ways the
    encoder would otherwise crash on (dtypes, shapes, atomic numbers)."""
    n, e, b = batch.num_nodes, batch.num_edges, batch.num_graphs
    if batch.z.dtype != torch.int64 or batch.z.dim() != 1:
        raise ValueError(f"z must be 1-D int64, got {batch.z.dtype} {tuple(batch.z.shape)}")
    if batch.pos.shape != (n, 3) or not batch.pos.is_floating_point():
        raise ValueError(f"pos must be a floating [n, 3] tensor with n = {n}, got {tuple(batch.pos.shape)}")
    if batch.cell.shape != (b, 3, 3):
        raise ValueError(f"cell must be [B, 3, 3] with B = {b}, got {tuple(batch.cell.shape)}")
    if batch.edge_shift.shape != (e, 3):
        raise ValueError(f"edge_shift must be [E, 3] with E = {e}, got {tuple(batch.edge_shift.shape)}")
    if batch.batch.shape != (n,) or batch.batch.dtype != torch.int64:
        raise ValueError("batch must be int64 [n]")


class EGNN(nn.Module):
    """The EGNN encoder: ``forward(batch) -> [B, proj_dim]`` graph embeddings.

    Args:
        config: :class:`EGNNConfig` (default: the paper's Table 2).
        backend: edge-op backend, one of ``"auto"``, ``"torch"``, ``"cpu"``, ``"triton"``
            (see :mod:`alkernels.ops.dispatch`; ``"reference"`` is an alias of ``"torch"``).
        precision: matmul precision of the fused edge kernels, ``"fp32"``, ``"tf32"`` (Triton
            only; ``"auto"`` on a CPU runs it as ``"fp32"``) or ``"bf16"`` (Triton, and the C++
            CPU kernels: bfloat16 inputs to the per-edge GEMMs, float32 sums; see
            :func:`alkernels.ops.message_passing.egnn_edge_op`).

    Attributes:
        validate_inputs: check atomic numbers and edge indices on every forward (default True).
            Those checks read values back from the device; they run as registered operators
            (:mod:`alkernels.ops.checks`, ``alkernels::edge_csr``), so ``torch.compile`` keeps
            them without a graph break. A training step that validated its batches when it built
            them (:class:`alkernels.loop.step.TrainStep`) turns them off so that nothing waits for
            the GPU inside the step.
    """

    validate_inputs: bool = True

    def __init__(self, config: EGNNConfig = EGNNConfig(), backend: str = "auto", precision: str = "fp32") -> None:
        super().__init__()
        check_precision(precision)
        self.config = config
        self.backend = normalize_backend(backend)
        self.precision = precision
        self.embedding = nn.Embedding(config.num_species, config.node_dim, padding_idx=0)
        self.input = nn.Linear(config.node_dim, config.node_dim)
        self.layers = nn.ModuleList(EGNNLayer(config) for _ in range(config.num_layers))
        p = config.proj_dim
        self.projection = _mlp([config.node_dim, p, p, p], config.activation, final_act=False)
        self.act = activation_module(config.activation)
        self.node_dropout = nn.Dropout(config.dropout) if config.dropout > 0 else None

    @property
    def out_dim(self) -> int:
        """Width of the graph embedding."""
        return self.config.proj_dim

    def settings(self) -> dict:
        """The configuration (:meth:`EGNNConfig.record`), backend and precision (JSON-serialisable;
        part of a run's identity)."""
        return {**self.config.record(), "backend": self.backend, "precision": self.precision}

    def _encode(self, batch: GraphBatch, taps: list[torch.Tensor] | None) -> torch.Tensor:
        """Node projections [n, proj_dim]; appends the pooled node states of each layer to
        ``taps`` when given."""
        check_batch(batch)
        z = check_atomic_numbers(batch.z, self.config.num_species) if self.validate_inputs else batch.z
        dtype = self.input.weight.dtype
        graph = build_edge_graph(batch.edge_src, batch.edge_dst, batch.num_nodes, validate=self.validate_inputs)
        shift = edge_shift_vectors(batch, dtype)
        # .to(dtype): under autocast the Linear returns bfloat16; the node state stays float32
        h = self.input(self.embedding(z)).to(dtype)
        x = batch.pos.to(dtype)
        for k, layer in enumerate(self.layers):
            h, x = layer(h, x, shift, graph, self.backend, self.precision)
            if k < len(self.layers) - 1:
                h = self.act(h)
            if self.node_dropout is not None:
                h = self.node_dropout(h)
            if taps is not None:
                taps.append(sum_pool(h, batch.batch, batch.num_graphs))
        return self.projection(h)

    def node_features(self, batch: GraphBatch) -> torch.Tensor:
        """Per-atom embeddings [n, proj_dim] (the node projection before the sum readout), in the
        parameters' dtype; differentiable w.r.t. ``batch.pos`` (forces, see
        :class:`alkernels.models.EnergyForceModel`)."""
        return self._encode(batch, None)

    def forward(
        self, batch: GraphBatch, return_taps: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Graph embeddings of ``batch``.

        Returns:
            ``emb`` float [B, proj_dim] in the parameters' dtype; with ``return_taps`` also a list
            of ``num_layers + 1`` graph-level tensors: the sum-pooled node states [B, node_dim]
            after each layer (after its between-layer activation) and the sum-pooled
            [B, proj_dim] after the node projection (equal to ``emb``), for learning-loss heads.
        """
        taps: list[torch.Tensor] | None = [] if return_taps else None
        emb = sum_pool(self._encode(batch, taps), batch.batch, batch.num_graphs)
        if taps is not None:
            taps.append(emb)
            return emb, taps
        return emb
