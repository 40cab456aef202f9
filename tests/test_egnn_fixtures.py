"""Random crystal batches for the EGNN and message-passing tests (built without alkernels.data),
and checks that they honour the GraphBatch contract."""
from __future__ import annotations

import itertools

import torch

from alkernels.data.batch import GraphBatch

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
        z=torch.cat([s[0] for s in structures]), pos=torch.cat([s[1] for s in structures]).float(),
        cell=torch.stack([s[2] for s in structures]).float(), edge_src=src_t[order], edge_dst=dst_t[order],
        edge_shift=shift_t[order], batch=torch.cat(bidx), ptr=ptr,
        y=torch.arange(len(structures), dtype=torch.int64) % 230,
    )  # fmt: skip


def random_batch(sizes: list[int], mode: str = "periodic", cutoff: float = 3.5, seed: int = 0) -> GraphBatch:
    """A GraphBatch of random crystals with ``sizes[g]`` atoms each."""
    return build_batch(random_structures(sizes, seed), mode, cutoff)


def test_random_batch_honours_the_contract() -> None:
    for mode in ("periodic", "matsciml"):
        b = random_batch([3, 1, 4], mode=mode, cutoff=3.0)
        assert bool((b.edge_dst[1:] >= b.edge_dst[:-1]).all())
        d = b.pos[b.edge_src] + torch.einsum("ek,ekl->el", b.edge_shift, b.cell[b.batch[b.edge_src]]) - b.pos[b.edge_dst]
        assert bool((d.norm(dim=1) > 0).all())
        assert bool((b.batch[b.edge_src] == b.batch[b.edge_dst]).all())
        if mode == "matsciml":
            assert bool((b.edge_shift == 0).all())
            assert not bool(((b.edge_dst >= 3) & (b.edge_dst < 4)).any())  # the one-atom cell
        else:
            assert bool((d.norm(dim=1) < 3.0 + 1e-5).all())
