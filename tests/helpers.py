"""Shared test infrastructure: the backends and devices tests run on, tolerance checks, and the
small stand-ins (random crystal batches, toy structures and models, a toy AL loop, a NumPy GP,
simple CIF crystals) that several test modules use. Fixtures live in ``conftest.py``; no test
module imports another."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from alkernels import strategies
from alkernels.cli import main
from alkernels.data.batch import GraphBatch
from alkernels.loop import TIMING_KEYS, ActiveLearningLoop, LoopConfig, LoopRuntime
from alkernels.models import EGNNConfig, EGNNLayer
from alkernels.models.egnn import edge_shift_vectors
from alkernels.ops.dispatch import ext, triton_usable
from alkernels.ops.message_passing import EdgeWeights, build_edge_graph, egnn_edge_op
from alkernels.strategies import Pool

# -- backends and devices ------------------------------------------------------------------------
HAS_EXT = ext() is not None
needs_ext = pytest.mark.skipif(not HAS_EXT, reason="alkernels._C not built")
#: Triton kernels run on CUDA, or on the CPU under TRITON_INTERPRET=1.
HAS_TRITON = triton_usable(torch.zeros(0)) or torch.cuda.is_available()
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="needs TRITON_INTERPRET=1 or a CUDA device")
#: The fused backends as pytest parameters, skipped where they cannot run.
FUSED = [pytest.param("cpu", marks=needs_ext), pytest.param("triton", marks=needs_triton)]
#: Every backend of the op vocabulary as pytest parameters.
BACKENDS = ["torch", *FUSED]


def device_of(backend: str) -> str:
    """Where a backend's tests run: Triton on CUDA when there is a GPU, else the CPU."""
    return "cuda" if backend == "triton" and torch.cuda.is_available() else "cpu"


_SHIFTS = torch.tensor(list(itertools.product((-1, 0, 1), repeat=3)), dtype=torch.float64)


def random_cell(gen: torch.Generator, size: float) -> torch.Tensor:
    """A random, well-conditioned lattice [3, 3] (rows are the vectors)."""
    return torch.eye(3, dtype=torch.float64) * size + 0.6 * torch.rand(3, 3, generator=gen, dtype=torch.float64)


def graph_edges(pos: torch.Tensor, cell: torch.Tensor, cutoff: float, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Brute-force edges of one crystal: (pairs [E, 2] as (src, dst), shifts [E, 3])."""
    n = pos.shape[0]
    images = pos[None, :, :] + (_SHIFTS @ cell)[:, None, :]  # [27, n, 3], image s of atom j
    dist = (images[:, :, None, :] - pos[None, None, :, :]).norm(dim=-1)  # [27, j, i]
    not_self = ~torch.eye(n, dtype=torch.bool)
    zero = (_SHIFTS == 0).all(dim=1)  # [27]
    if mode == "matsciml":
        # i != j with min-image distance in (0, cutoff); raw in-cell vector, no images
        keep = zero[:, None, None] & (not_self & (dist.min(dim=0).values < cutoff))[None]
    else:
        keep = (dist < cutoff) & ~(zero[:, None, None] & ~not_self[None])
    s, j, i = keep.nonzero(as_tuple=True)
    shifts = _SHIFTS[s].float() if mode == "periodic" else torch.zeros(s.numel(), 3)
    return torch.stack([j, i], dim=1), shifts


Structure = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # z [n], pos [n, 3] f64, cell [3, 3] f64


def random_structures(sizes: list[int], seed: int = 0, cell_size: float = 4.0) -> list[Structure]:
    """Random crystals with ``sizes[g]`` atoms each: (z, Cartesian pos, cell), float64."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for n in sizes:
        cell = random_cell(gen, cell_size)
        frac = torch.rand(n, 3, generator=gen, dtype=torch.float64)
        out.append((torch.randint(1, 99, (n,), generator=gen), frac @ cell, cell))
    return out


def build_batch(structures: list[Structure], mode: str = "periodic", cutoff: float = 3.5) -> GraphBatch:
    """A GraphBatch of ``structures`` with brute-force edges sorted by receiver."""
    src, dst, shift, bidx = [], [], [], []
    offset = 0
    for g, (_, p, cell) in enumerate(structures):
        pairs, sh = graph_edges(p, cell, cutoff, mode)
        src.append(pairs[:, 0] + offset)
        dst.append(pairs[:, 1] + offset)
        shift.append(sh)
        bidx.append(torch.full((p.shape[0],), g, dtype=torch.int64))
        offset += p.shape[0]
    src_t, dst_t, shift_t = torch.cat(src), torch.cat(dst), torch.cat(shift)
    order = torch.sort(dst_t, stable=True).indices
    ptr = torch.tensor([0, *itertools.accumulate(s[0].numel() for s in structures)], dtype=torch.int64)
    return GraphBatch(
        z=torch.cat([s[0] for s in structures]),
        pos=torch.cat([s[1] for s in structures]).float(),
        cell=torch.stack([s[2] for s in structures]).float(),
        edge_src=src_t[order],
        edge_dst=dst_t[order],
        edge_shift=shift_t[order],
        batch=torch.cat(bidx),
        ptr=ptr,
        y=torch.arange(len(structures), dtype=torch.int64) % 230,
    )


def random_batch(sizes: list[int], mode: str = "periodic", cutoff: float = 3.5, seed: int = 0) -> GraphBatch:
    """A GraphBatch of random crystals with ``sizes[g]`` atoms each."""
    return build_batch(random_structures(sizes, seed), mode, cutoff)


def op_inputs(sizes, mode, cutoff, dtype, seed=0, config=EGNNConfig()):
    """Inputs of one layer with the model's init, the coordinate gate scaled up to matter."""
    torch.manual_seed(seed)
    batch = random_batch(sizes, mode=mode, cutoff=cutoff, seed=seed)
    layer = EGNNLayer(config).to(dtype)
    with torch.no_grad():
        layer.coord_mlp[-1].weight.mul_(500.0)
    weights = EdgeWeights(*(w.detach().clone().requires_grad_() for w in layer.edge_weights()))
    n = batch.num_nodes
    h = torch.randn(n, config.node_dim, dtype=dtype, requires_grad=True)
    x = batch.pos.to(dtype).requires_grad_()
    graph = build_edge_graph(batch.edge_src, batch.edge_dst, n)
    return h, x, edge_shift_vectors(batch, dtype), graph, weights


def run(backend, h, x, shift, graph, weights, detach_norm=False):
    """Outputs and the gradients of a fixed random projection of them w.r.t. h, x and weights."""
    m, dx = egnn_edge_op(h, x, shift, graph, weights, backend=backend, detach_norm=detach_norm)
    gen = torch.Generator().manual_seed(1)
    pm = torch.randn(m.shape, generator=gen, dtype=m.dtype).to(m.device)
    px = torch.randn(dx.shape, generator=gen, dtype=dx.dtype).to(dx.device)
    loss = (m * pm).sum() + 100.0 * (dx * px).sum()
    grads = torch.autograd.grad(loss, [h, x, *weights], allow_unused=True)
    return [m, dx, *(torch.zeros_like(t) if g is None else g for g, t in zip(grads, [h, x, *weights]))]


def assert_close_all(got, want, rel):
    names = ["m", "dx", "h", "x", *EdgeWeights._fields]
    for name, a, b in zip(names, got, want):
        scale = b.abs().max().item() if b.numel() else 0.0
        err = (a - b).abs().max().item() if b.numel() else 0.0
        assert err <= rel * max(scale, 1e-30), f"{name}: max error {err:.3e} vs scale {scale:.3e}"


@dataclass
class Item:
    """One toy structure: atoms ``z`` int64 [n] at ``pos`` float32 [n, 3] in ``cell`` [3, 3]."""

    z: torch.Tensor
    pos: torch.Tensor
    cell: torch.Tensor
    y: int | None


def toy_collate(items: list[Item]) -> GraphBatch:
    """Concatenate toy items into a GraphBatch without edges."""
    counts = [int(it.z.numel()) for it in items]
    ptr = torch.tensor([0] + counts).cumsum(0)
    ys = [it.y for it in items]
    return GraphBatch(
        z=torch.cat([it.z for it in items]),
        pos=torch.cat([it.pos for it in items]),
        cell=torch.stack([it.cell for it in items]),
        edge_src=torch.zeros(0, dtype=torch.long),
        edge_dst=torch.zeros(0, dtype=torch.long),
        edge_shift=torch.zeros(0, 3),
        batch=torch.repeat_interleave(torch.arange(len(items)), torch.tensor(counts)),
        ptr=ptr,
        y=None if any(y is None for y in ys) else torch.tensor(ys, dtype=torch.long),
    )


def tagged_items(n: int) -> list[Item]:
    """n one-atom items; item i sits at x = i so a lookup model can recognise it."""
    return [
        Item(torch.tensor([1 + i % 90]), torch.tensor([[float(i), 0.0, 0.0]]), torch.eye(3) * 10, 0) for i in range(n)
    ]


class LookupModel(nn.Module):
    """Returns ``table[:, i]`` for item i: fixed logits [T, N, C]; forward gives pass 0."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table)
        self.passes_seen: list[int] = []

    def _ids(self, batch: GraphBatch) -> torch.Tensor:
        return batch.pos[batch.ptr[:-1], 0].round().long()

    def forward(self, batch: GraphBatch) -> torch.Tensor:
        return self.table[0, self._ids(batch)]

    def mc_logits(self, batch: GraphBatch, passes: int) -> torch.Tensor:
        self.passes_seen.append(passes)
        return self.table[:passes, self._ids(batch)]


def confident(c: int, classes: int = 4, strength: float = 8.0) -> torch.Tensor:
    out = torch.zeros(classes)
    out[c] = strength
    return out


def make_pool(n: int, indices=None, batch_size: int = 2) -> Pool:
    return Pool(
        tagged_items(n),
        np.arange(n) if indices is None else np.asarray(indices),
        batch_size=batch_size,
        collate_fn=toy_collate,
    )


RNG = np.random.default_rng(0)


def umap_items(n: int = 30) -> list[Item]:
    """Na-Cl structures of varied composition and volume."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        z = torch.tensor([11] * int(rng.integers(1, 8)) + [17] * int(rng.integers(1, 8)))
        out.append(Item(z, torch.zeros(len(z), 3), torch.eye(3) * float(rng.uniform(3, 6)), 0))
    return out


class TapModel(nn.Module):
    """A tiny classifier with the EGNN's ``encoder(batch, return_taps=True)`` / ``head`` layout."""

    class Encoder(nn.Module):
        def __init__(self, width: int = 8) -> None:
            super().__init__()
            self.embed = nn.Embedding(100, width)
            self.layer = nn.Linear(width, width)

        def forward(self, batch: GraphBatch, return_taps: bool = False):
            h = self.embed(batch.z)
            pooled0 = torch.zeros(batch.num_graphs, h.shape[1]).index_add(0, batch.batch, h)
            h = torch.relu(self.layer(h))
            emb = torch.zeros(batch.num_graphs, h.shape[1]).index_add(0, batch.batch, h)
            return (emb, [pooled0, emb]) if return_taps else emb

    def __init__(self, classes: int = 3, dropout: float = 0.3) -> None:
        super().__init__()
        self.encoder = self.Encoder()
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(8, classes))

    def forward(self, batch: GraphBatch) -> torch.Tensor:
        return self.head(self.encoder(batch))

    def mc_logits(self, batch: GraphBatch, passes: int) -> torch.Tensor:
        emb = self.encoder(batch)
        was = self.head.training
        self.head.train()
        out = torch.stack([self.head(emb) for _ in range(passes)])
        self.head.train(was)
        return out


def toy_set(n: int, seed: int, labelled: bool = True) -> list[Item]:
    """n structures of 2-4 atoms; class c has its atoms drawn from Z in {10c+1 .. 10c+5}."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        c = int(rng.integers(0, 3))
        z = torch.tensor(rng.integers(10 * c + 1, 10 * c + 6, size=int(rng.integers(2, 5))))
        out.append(Item(z, torch.zeros(len(z), 3), torch.eye(3), c if labelled else None))
    return out


TRAIN, TEST = toy_set(40, 0), toy_set(20, 1)


def make_loop(tmp_path, strategy="margin", name="run", **kw) -> ActiveLearningLoop:
    """A short seeded loop of TapModel on the toy sets; ``kw`` are LoopConfig fields, or
    ``eval_batch_size`` / ``device`` / ``distributed`` for its LoopRuntime."""
    runtime = {k: kw.pop(k) for k in ("eval_batch_size", "device", "distributed", "progress") if k in kw}
    config = LoopConfig(
        **{**dict(initial=0.1, query_size=0.1, rounds=4, epochs=2, seed=0, batch_size=6, lr=3e-2), **kw}
    )
    strat = strategies.get(strategy, tap_dims=(8, 8), hidden=4) if strategy == "learning_loss" else strategy
    return ActiveLearningLoop(
        TapModel, strat, TRAIN, TEST, config, out_dir=tmp_path / name,
        runtime=LoopRuntime(**{"eval_batch_size": 8, **runtime}), collate_fn=toy_collate,
    )  # fmt: skip


def without_timings(records):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


#: (formula, crystal structure, lattice constant a in Angstrom) of simple crystals.
CRYSTALS = [
    ("Cu", "fcc", 3.6),
    ("Fe", "bcc", 2.87),
    ("Si", "diamond", 5.43),
    ("NaCl", "rocksalt", 5.64),
    ("GaAs", "zincblende", 5.65),
    ("Mg", "hcp", 3.21),
    ("CsCl", "cesiumchloride", 4.12),
    ("CaF2", "fluorite", 5.46),
]


def cli(*args) -> int:
    return main([str(a) for a in args])


def assert_packed_report_rebuilds(out, tmp_path, table: str) -> None:
    """The compact form of a grid (``runs.jsonl`` + ``experiment.json``, what gets committed)
    alone rebuilds the same ``table.md``, and holds no machine paths."""
    packed = tmp_path / "packed"
    packed.mkdir()
    for name in ("runs.jsonl", "experiment.json"):
        (packed / name).write_bytes((out / name).read_bytes())
    assert str(tmp_path) not in (packed / "runs.jsonl").read_text() + (packed / "experiment.json").read_text()
    assert cli("report", packed) == 0
    assert (packed / "table.md").read_text() == table


# -- an independent closed-form GP (NumPy, direct pairwise differences) -------------------------
def np_kernel(kernel: str, a: np.ndarray, b: np.ndarray, ls: np.ndarray, s2: float) -> np.ndarray:
    diff = (a[:, None, :] - b[None, :, :]) / ls
    r = np.sqrt((diff**2).sum(-1))
    if kernel == "matern12":
        g = np.exp(-r)
    elif kernel == "matern32":
        g = (1 + np.sqrt(3) * r) * np.exp(-np.sqrt(3) * r)
    elif kernel == "matern52":
        g = (1 + np.sqrt(5) * r + 5 * r**2 / 3) * np.exp(-np.sqrt(5) * r)
    else:
        g = np.exp(-0.5 * r**2)
    return s2 * g


def np_gp(kernel, x, y, xq, ls, s2, noise, mean):
    """Posterior mean and latent variance by a Cholesky solve, straight from the textbook."""
    k = np_kernel(kernel, x, x, ls, s2) + noise * np.eye(len(x))
    low = np.linalg.cholesky(k)
    ks = np_kernel(kernel, x, xq, ls, s2)
    alpha = np.linalg.solve(low.T, np.linalg.solve(low, y - mean))
    v = np.linalg.solve(low, ks)
    return mean + ks.T @ alpha, s2 - (v**2).sum(0)
