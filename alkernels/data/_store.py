"""Content hashing, an atomic on-disk array store (raw arrays + JSON header) and a chunked process pool."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np
from tqdm.auto import tqdm

HEADER = "header.json"
_T = TypeVar("_T")
_R = TypeVar("_R")


def structure_digest(
    numbers: Sequence[np.ndarray], positions: Sequence[np.ndarray], cells: Sequence[np.ndarray]
) -> "hashlib._Hash":
    """A sha256 over every structure's atom count, int64 numbers, float64 positions and cell."""
    h = hashlib.sha256()
    for z, pos, cell in zip(numbers, positions, cells):
        h.update(np.int64(len(z)).tobytes())
        h.update(np.ascontiguousarray(z, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(pos, dtype=np.float64).tobytes())
        h.update(np.ascontiguousarray(cell, dtype=np.float64).tobytes())
    return h


def params_key(digest: "hashlib._Hash", params: dict[str, Any]) -> str:
    """Combine a content digest with JSON-serialisable parameters into a hex cache key."""
    h = digest.copy()
    h.update(json.dumps(params, sort_keys=True).encode())
    return h.hexdigest()


class ArrayWriter:
    """Accumulate named arrays chunk by chunk, in memory or streamed into a cache directory.

    With ``path`` set, chunks go to ``<name>.bin`` files in a temporary sibling directory that is
    renamed to ``path`` by :meth:`finish`, so an interrupted write never leaves a partial cache.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._meta: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}
        self._parts: dict[str, list[np.ndarray]] = {}
        self._tmp: Path | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))

    def append(self, name: str, array: np.ndarray) -> None:
        """Append ``array`` along axis 0 to the array ``name`` (same dtype and trailing shape)."""
        array = np.ascontiguousarray(array)
        if name in self._meta:
            dtype, shape = self._meta[name]
            if array.dtype != dtype or array.shape[1:] != shape[1:]:
                raise ValueError(f"{name}: chunk {array.dtype}{array.shape} does not match {dtype}{shape}")
            self._meta[name] = (dtype, (shape[0] + array.shape[0], *shape[1:]))
        else:
            self._meta[name] = (array.dtype, array.shape)
        if self._tmp is None:
            self._parts.setdefault(name, []).append(array)
        else:
            with open(self._tmp / f"{name}.bin", "ab") as handle:
                handle.write(array.tobytes())

    def finish(self, attrs: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Close the store; returns its arrays (memory-mapped when on disk) and ``attrs``."""
        if self._tmp is None:
            arrays = {
                name: np.concatenate(parts) if len(parts) > 1 else parts[0]
                for name, parts in self._parts.items()
            }
            return arrays, attrs
        assert self.path is not None
        header = {
            "attrs": attrs,
            "arrays": {n: {"dtype": d.str, "shape": list(s)} for n, (d, s) in self._meta.items()},
        }
        (self._tmp / HEADER).write_text(json.dumps(header, indent=1))
        try:
            os.replace(self._tmp, self.path)
        except OSError:  # another process finished the same key first: keep theirs
            shutil.rmtree(self._tmp, ignore_errors=True)
        return load_store(self.path)

    def abort(self) -> None:
        """Discard a partial on-disk store."""
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)


def load_store(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Open a store written by :class:`ArrayWriter`: read-only memory maps and its attrs."""
    header = json.loads((path / HEADER).read_text())
    arrays: dict[str, np.ndarray] = {}
    for name, spec in header["arrays"].items():
        dtype, shape = np.dtype(spec["dtype"]), tuple(spec["shape"])
        if int(np.prod(shape)) == 0:
            arrays[name] = np.zeros(shape, dtype=dtype)
        else:
            arrays[name] = np.memmap(path / f"{name}.bin", dtype=dtype, mode="r", shape=shape)
    return arrays, header["attrs"]


def store_exists(path: Path) -> bool:
    """Whether a complete store is at ``path``."""
    return (path / HEADER).is_file()


def resolve_workers(workers: int | None) -> int:
    """``None`` -> ``os.cpu_count()``; otherwise a positive integer."""
    if workers is None:
        return os.cpu_count() or 1
    if workers < 1:
        raise ValueError(f"workers must be >= 1 or None, got {workers}")
    return int(workers)


def chunked(items: Sequence[_T], workers: int, max_size: int) -> list[Sequence[_T]]:
    """Consecutive slices of ``items``: at least 4 per worker when possible, at most ``max_size``
    items each (the last may be shorter)."""
    size = max(1, min(max_size, -(-len(items) // (4 * workers))))
    return [items[k:k + size] for k in range(0, len(items), size)]


def map_chunks(
    fn: Callable[[_T], _R],
    chunks: Sequence[_T],
    sizes: Iterable[int],
    *,
    workers: int,
    desc: str,
) -> Iterator[_R]:
    """``fn`` over ``chunks`` in order, in ``workers`` processes (in-process when 1), with progress.

    ``sizes`` gives the number of structures in each chunk, for the progress bar.
    """
    sizes = list(sizes)
    with tqdm(total=sum(sizes), desc=desc, unit="struct", disable=None) as bar:
        if workers == 1 or len(chunks) <= 1:
            for chunk, size in zip(chunks, sizes):
                yield fn(chunk)
                bar.update(size)
            return
        with ProcessPoolExecutor(max_workers=min(workers, len(chunks))) as pool:
            for result, size in zip(pool.map(fn, chunks), sizes):
                yield result
                bar.update(size)


def default_cache_dir() -> Path:
    """``$ALKERNELS_CACHE`` or ``~/.cache/alkernels``: generated structures, graphs, orders."""
    return Path(os.environ.get("ALKERNELS_CACHE", Path.home() / ".cache" / "alkernels"))
