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
    any file or folder :func:`alkernels.data.read_structures` reads.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from alkernels.data import _store
from alkernels.data.dataset import GraphDataset, split as split_dataset
from alkernels.data.graphs import build_graphs
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
    (committed results must not carry a machine's paths)."""
    return spec if _generator(spec) is not None else Path(spec).name


def _generated_size(spec: str, default: int | None) -> int:
    size = spec.partition(":")[2]
    if size and not size.isdigit():
        raise ValueError(f"dataset {spec!r}: expected {spec.partition(':')[0]}:N with a positive integer N")
    n = int(size) if size else (default or DEFAULT_BUILTIN_SIZE)
    if n < 1:
        raise ValueError(f"dataset {spec!r}: N must be positive")
    return n


def load_structures(spec: str, *, label: str | None = None, size: int | None = None,
                    cache_dir: str | os.PathLike | None = None, workers: int | None = None) -> StructureSet:
    """The structures of a dataset spec (see the module docstring).

    Args:
        spec: ``perovskite:N``, ``builtin:N`` (or either without ``:N``) or a path.
        label: for a path: ``"spacegroup"`` (spglib) or a column of integer labels; generated sets
            are always labelled with their spglib space groups.
        size: the size of a generated set given without ``:N``.
        cache_dir: cache for generated structures (default :func:`default_cache_dir`).
        workers: processes for generation and reading.
    """
    cache = Path(cache_dir) if cache_dir is not None else _store.default_cache_dir()
    generator = _generator(spec)
    if generator is not None:
        return GENERATORS[generator](_generated_size(spec, size), seed=0, workers=workers, cache_dir=cache)
    if not Path(spec).exists():
        raise ValueError(f"dataset {spec!r} is neither perovskite:N, builtin:N nor an existing path")
    return read_structures(spec, label=label, workers=workers)


def load_split(spec: str, *, label: str | None = None, structures: int | None = None,
               split: Sequence[float] = (0.8, 0.2), cutoff: float = 4.0, graph_mode: str = "periodic",
               cache_dir: str | os.PathLike | None = None, workers: int | None = None,
               label_mode: str = "spacegroup") -> DatasetSplit:
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
    if _generator(spec) is None and label is None and Path(spec).exists():
        raise ValueError(f"dataset {spec!r} has no labels: pass --label spacegroup or a column name")
    structset = load_structures(spec, label=label, size=structures, cache_dir=cache_dir, workers=workers)
    if structset.labels is None or len(structset) == 0:
        reasons = "; ".join(f"row {row}: {why}" for row, why in structset.rejected[:3])
        raise ValueError(f"dataset {spec!r} has no labelled structures"
                         + (f" (all {len(structset.rejected)} rows rejected; first reasons: {reasons})"
                            if structset.rejected else ""))
    labels = np.asarray(structset.labels, dtype=np.int64)
    if labels.min() < 1 or labels.max() > 230:
        raise ValueError(f"dataset {spec!r}: labels must be space-group numbers 1..230, "
                         f"got {labels.min()}..{labels.max()}")
    cache = Path(cache_dir) if cache_dir is not None else _store.default_cache_dir()
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
