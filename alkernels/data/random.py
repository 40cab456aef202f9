"""Random crystal-like graphs from NumPy alone, for benchmarks, GPU checks and core-only tests.

Atoms are placed uniformly in a cubic cell whose volume gives the requested number density;
edges follow the ``matsciml`` mode of ``docs/model.md``: every ordered pair i != j of the cell
whose minimum-image distance is below ``cutoff``, with the raw in-cell vector and zero shifts.
No neighbour-list library is needed, so these graphs exist wherever the core imports.
"""

from __future__ import annotations

import hashlib

import numpy as np

from alkernels.data.graphset import GraphSet


def random_graphs(
    n: int,
    *,
    atoms: tuple[int, int] = (4, 20),
    density: float = 0.07,
    cutoff: float = 20.0,
    species: tuple[int, int] = (1, 83),
    seed: int = 0,
) -> GraphSet:
    """``n`` random periodic cells as a :class:`GraphSet` in ``matsciml`` mode.

    Args:
        n: number of structures.
        atoms: inclusive range of atoms per cell, drawn uniformly.
        density: atoms per cubic Angstrom (0.07 is typical of inorganic crystals).
        cutoff: minimum-image distance below which a pair is an edge; 20 A connects every pair of
            a cell of up to a few hundred atoms, as the paper's graphs do.
        species: inclusive range of atomic numbers, drawn uniformly.
        seed: the same seed gives the same graphs.

    Returns:
        A GraphSet with ``mode="matsciml"``; atoms closer than 0.5 A are re-drawn.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 1 <= atoms[0] <= atoms[1]:
        raise ValueError(f"atoms must be a range (lo, hi) with 1 <= lo <= hi, got {atoms}")
    if density <= 0 or cutoff <= 0:
        raise ValueError(f"density and cutoff must be positive, got {density} and {cutoff}")
    rng = np.random.default_rng(seed)
    z, pos, cells, src, dst, vec = [], [], [], [], [], []
    node_ptr, edge_ptr = [0], [0]
    for _ in range(n):
        count = int(rng.integers(atoms[0], atoms[1] + 1))
        side = (count / density) ** (1.0 / 3.0)
        while True:
            p = rng.random((count, 3)) * side
            diff = p[None, :, :] - p[:, None, :]  # [i, j] = x_j - x_i
            image = diff - side * np.round(diff / side)
            dist = np.linalg.norm(image, axis=2)
            np.fill_diagonal(dist, np.inf)
            if dist.min() >= 0.5:
                break
        recv, send = np.nonzero(dist < cutoff)  # sorted by receiver, then sender
        offset = node_ptr[-1]
        z.append(rng.integers(species[0], species[1] + 1, count))
        pos.append(p)
        cells.append(np.eye(3) * side)
        src.append(send + offset)
        dst.append(recv + offset)
        vec.append(diff[recv, send])
        node_ptr.append(offset + count)
        edge_ptr.append(edge_ptr[-1] + len(recv))
    edges = np.concatenate(src).size
    params = f"random_graphs:{n}:{atoms}:{density}:{cutoff}:{species}:{seed}"
    return GraphSet(
        z=np.concatenate(z).astype(np.uint8),
        pos=np.concatenate(pos),
        cell=np.stack(cells),
        node_ptr=np.asarray(node_ptr, dtype=np.int64),
        edge_src=np.concatenate(src).astype(np.int64),
        edge_dst=np.concatenate(dst).astype(np.int64),
        edge_shift=np.zeros((edges, 3), dtype=np.int16),
        edge_vec=np.concatenate(vec).astype(np.float32),
        edge_ptr=np.asarray(edge_ptr, dtype=np.int64),
        cutoff=float(cutoff),
        mode="matsciml",
        max_neighbors=None,
        key=hashlib.sha256(params.encode()).hexdigest(),
    )
