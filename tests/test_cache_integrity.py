"""Cache entries (graphs, generated structures) are checked on load: a damaged entry is reported
by name, moved aside and rebuilt, never used; concurrent builders of one entry never corrupt it."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

from alkernels.data import _store, build_graphs

pytestmark = pytest.mark.timeout(120)


def _crystals(n: int = 6) -> list[Atoms]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        cell = 4.0 * np.eye(3) + 0.3 * rng.uniform(-1, 1, (3, 3))
        frac = np.array([[0, 0, 0], [0.5, 0.5, 0.5], [0.25, 0.5, 0.0]]) + 0.02 * rng.uniform(-1, 1, (3, 3))
        out.append(Atoms(numbers=[11, 17, 8], scaled_positions=frac, cell=cell, pbc=True))
    return out


def _fresh_process() -> None:
    """Forget which entries this process verified, as a new process would."""
    _store._VERIFIED.clear()


def _entry(cache: Path) -> Path:
    (entry,) = [p for p in cache.iterdir() if p.name.startswith("graphs-") and ".damaged" not in p.name]
    return entry


FIELDS = ("edge_src", "edge_dst", "edge_shift", "edge_vec")


def _copy(graphs) -> dict[str, np.ndarray]:
    """The edge arrays in memory (the originals are memory maps of files the tests damage)."""
    return {f: np.array(getattr(graphs, f)) for f in FIELDS}


def _same(a, b: dict[str, np.ndarray]) -> bool:
    return all(np.array_equal(getattr(a, f), b[f]) for f in FIELDS)


def _damage(entry: Path, how: str) -> None:
    if how == "bitflip":  # same size, different bytes: only the checksum sees it
        data = bytearray((entry / "edge_vec.bin").read_bytes())
        data[5] ^= 0x40
        (entry / "edge_vec.bin").write_bytes(bytes(data))
    elif how == "truncate":
        data = (entry / "edge_src.bin").read_bytes()
        (entry / "edge_src.bin").write_bytes(data[: len(data) // 2])
    elif how == "no_header":
        (entry / _store.HEADER).unlink()
    elif how == "bad_header":
        (entry / _store.HEADER).write_text("{not json")


@pytest.mark.parametrize("how", ["bitflip", "truncate", "no_header", "bad_header"])
def test_damaged_graph_cache_is_reported_moved_aside_and_rebuilt(tmp_path: Path, how: str) -> None:
    cache = tmp_path / "cache"
    good = _copy(build_graphs(_crystals(), cutoff=4.0, workers=1, cache_dir=cache))
    entry = _entry(cache)
    _damage(entry, how)
    _fresh_process()
    with pytest.warns(RuntimeWarning, match=rf"cache entry .*{entry.name}.*moved aside"):
        again = build_graphs(_crystals(), cutoff=4.0, workers=1, cache_dir=cache)
    assert _same(again, good)
    assert len([p for p in cache.iterdir() if ".damaged-" in p.name]) == 1
    _fresh_process()
    assert _same(build_graphs(_crystals(), cutoff=4.0, workers=1, cache_dir=cache), good)  # rebuilt entry is intact


def test_load_store_names_the_damaged_array(tmp_path: Path) -> None:
    build_graphs(_crystals(), cutoff=4.0, workers=1, cache_dir=tmp_path)
    entry = _entry(tmp_path)
    _damage(entry, "bitflip")
    _fresh_process()
    with pytest.raises(_store.DamagedStoreError, match="edge_vec.bin does not match its checksum"):
        _store.load_store(entry)
    _damage(entry, "truncate")
    with pytest.raises(_store.DamagedStoreError, match=r"edge_src.bin has \d+ bytes, expected \d+"):
        _store.load_store(entry, verify=False)


def _build_in_child(cache: str, queue: "multiprocessing.Queue") -> None:
    graphs = build_graphs(_crystals(40), cutoff=5.0, workers=1, cache_dir=cache)
    queue.put(int(graphs.edge_vec.sum() * 1000))


def test_concurrent_builders_share_one_intact_entry(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_build_in_child, args=(str(tmp_path), queue)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=100)
        assert p.exitcode == 0
    sums = {queue.get(timeout=5) for _ in procs}
    assert len(sums) == 1
    entries = [p for p in tmp_path.iterdir() if p.name.startswith("graphs-")]
    assert len(entries) == 1 and not [p for p in tmp_path.iterdir() if p.name.startswith(".graphs-")]
    _fresh_process()
    _store.load_store(entries[0])  # intact, checksums included


def test_damaged_generated_structures_are_rebuilt(tmp_path: Path) -> None:
    from alkernels.data import synthetic_crystals

    good = synthetic_crystals(3, seed=5, workers=1, cache_dir=tmp_path).labels.copy()
    (entry,) = [p for p in tmp_path.iterdir() if p.name.startswith("synthetic-")]
    labels = entry / "labels.bin"
    labels.write_bytes(np.full(3, 7, dtype=np.int64).tobytes())  # same size, wrong labels
    _fresh_process()
    with pytest.warns(RuntimeWarning, match="labels.bin does not match its checksum"):
        again = synthetic_crystals(3, seed=5, workers=1, cache_dir=tmp_path)
    assert np.array_equal(again.labels, good)
