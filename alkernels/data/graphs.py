"""``build_graphs``: periodic (vesin) or matsciml-style crystal graphs, built in parallel and cached
(the ``data`` extra)."""

from __future__ import annotations

import functools
from os import PathLike
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from alkernels._extras import missing_extra
from alkernels._paths import user_path

try:
    import ase
    from vesin import NeighborList
except ImportError as err:
    raise missing_extra("data", __name__, err) from err

from alkernels.data._store import (
    ArrayWriter,
    chunked,
    map_chunks,
    open_cached,
    params_key,
    resolve_workers,
    structure_digest,
)
from alkernels.data.graphset import GraphSet
from alkernels.data.structures import (
    MAX_EDGES,
    MIN_DISTANCE,
    StructureError,
    StructureSet,
    check_graph_size,
    check_numbers_and_cell,
    check_overlaps,
    check_positions,
    check_structure,
)

MODES = ("periodic", "matsciml")
#: Longest neighbour cutoff accepted, in Angstrom (the paper's matsciml graphs use 20).
MAX_CUTOFF = 50.0
#: Bumped whenever the stored layout or the edge definition changes (invalidates old caches).
FORMAT_VERSION = 1
_CHUNK = 512

#: One structure as raw arrays: (numbers int64 [n], positions float64 [n, 3], cell float64 [3, 3]).
_Raw = tuple[np.ndarray, np.ndarray, np.ndarray]


def build_graphs(
    structures: StructureSet | Sequence[ase.Atoms],
    *,
    cutoff: float,
    mode: str = "periodic",
    max_neighbors: int | None = None,
    max_edges: int = MAX_EDGES,
    workers: int | None = None,
    cache_dir: str | PathLike | None = None,
) -> GraphSet:
    """Neighbour graphs of crystals (see ``docs/model.md`` for the two modes).

    Args:
        structures: a :class:`StructureSet` or a sequence of ``ase.Atoms`` (treated as periodic in
            all three directions; invalid structures raise ``ValueError`` naming the index).
        cutoff: neighbour cutoff in Angstrom.
        mode: ``"periodic"``: every neighbour within ``cutoff`` including periodic images (and an
            atom's own images); ``"matsciml"``: pairs i != j of the cell whose minimum-image
            distance is in (0, cutoff), both directions, no images, zero shifts, raw in-cell vectors.
        max_neighbors: periodic mode only: keep the nearest ``max_neighbors`` senders per receiver.
        max_edges: a structure whose estimated edges (its density over the cutoff sphere,
            :func:`alkernels.data.structures.estimated_edges`) exceed this is invalid, before any
            neighbour list is computed (default :data:`~alkernels.data.structures.MAX_EDGES`).
            Reading with ``read_structures(..., cutoff=...)`` rejects such rows instead.
        workers: worker processes (None: ``os.cpu_count()``; 1: in-process).
        cache_dir: if set (``~`` expands), the graphs are stored under ``cache_dir/graphs-<key>``
            (raw arrays plus a JSON header, memory-mapped on load) and reused by later calls with
            identical inputs.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not 0 < cutoff <= MAX_CUTOFF:
        raise ValueError(f"cutoff must lie in (0, {MAX_CUTOFF:g}] Angstrom, got {cutoff}")
    if max_edges < 1:
        raise ValueError(f"max_edges must be >= 1, got {max_edges}")
    if max_neighbors is not None:
        if mode == "matsciml":
            raise ValueError("max_neighbors is not part of the matsciml mode (it has no cap)")
        if max_neighbors < 1:
            raise ValueError(f"max_neighbors must be >= 1 or None, got {max_neighbors}")
    atoms = structures.atoms if isinstance(structures, StructureSet) else list(structures)
    if not atoms:
        raise ValueError("build_graphs: no structures given")
    raw: list[_Raw] = [
        (np.asarray(a.numbers, np.int64), np.asarray(a.positions, np.float64), np.asarray(a.cell[:], np.float64))
        for a in atoms
    ]
    params = {"cutoff": float(cutoff), "mode": mode, "max_neighbors": max_neighbors, "version": FORMAT_VERSION}
    key = params_key(structure_digest(*zip(*raw)), params)
    path = user_path(cache_dir) / f"graphs-{key[:32]}" if cache_dir is not None else None
    cached = open_cached(path)
    if cached is not None:
        return _graphset(*cached, path=path)

    n_nodes = sum(len(r[0]) for r in raw)
    index_dtype = np.int32 if n_nodes < 2**31 else np.int64
    writer = ArrayWriter(path)
    try:
        writer.append("z", np.concatenate([r[0] for r in raw]).astype(np.uint8))
        writer.append("pos", np.concatenate([r[1] for r in raw]))
        writer.append("cell", np.stack([r[2] for r in raw]))
        sizes = np.array([len(r[0]) for r in raw], dtype=np.int64)
        node_ptr = np.concatenate([[0], np.cumsum(sizes)])
        writer.append("node_ptr", node_ptr)
        edge_counts: list[np.ndarray] = []
        work = functools.partial(
            _chunk_edges, cutoff=float(cutoff), mode=mode, max_neighbors=max_neighbors, max_edges=max_edges
        )
        n_workers = resolve_workers(workers)
        chunks = chunked(list(enumerate(raw)), n_workers, _CHUNK)
        first = 0
        for (src, dst, shift, vec, counts), chunk in zip(
            map_chunks(work, chunks, map(len, chunks), workers=n_workers, desc="graphs"),
            chunks,
        ):
            offsets = np.repeat(node_ptr[first : first + len(chunk)], counts)
            writer.append("edge_src", (src + offsets).astype(index_dtype))
            writer.append("edge_dst", (dst + offsets).astype(index_dtype))
            writer.append("edge_shift", shift)
            writer.append("edge_vec", vec)
            edge_counts.append(counts)
            first += len(chunk)
        writer.append("edge_ptr", np.concatenate([[0], np.cumsum(np.concatenate(edge_counts))]))
        arrays, attrs = writer.finish({**params, "key": key})
    except BaseException:
        writer.abort()
        raise
    return _graphset(arrays, attrs, path=path)


def _graphset(arrays: dict[str, np.ndarray], attrs: dict[str, Any], path: Path | None) -> GraphSet:
    return GraphSet(
        **arrays,
        cutoff=attrs["cutoff"],
        mode=attrs["mode"],
        max_neighbors=attrs["max_neighbors"],
        key=attrs["key"],
        path=path,
    )


def _chunk_edges(
    chunk: Sequence[tuple[int, _Raw]], *, cutoff: float, mode: str, max_neighbors: int | None, max_edges: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Edges of a chunk of (index, structure) with local indices: (src, dst, shift, vec, counts)."""
    nl = NeighborList(cutoff=cutoff, full_list=True, n_threads=1)
    parts = []
    for index, (numbers, positions, cell) in chunk:
        try:
            check_numbers_and_cell(numbers, cell)
            check_positions(positions, len(numbers))
            check_graph_size(numbers, cell, cutoff, mode, max_edges)
            i, j, shift, vec, dist = nl.compute(positions, cell, True, quantities="ijSDd")
            if cutoff >= MIN_DISTANCE:
                check_overlaps(i, j, dist)
            else:
                check_structure(numbers, positions, cell)
        except StructureError as err:
            raise ValueError(f"build_graphs: structure {index} is invalid: {err}") from err
        if mode == "periodic":
            parts.append(_periodic_edges(i, j, shift, vec, dist, max_neighbors))
        else:
            parts.append(_matsciml_edges(i, j, positions))
    counts = np.array([len(p[0]) for p in parts], dtype=np.int64)
    src, dst, shift, vec = (np.concatenate([p[k] for p in parts]) for k in range(4))
    return src, dst, shift, vec, counts


def _periodic_edges(
    i: np.ndarray, j: np.ndarray, shift: np.ndarray, vec: np.ndarray, dist: np.ndarray, cap: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    order = np.lexsort((dist, i))
    i, j, shift, vec = i[order], j[order], shift[order], vec[order]
    if cap is not None and len(i):
        starts = np.flatnonzero(np.r_[True, i[1:] != i[:-1]])
        rank = np.arange(len(i)) - np.repeat(starts, np.diff(np.r_[starts, len(i)]))
        keep = rank < cap
        i, j, shift, vec = i[keep], j[keep], shift[keep], vec[keep]
    if len(shift) and np.abs(shift).max() > np.iinfo(np.int16).max:
        raise ValueError("build_graphs: periodic shift beyond int16; the cell is far smaller than the cutoff")
    return j.astype(np.int64), i.astype(np.int64), shift.astype(np.int16), vec.astype(np.float32)


def _matsciml_edges(
    i: np.ndarray, j: np.ndarray, positions: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = len(positions)
    pairs = np.unique(i.astype(np.int64) * n + j.astype(np.int64))
    dst, src = pairs // n, pairs % n
    keep = dst != src
    dst, src = dst[keep], src[keep]
    vec = (positions[src] - positions[dst]).astype(np.float32)
    return src, dst, np.zeros((len(src), 3), np.int16), vec
