"""Datasets named by a spec string, as the CLI and the studies take them (the ``data`` extra).

Specs:

``perovskite:N``
    N perovskite-derived cells with octahedral tilts and polar distortions from
    :func:`alkernels.data.perovskite_crystals` (seed 0, cached): the embedded default, on which
    the paper's EGNN learns its space groups within minutes on a CPU.
``builtin:N``
    N random symmetric crystals from :func:`alkernels.data.synthetic_crystals` (seed 0, cached):
    230-class-like labels, but random compositions carry no chemistry-to-structure signal.
``builtin`` / ``perovskite``
    the same with a size given by the caller.
``PATH``
    any file or folder :func:`alkernels.data.read_structures` reads (``~`` expands to the home
    directory, in every path and ``cache_dir`` of this module).
``PATH,PATH,...``
    (regression data, :func:`load_regression`) several files read as one dataset, in order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from alkernels._paths import user_path
from alkernels.data import _store
from alkernels.data.dataset import GraphDataset
from alkernels.data.dataset import split as split_dataset
from alkernels.data.graphs import build_graphs
from alkernels.data.graphset import GraphSet
from alkernels.data.perovskite import perovskite_crystals
from alkernels.data.readers import read_structures
from alkernels.data.structures import StructureSet
from alkernels.data.symmetry import LABEL_MODES, class_labels
from alkernels.data.synthetic import synthetic_crystals

#: Size of plain ``builtin`` when the caller sets none: about the paper's 154,519 MP structures.
DEFAULT_BUILTIN_SIZE = 150_000
#: The generators behind ``name:N`` specs.
GENERATORS = {"builtin": synthetic_crystals, "perovskite": perovskite_crystals}


def _generator(spec: str) -> str | None:
    """The generator a spec names (``builtin``, ``perovskite``), or None for a path."""
    name = spec.partition(":")[0]
    return name if name in GENERATORS and (spec == name or spec.startswith(name + ":")) else None


@dataclass
class DatasetSplit:
    """A labelled train/test split of a dataset spec.

    Attributes:
        name: the spec it came from, as recorded (a path is reduced to its file name).
        train, test: ``GraphDataset`` views with class labels (for the default label mode,
            space-group number - 1).
        train_labels, test_labels: int64 space-group numbers (1..230) of the two parts.
        label_mode: what the classes are (``alkernels.data.LABEL_MODES``).
    """

    name: str
    train: GraphDataset
    test: GraphDataset
    train_labels: np.ndarray
    test_labels: np.ndarray
    label_mode: str = "spacegroup"

    @property
    def num_classes(self) -> int:
        """Logits the classifier needs: 230 space groups, 7 crystal systems or 14 lattices."""
        return LABEL_MODES[self.label_mode]


def spec_name(spec: str) -> str:
    """How ``spec`` is recorded in results: generator specs as given, paths by file name only
    (committed results must not carry a machine's paths; a list of paths by their names)."""
    if _generator(spec) is not None:
        return spec
    return ",".join(Path(part).name for part in spec.split(","))


def _generated_size(spec: str, default: int | None) -> int:
    size = spec.partition(":")[2]
    if size and not size.isdigit():
        raise ValueError(f"dataset {spec!r}: expected {spec.partition(':')[0]}:N with a positive integer N")
    n = int(size) if size else (default or DEFAULT_BUILTIN_SIZE)
    if n < 1:
        raise ValueError(f"dataset {spec!r}: N must be positive")
    return n


def load_structures(
    spec: str,
    *,
    label: str | None = None,
    size: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
) -> StructureSet:
    """The structures of a dataset spec (see the module docstring).

    Args:
        spec: ``perovskite:N``, ``builtin:N`` (or either without ``:N``) or a path.
        label: for a path: ``"spacegroup"`` (spglib) or a column of integer labels; generated sets
            are always labelled with their spglib space groups.
        size: the size of a generated set given without ``:N``.
        cache_dir: cache for generated structures (default :func:`default_cache_dir`).
        workers: processes for generation and reading.
    """
    cache = user_path(cache_dir) if cache_dir is not None else _store.default_cache_dir()
    generator = _generator(spec)
    if generator is not None:
        return GENERATORS[generator](_generated_size(spec, size), seed=0, workers=workers, cache_dir=cache)
    if not user_path(spec).exists():
        raise ValueError(f"dataset {spec!r} is neither perovskite:N, builtin:N nor an existing path")
    return read_structures(user_path(spec), label=label, workers=workers)


def load_split(
    spec: str,
    *,
    label: str | None = None,
    structures: int | None = None,
    split: Sequence[float] = (0.8, 0.2),
    cutoff: float = 4.0,
    graph_mode: str = "periodic",
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    label_mode: str = "spacegroup",
) -> DatasetSplit:
    """Read or generate a space-group dataset, build its graphs and split it into train and test.

    Args:
        spec: a dataset spec (see the module docstring).
        label: for a path: ``"spacegroup"`` (spglib) or the name of a column of space-group
            numbers (1..230). Required for paths.
        structures: keep a fixed random subset (seed 0) of at most this many (for a generator
            spec without N, generate this many).
        split: (train, test) or (train, val, test) fractions; stratified by crystal family with
            seed 0 (the validation part is unused).
        cutoff, graph_mode: graph construction (see :func:`alkernels.data.build_graphs`).
        cache_dir: cache for generated structures and graphs (default :func:`default_cache_dir`).
        workers: processes for generation and graph building.
        label_mode: the classes to predict: ``"spacegroup"`` (230, the paper's task),
            ``"crystal_system"`` (7) or ``"bravais"`` (14 lattices), all from the space-group
            numbers (see :func:`alkernels.data.class_labels`). The split is the same in every mode.
    """
    if label_mode not in LABEL_MODES:
        raise ValueError(f"label mode must be one of {', '.join(LABEL_MODES)}, got {label_mode!r}")
    if _generator(spec) is None and label is None and user_path(spec).exists():
        raise ValueError(f"dataset {spec!r} has no labels: pass --label spacegroup or a column name")
    structset = load_structures(spec, label=label, size=structures, cache_dir=cache_dir, workers=workers)
    structset = structset.drop_dense(cutoff, graph_mode)  # over the edge cap: rejected rows
    if structset.labels is None or len(structset) == 0:
        reasons = "; ".join(f"row {row}: {why}" for row, why in structset.rejected[:3])
        raise ValueError(
            f"dataset {spec!r} has no labelled structures"
            + (
                f" (all {len(structset.rejected)} rows rejected; first reasons: {reasons})"
                if structset.rejected
                else ""
            )
        )
    labels = np.asarray(structset.labels, dtype=np.int64)
    if labels.min() < 1 or labels.max() > 230:
        raise ValueError(
            f"dataset {spec!r}: labels must be space-group numbers 1..230, got {labels.min()}..{labels.max()}"
        )
    cache = user_path(cache_dir) if cache_dir is not None else _store.default_cache_dir()
    graphs = build_graphs(structset, cutoff=cutoff, mode=graph_mode, workers=workers, cache_dir=cache)
    dataset = GraphDataset(graphs, y=class_labels(labels, label_mode))
    keep = np.arange(len(dataset))
    if structures is not None and len(dataset) > structures:
        keep = np.sort(np.random.default_rng(0).permutation(len(dataset))[:structures])
    dataset = dataset.subset(keep)
    parts = split_dataset(dataset, split, seed=0, stratify="crystal_family", spacegroups=labels[keep])
    train, test = parts[0], parts[-1]
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"dataset {spec!r}: {len(dataset)} structures are too few to split {tuple(split)}")
    return DatasetSplit(spec_name(spec), train, test, labels[train.indices], labels[test.indices], label_mode)


def property_column(structset: StructureSet, column: str) -> np.ndarray:
    """The numeric property ``column`` of ``structset.table`` as float64 [n]; missing or
    non-numeric values become NaN. ValueError naming the available columns when it is absent."""
    if column not in structset.table.columns:
        raise ValueError(f"target column {column!r} not found; columns are {sorted(map(str, structset.table.columns))}")
    import pandas as pd

    return pd.to_numeric(structset.table[column], errors="coerce").to_numpy(dtype=np.float64)


def concat_structures(sets: Sequence[StructureSet], names: Sequence[str]) -> StructureSet:
    """One StructureSet from several, in order; rejected rows are named ``"<name>:<row>"``."""
    import pandas as pd

    if len(sets) == 1:
        return sets[0]
    return StructureSet(
        atoms=[a for s in sets for a in s.atoms],
        table=pd.concat([s.table for s in sets], ignore_index=True),
        ids=[i for s in sets for i in s.ids],
        labels=None,
        rejected=[(f"{name}:{row}", why) for s, name in zip(sets, names) for row, why in s.rejected],
    )


@dataclass
class RegressionData:
    """A property-regression dataset with a fixed train (pool) / test split.

    Attributes:
        name: the spec as recorded (file names only).
        target: the property column.
        dataset: a GraphDataset of every kept structure with float targets (``y`` [N, 1]), or
            None when graphs were not requested.
        structures: the kept structures (their table has every source column).
        y: float64 [N] targets.
        train, test: int64 positions into the N structures; the split is random with seed 0
            and never depends on the run's seed.
        skipped: ``(row, reason)`` for rows that were dropped (unreadable structures and NaN
            or non-numeric targets).
    """

    name: str
    target: str
    dataset: GraphDataset | None
    structures: StructureSet
    y: np.ndarray
    train: np.ndarray
    test: np.ndarray
    skipped: list[tuple[int | str, str]]


def load_regression(
    spec: str,
    target: str,
    *,
    test_fraction: float = 0.2,
    structures: int | None = None,
    graphs: bool = True,
    cutoff: float = 4.0,
    graph_mode: str = "periodic",
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
) -> RegressionData:
    """Read one or more structure files with a numeric target column and split them.

    Args:
        spec: a path, or several separated by commas (read as one dataset, in order).
        target: the column holding the property (e.g. ``heat_ref``, ``formation_energy_per_atom``).
        test_fraction: the fixed held-out test fraction (random split, seed 0).
        structures: keep a fixed random subset (seed 0) of at most this many.
        graphs: build the neighbour graphs (needed by an EGNN embedding).
        cutoff, graph_mode, cache_dir, workers: as in :func:`load_split`.

    Rows whose structure is unreadable or whose target is NaN / not a number are skipped and
    listed in ``skipped``.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test fraction must be in (0, 1), got {test_fraction}")
    paths = [part for part in spec.split(",") if part]
    if not paths:
        raise ValueError("no dataset path given")
    if spec == "builtin" or spec.startswith("builtin:"):
        raise ValueError("the built-in generated crystals have no property targets: give a file with a target column")
    for path in paths:
        if not user_path(path).exists():
            raise ValueError(f"dataset {path!r} does not exist")
    for path in paths:  # a missing column fails before the (slow) structure parsing
        if path.lower().endswith((".csv", ".csv.gz")):
            import pandas as pd

            columns = list(pd.read_csv(user_path(path), nrows=0).columns)
            if target not in columns:
                raise ValueError(
                    f"target column {target!r} not found in {Path(path).name}; columns are "
                    f"{sorted(c for c in columns if not c.startswith('Unnamed:'))}"
                )
    sets = [read_structures(user_path(path), workers=workers) for path in paths]
    structset = concat_structures(sets, [Path(p).name for p in paths])
    if graphs:
        structset = structset.drop_dense(cutoff, graph_mode)  # over the edge cap: rejected rows
    values = property_column(structset, target)
    skipped: list[tuple[int | str, str]] = list(structset.rejected)
    bad = np.flatnonzero(~np.isfinite(values))
    skipped += [
        (structset.ids[i], f"target {target!r} is missing or not a number: {structset.table[target].iloc[i]}")
        for i in bad
    ]
    keep = np.flatnonzero(np.isfinite(values))
    if structures is not None and len(keep) > structures:
        keep = np.sort(np.random.default_rng(0).permutation(keep)[:structures])
    if len(keep) < 4:
        raise ValueError(f"dataset {spec!r} has {len(keep)} structures with a finite {target!r}; need at least 4")
    structset, values = structset.subset(keep), values[keep]
    perm = np.random.default_rng(0).permutation(len(keep))
    n_test = max(1, int(round(test_fraction * len(keep))))
    test, train = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    dataset = None
    if graphs:
        cache = user_path(cache_dir) if cache_dir is not None else _store.default_cache_dir()
        graphset = build_graphs(structset, cutoff=cutoff, mode=graph_mode, workers=workers, cache_dir=cache)
        dataset = GraphDataset(graphset, y=values.astype(np.float64))
    return RegressionData(
        spec_name(spec), target, dataset, structset, values, train.astype(np.int64), test.astype(np.int64), skipped
    )


def load_property_graphs(
    spec: str,
    columns: Sequence[str] | None = None,
    *,
    cutoff: float,
    graph_mode: str = "periodic",
    max_neighbors: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
) -> tuple[GraphSet, dict[str, np.ndarray]]:
    """Graphs of a structure file and its numeric property columns, for regression.

    Args:
        spec: a path :func:`alkernels.data.read_structures` reads (e.g. an MP-20-style CSV).
        columns: the property columns to return; ValueError names any that the file lacks or
            that are not numeric. None: every numeric column.
        cutoff, graph_mode, max_neighbors: graph construction (see :func:`alkernels.data.build_graphs`).
        cache_dir: graph cache (default :func:`default_cache_dir`).
        workers: processes for reading and graph building.

    Returns:
        ``(graphs, properties)``: one graph per accepted structure (rejected rows are left out, in
        file order otherwise) and ``column -> float64 [len(graphs)]`` (NaN where a value is missing).
    """
    import pandas as pd  # the data extra, like read_structures

    if not user_path(spec).exists():
        raise ValueError(f"dataset {spec!r} does not exist")
    structset = read_structures(user_path(spec), workers=workers).drop_dense(cutoff, graph_mode)
    if len(structset) == 0:
        raise ValueError(f"dataset {spec!r} has no usable structure ({len(structset.rejected)} rows rejected)")
    table = structset.table
    numeric = [
        c
        for c in table.columns
        if pd.api.types.is_numeric_dtype(table[c].dtype) and not pd.api.types.is_bool_dtype(table[c].dtype)
    ]
    if columns is None:
        columns = numeric
    for c in columns:
        if c not in table.columns:
            raise ValueError(
                f"dataset {spec_name(spec)!r} has no column {c!r}; its numeric columns: "
                f"{', '.join(map(str, numeric)) or 'none'}"
            )
        if c not in numeric:
            raise ValueError(f"column {c!r} of dataset {spec_name(spec)!r} is not numeric (dtype {table[c].dtype})")
    cache = user_path(cache_dir) if cache_dir is not None else _store.default_cache_dir()
    graphs = build_graphs(
        structset, cutoff=cutoff, mode=graph_mode, max_neighbors=max_neighbors, workers=workers, cache_dir=cache
    )
    return graphs, {str(c): table[c].to_numpy(dtype=np.float64) for c in columns}
