"""Crystal data: batching, datasets and graph containers (core), and readers, graph building and
generated datasets (the ``data`` extra: ase, spglib, vesin, pyxtal, pandas).

Typical use::

    from alkernels.data import read_structures, build_graphs, GraphDataset, collate, split
    structures = read_structures("mp20.csv.gz", label="spacegroup")
    graphs = build_graphs(structures, cutoff=6.0, cache_dir="~/.cache/alkernels")
    dataset = GraphDataset(graphs, y=structures.labels - 1)
    train, val, test = split(dataset, (0.8, 0.1, 0.1), seed=0, stratify="crystal_family")
    loader = torch.utils.data.DataLoader(train, batch_size=24, shuffle=True, collate_fn=collate)

The core names import with torch and NumPy alone; the others are loaded on first access and
raise ImportError naming the extra when it is not installed.
"""

from __future__ import annotations

import importlib
from typing import Any

from alkernels.data._store import default_cache_dir
from alkernels.data.batch import GraphBatch
from alkernels.data.dataset import GraphDataset, GraphItem, collate, split
from alkernels.data.graphset import Graph, GraphSet
from alkernels.data.random import random_graphs
from alkernels.data.symmetry import (
    BRAVAIS_LATTICES,
    CRYSTAL_FAMILIES,
    CRYSTAL_SYSTEMS,
    DEFAULT_SYMPREC,
    LABEL_MODES,
    bravais_lattice,
    class_labels,
    crystal_family,
    crystal_system,
    spacegroup_number,
)

#: Names that need the ``data`` extra, and the submodule that defines each.
_EXTRA_NAMES = {
    "StructureError": "structures",
    "StructureSet": "structures",
    "build_graphs": "graphs",
    "read_structures": "readers",
    "derive_spacegroup_prior": "synthetic",
    "perovskite_crystals": "perovskite",
    "synthetic_crystals": "synthetic",
    "DatasetSplit": "specs",
    "load_split": "specs",
    "load_structures": "specs",
    "RegressionData": "specs",
    "load_regression": "specs",
    "property_column": "specs",
    "load_property_graphs": "specs",
    "EMT_METALS": "emt",
    "ForceData": "emt",
    "emt_structures": "emt",
}

__all__ = [
    "BRAVAIS_LATTICES",
    "CRYSTAL_FAMILIES",
    "CRYSTAL_SYSTEMS",
    "LABEL_MODES",
    "DEFAULT_SYMPREC",
    "Graph",
    "GraphBatch",
    "GraphDataset",
    "GraphItem",
    "GraphSet",
    "collate",
    "bravais_lattice",
    "class_labels",
    "crystal_family",
    "crystal_system",
    "default_cache_dir",
    "random_graphs",
    "spacegroup_number",
    "split",
    *_EXTRA_NAMES,
]


def __getattr__(name: str) -> Any:
    if name in _EXTRA_NAMES:
        module = importlib.import_module(f"alkernels.data.{_EXTRA_NAMES[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'alkernels.data' has no attribute {name!r}")
