"""Model-free strategies: random, centre of mass and UMAP orders.

Centre of mass and UMAP rank the whole training set once (furthest from the centre first) and
each query takes the first ``k`` still-unlabelled structures of that ranking. The ranking is
computed on the first query for a dataset, kept for the strategy's lifetime, and, with
``cache_dir``, stored on disk keyed by a hash of the features, so repeated runs (seeds, reset
variants) reuse it.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import torch
from torch import nn

from alkernels._extras import missing_extra
from alkernels._paths import user_path
from alkernels.data._store import load_cached_array, save_cached_array
from alkernels.strategies.base import Pool, Strategy

#: Number of atomic-number slots in the UMAP composition descriptor (Z = 1..99).
MAX_Z = 99


class RandomStrategy(Strategy):
    """k distinct pool members drawn without replacement from the loop's generator.

    The paper's framework drew with replacement and so labelled fewer than k when an index
    repeated; here every query labels exactly k.
    """

    name = "random"

    def query(self, model: nn.Module, pool: Pool, k: int, *, rng: np.random.Generator) -> np.ndarray:
        self.check_k(pool, k)
        return pool.indices[rng.choice(len(pool), size=k, replace=False)]


class OrderStrategy(Strategy):
    """Query in a fixed, model-free order over the training set (furthest from a centre first).

    Subclasses implement :meth:`features` (float64 [N, D], one row per dataset item) and
    :meth:`order_from_features`, and override :meth:`settings` with everything besides the
    features that changes the order (it is part of the cache key and of a run's identity).

    Args:
        cache_dir: optional folder for the computed order (one small ``.npy`` per dataset and
            settings; ``~`` expands).
    """

    def __init__(self, cache_dir: str | os.PathLike | None = None) -> None:
        self.cache_dir = user_path(cache_dir)
        self._dataset_id: int | None = None
        self._rank: np.ndarray | None = None

    def features(self, pool: Pool) -> np.ndarray:
        """float64 [N, D], a descriptor of every item of ``pool.dataset`` (all N, not the pool)."""
        raise NotImplementedError

    def order_from_features(self, features: np.ndarray) -> np.ndarray:
        """int64 [N], dataset indices sorted by preference (best first)."""
        raise NotImplementedError

    def order(self, pool: Pool) -> np.ndarray:
        """int64 [N], the ranking of the whole dataset, computed once and cached."""
        if self._rank is not None and self._dataset_id == id(pool.dataset):
            return self._rank
        feats = self.features(pool)
        path = None
        if self.cache_dir is not None:
            digest = hashlib.sha1(np.ascontiguousarray(feats).tobytes())
            digest.update(json.dumps(self.settings(), sort_keys=True).encode())
            key = digest.hexdigest()[:16]
            path = self.cache_dir / f"{self.name}-order-{feats.shape[0]}-{key}.npy"
            rank = load_cached_array(path)  # checksummed; a damaged entry is removed and rebuilt
            if rank is not None and rank.shape == (feats.shape[0],) and rank.dtype == np.int64:
                self._dataset_id, self._rank = id(pool.dataset), rank
                return rank
        rank = np.asarray(self.order_from_features(feats), dtype=np.int64)
        if path is not None:
            save_cached_array(path, rank)
        self._dataset_id, self._rank = id(pool.dataset), rank
        return rank

    def query(self, model: nn.Module, pool: Pool, k: int, *, rng: np.random.Generator) -> np.ndarray:
        self.check_k(pool, k)
        rank = self.order(pool)
        in_pool = np.isin(rank, pool.indices)
        return rank[in_pool][:k]


def _furthest_first(points: np.ndarray) -> np.ndarray:
    """int64 [N], indices sorted by Euclidean distance to the mean of ``points`` [N, D],
    furthest first; ties go to the lower index."""
    dist = np.linalg.norm(points - points.mean(axis=0), axis=1)
    return np.lexsort((np.arange(len(dist)), -dist)).astype(np.int64)


def _per_graph(pool: Pool) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(z int64 [n_i], pos float64 [n_i, 3], cell float64 [3, 3]) for every item of the dataset."""
    everything = Pool(pool.dataset, np.arange(len(pool.dataset)), pool.batch_size, pool.collate_fn)
    out = []
    for _, batch in everything.chunks():
        ptr = batch.ptr.tolist()
        for g in range(batch.num_graphs):
            sl = slice(ptr[g], ptr[g + 1])
            out.append((batch.z[sl], batch.pos[sl].double(), batch.cell[g].double()))
    return out


class CenterOfMassStrategy(OrderStrategy):
    """Furthest-from-the-dataset-centre first, by each structure's centre of mass.

    Per structure: the centre of its atoms' Cartesian positions weighted by atomic mass
    (``weights="mass"``, default) or by atomic number (``weights="z"``); the global centre is the
    mean over the dataset.
    """

    name = "center_of_mass"

    def __init__(self, weights: str = "mass", cache_dir: str | os.PathLike | None = None) -> None:
        if weights not in ("mass", "z"):
            raise ValueError(f"center_of_mass weights must be 'mass' or 'z', got {weights!r}")
        super().__init__(cache_dir)
        self.weights = weights

    def settings(self) -> dict:
        return {"weights": self.weights}

    def features(self, pool: Pool) -> np.ndarray:
        try:
            from ase.data import atomic_masses
        except ImportError as err:
            raise missing_extra("data", "center_of_mass (atomic masses)", err) from err

        masses = torch.as_tensor(atomic_masses, dtype=torch.float64)
        rows = []
        for z, pos, _ in _per_graph(pool):
            w = masses[z] if self.weights == "mass" else z.double()
            rows.append(((w[:, None] * pos).sum(0) / w.sum()).numpy())
        return np.stack(rows)

    def order_from_features(self, features: np.ndarray) -> np.ndarray:
        return _furthest_first(features)


class UmapStrategy(OrderStrategy):
    """Furthest-from-the-centre first in a 2-D UMAP embedding of a model-free descriptor.

    The paper did not publish its UMAP input features. Here each structure is described by its
    composition (atom fractions over Z = 1..99) plus two standardised structure terms, the log
    atom count and the log volume per atom. UMAP (umap-learn) runs with ``random_state`` so the
    order is reproducible, then structures are sorted by distance to the mean of the 2-D
    embedding, furthest first.

    Args:
        n_neighbors: UMAP neighbourhood size (clipped to N - 1).
        random_state: UMAP seed.
        cache_dir: see :class:`OrderStrategy`.
    """

    name = "umap"

    def __init__(
        self, n_neighbors: int = 15, random_state: int = 0, cache_dir: str | os.PathLike | None = None
    ) -> None:
        super().__init__(cache_dir)
        self.n_neighbors = n_neighbors
        self.random_state = random_state

    def settings(self) -> dict:
        return {
            "n_neighbors": self.n_neighbors,
            "random_state": self.random_state,
            "descriptor": "composition+log_atoms+log_volume",
        }

    def features(self, pool: Pool) -> np.ndarray:
        rows = []
        for z, _, cell in _per_graph(pool):
            comp = np.bincount(z.numpy() - 1, minlength=MAX_Z)[:MAX_Z] / z.numel()
            volume = abs(float(torch.linalg.det(cell)))
            rows.append(np.concatenate([comp, [np.log(z.numel()), np.log(max(volume, 1e-9) / z.numel())]]))
        feats = np.stack(rows)
        tail = feats[:, MAX_Z:]
        feats[:, MAX_Z:] = (tail - tail.mean(0)) / np.where(tail.std(0) > 0, tail.std(0), 1.0)
        return feats

    def order_from_features(self, features: np.ndarray) -> np.ndarray:
        n = features.shape[0]
        if n < 4:
            raise ValueError(f"umap needs at least 4 structures, got {n}")
        try:
            import umap
        except ImportError as err:
            raise missing_extra("study", "the umap strategy", err) from err

        reducer = umap.UMAP(
            n_components=2,
            n_neighbors=min(self.n_neighbors, n - 1),
            n_jobs=1,
            random_state=self.random_state,
            init="spectral" if n > 50 else "random",
        )
        # numba's OpenMP layer resets the process-wide OpenMP thread count, which torch shares:
        # without restoring it, every later training step runs with a different thread count.
        threads = torch.get_num_threads()
        try:
            embedding = reducer.fit_transform(features)
        finally:
            torch.set_num_threads(threads)
        return _furthest_first(embedding.astype(np.float64))
