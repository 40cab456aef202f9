"""Content hashing, an atomic on-disk array store (raw arrays + JSON header) and a chunked process pool."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np

from alkernels._locking import NOFOLLOW
from alkernels._locking import lock as lock_file
from alkernels._logging import progress_bar
from alkernels._paths import user_path

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


class DamagedStoreError(ValueError):
    """A cache entry that cannot be used (missing header, wrong sizes, checksum mismatch)."""


#: Store paths whose checksums this process has verified (with the header's mtime).
_VERIFIED: set[tuple[str, int]] = set()


#: The file a builder holds an exclusive lock on for as long as its temporary folder is live.
_BUILDING = ".building"
#: A temporary build folder without that lock file (an older alkernels, or a builder between
#: creating its folder and locking) is left alone until it is this old (seconds).
_UNLOCKED_GRACE = 24 * 3600


def _remove_dead_builds(path: Path) -> None:
    """Delete the temporary folders of builds of ``path`` that no live builder holds.

    A builder keeps an exclusive lock (:mod:`alkernels._locking`) on ``<tmp>/.building`` while it
    writes; the OS drops it when the builder exits or dies. Taking that lock decides liveness,
    which holds across PID namespaces (containers), and on shared filesystems whose locks the
    nodes share (NFSv4, Lustre with flock), where process ids mean nothing; a folder without the
    file is removed only once it is a day old."""
    for tmp in path.parent.glob(f".{path.name}.*"):
        if not tmp.is_dir():
            continue
        lock = tmp / _BUILDING
        try:
            fd = os.open(lock, os.O_RDWR | NOFOLLOW)
        except FileNotFoundError:
            try:
                if time.time() - tmp.stat().st_mtime > _UNLOCKED_GRACE:
                    shutil.rmtree(tmp, ignore_errors=True)
            except FileNotFoundError:
                pass
            continue
        except OSError:
            continue
        try:
            lock_file(fd, blocking=False)
        except OSError:  # a live builder holds it
            os.close(fd)
            continue
        shutil.rmtree(tmp, ignore_errors=True)
        os.close(fd)


class ArrayWriter:
    """Accumulate named arrays chunk by chunk, in memory or streamed into a cache directory.

    With ``path`` set, chunks go to ``<name>.bin`` files in a temporary sibling directory that is
    renamed to ``path`` by :meth:`finish`, so an interrupted write never leaves a partial cache;
    the header records each array's dtype, shape, byte size and sha256.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._meta: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}
        self._parts: dict[str, list[np.ndarray]] = {}
        self._hashes: dict[str, "hashlib._Hash"] = {}
        self._tmp: Path | None = None
        self._lock_fd: int | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            _remove_dead_builds(path)
            self._tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", dir=path.parent))
            self._lock_fd = os.open(self._tmp / _BUILDING, os.O_RDWR | os.O_CREAT | NOFOLLOW, 0o644)
            lock_file(self._lock_fd)

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
            data = array.tobytes()
            self._hashes.setdefault(name, hashlib.sha256()).update(data)
            with open(self._tmp / f"{name}.bin", "ab") as handle:
                handle.write(data)

    def finish(self, attrs: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Close the store; returns its arrays (memory-mapped when on disk) and ``attrs``.

        When another process finished the same entry first, its entry is kept and returned."""
        if self._tmp is None:
            arrays = {
                name: np.concatenate(parts) if len(parts) > 1 else parts[0] for name, parts in self._parts.items()
            }
            return arrays, attrs
        assert self.path is not None
        arrays_meta = {}
        for name, (dtype, shape) in self._meta.items():
            digest = self._hashes.get(name, hashlib.sha256()).hexdigest()
            nbytes = int(np.prod(shape)) * dtype.itemsize
            arrays_meta[name] = {"dtype": dtype.str, "shape": list(shape), "nbytes": nbytes, "sha256": digest}
        for name in arrays_meta:
            if not (self._tmp / f"{name}.bin").exists():
                (self._tmp / f"{name}.bin").touch()
            with open(self._tmp / f"{name}.bin", "rb+") as handle:
                os.fsync(handle.fileno())
        header = self._tmp / HEADER
        with open(header, "w", encoding="utf-8") as handle:
            handle.write(json.dumps({"attrs": attrs, "arrays": arrays_meta}, indent=1))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.replace(self._tmp, self.path)  # still locked: no one removes it meanwhile
            (self.path / _BUILDING).unlink(missing_ok=True)
        except OSError:  # another process finished the same key first: keep theirs
            shutil.rmtree(self._tmp, ignore_errors=True)
        self._release()
        return load_store(self.path)

    def abort(self) -> None:
        """Discard a partial on-disk store."""
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
        self._release()

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def load_store(path: Path, *, verify: bool = True) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Open a store written by :class:`ArrayWriter`: read-only memory maps and its attrs.

    Every load checks that each array file exists with the recorded size; the sha256 of every
    array is also checked the first time a process opens the entry (``verify``).

    Raises:
        DamagedStoreError: a missing or unreadable header, a missing or wrongly sized array file,
            or a checksum mismatch; the message names the entry and the array.
    """
    try:
        header_path = path / HEADER
        mtime = header_path.stat().st_mtime_ns
        header = json.loads(header_path.read_text())
        specs = header["arrays"]
        attrs = header["attrs"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DamagedStoreError(f"cache entry {path}: unreadable header ({type(err).__name__}: {err})") from err
    arrays: dict[str, np.ndarray] = {}
    check = verify and (str(path), mtime) not in _VERIFIED
    for name, spec in specs.items():
        dtype, shape = np.dtype(spec["dtype"]), tuple(spec["shape"])
        file = path / f"{name}.bin"
        nbytes = int(np.prod(shape)) * dtype.itemsize
        size = file.stat().st_size if file.is_file() else -1
        if size != nbytes:
            raise DamagedStoreError(f"cache entry {path}: {file.name} has {size} bytes, expected {nbytes}")
        if check and "sha256" in spec:
            digest = hashlib.sha256()
            with open(file, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 24), b""):
                    digest.update(block)
            if digest.hexdigest() != spec["sha256"]:
                raise DamagedStoreError(f"cache entry {path}: {file.name} does not match its checksum")
        arrays[name] = (
            np.zeros(shape, dtype=dtype) if nbytes == 0 else np.memmap(file, dtype=dtype, mode="r", shape=shape)
        )
    if check:
        _VERIFIED.add((str(path), mtime))
    return arrays, attrs


def open_cached(path: Path | None) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """The intact store at ``path``, or None when there is none (or ``path`` is None).

    A damaged entry is never used: it is reported (a warning naming it and the reason), moved
    aside to ``<name>.damaged-<pid>-<ns>`` and None is returned, so the caller rebuilds it.
    """
    if path is None or not path.exists():
        return None
    try:
        return load_store(path)
    except DamagedStoreError as err:
        aside = path.with_name(f"{path.name}.damaged-{os.getpid()}-{time.time_ns()}")
        try:
            os.rename(path, aside)
        except OSError:  # another process moved or replaced it meanwhile
            pass
        warnings.warn(f"{err}; moved aside to {aside.name} and rebuilding", RuntimeWarning, stacklevel=2)
        return None


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
    return [items[k : k + size] for k in range(0, len(items), size)]


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
    with progress_bar(total=sum(sizes), desc=desc, unit="struct") as bar:
        if workers == 1 or len(chunks) <= 1:
            for chunk, size in zip(chunks, sizes):
                yield fn(chunk)
                bar.update(size)
            return
        with ProcessPoolExecutor(max_workers=min(workers, len(chunks))) as pool:
            for result, size in zip(pool.map(fn, chunks), sizes):
                yield result
                bar.update(size)


def generated(
    name: str,
    n: int,
    *,
    digest: "hashlib._Hash",
    params: dict[str, Any],
    work: Callable[[Sequence[int]], list[Any]],
    append: Callable[[ArrayWriter, list[Any]], list[int]],
    workers: int | None,
    cache_dir: str | os.PathLike | None,
    chunk: int,
) -> dict[str, np.ndarray]:
    """The arrays of a generated dataset: the intact cache entry ``cache_dir/<name>-<key>``, or a
    fresh build of structures ``0 .. n-1`` that is stored there.

    Args:
        name: the generator's name (cache entry prefix and progress-bar label).
        n: structures.
        digest, params: the content the structures depend on and the generator's parameters;
            together they make the cache key.
        work: generates the structures of one chunk of indices (runs in worker processes).
        append: writes one chunk's structures to the writer; returns their atom counts.
        workers: processes (None: all cores; 1: in-process).
        cache_dir: the cache folder, or None for an in-memory build.
        chunk: at most this many structures per task.

    Returns:
        The stored arrays plus ``node_ptr`` (int64 [n + 1], atom offsets of the structures).
    """
    key = params_key(digest, params)
    path = user_path(cache_dir) / f"{name}-{key[:32]}" if cache_dir is not None else None
    cached = open_cached(path)
    if cached is not None:
        return cached[0]
    n_workers = resolve_workers(workers)
    chunks = chunked(range(n), n_workers, chunk)
    writer = ArrayWriter(path)
    sizes: list[int] = []
    try:
        for items in map_chunks(work, chunks, map(len, chunks), workers=n_workers, desc=name):
            sizes.extend(append(writer, items))
        writer.append("node_ptr", np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))
        arrays, _ = writer.finish(params)
    except BaseException:
        writer.abort()
        raise
    return arrays


def default_cache_dir() -> Path:
    """``$ALKERNELS_CACHE`` (``~`` expanded) or ``~/.cache/alkernels``: generated structures,
    graphs, orders."""
    return user_path(os.environ.get("ALKERNELS_CACHE", Path.home() / ".cache" / "alkernels"))


def save_cached_array(path: Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` (``.npy``) atomically with a SHA-256 of its bytes beside it
    (``<path>.sha256``), for :func:`load_cached_array`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.ascontiguousarray(array)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npy")
    np.save(tmp, array, allow_pickle=False)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    os.replace(tmp, path)
    sidecar = path.with_name(path.name + ".sha256")
    tmp_digest = sidecar.with_name(f".{sidecar.name}.{os.getpid()}.tmp")
    tmp_digest.write_text(digest + "\n")
    os.replace(tmp_digest, sidecar)


def load_cached_array(path: Path) -> np.ndarray | None:
    """The array :func:`save_cached_array` wrote to ``path``, or None when there is none, or when
    it is damaged (missing or mismatching checksum, unreadable): then both files are removed, so
    that the caller rebuilds the entry."""
    sidecar = path.with_name(path.name + ".sha256")
    if not path.exists():
        return None
    try:
        data = path.read_bytes()
        if sidecar.read_text().strip() != hashlib.sha256(data).hexdigest():
            raise ValueError("checksum mismatch")
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError) as err:
        warnings.warn(f"cache entry {path} is damaged ({err}); rebuilding it", RuntimeWarning, stacklevel=2)
        path.unlink(missing_ok=True)
        sidecar.unlink(missing_ok=True)
        return None
