"""Crystal data: readers, space-group labels, periodic graphs, batching and the built-in dataset.

Typical use::

    from alkernels.data import read_structures, build_graphs, GraphDataset, collate, split
    structures = read_structures("mp20.csv.gz", label="spacegroup")
    graphs = build_graphs(structures, cutoff=6.0, cache_dir="~/.cache/alkernels")
    dataset = GraphDataset(graphs, y=structures.labels - 1)
    train, val, test = split(dataset, (0.8, 0.1, 0.1), seed=0, stratify="crystal_family")
    loader = torch.utils.data.DataLoader(train, batch_size=24, shuffle=True, collate_fn=collate)
"""
from __future__ import annotations

from alkernels.data.batch import GraphBatch
from alkernels.data.dataset import GraphDataset, GraphItem, collate, split
from alkernels.data.graphs import Graph, GraphSet, build_graphs
from alkernels.data.readers import read_structures
from alkernels.data.structures import (
    CRYSTAL_FAMILIES,
    StructureError,
    StructureSet,
    crystal_family,
    spacegroup_number,
)
from alkernels.data.synthetic import derive_spacegroup_prior, synthetic_crystals

__all__ = [
    "CRYSTAL_FAMILIES",
    "Graph",
    "GraphBatch",
    "GraphDataset",
    "GraphItem",
    "GraphSet",
    "StructureError",
    "StructureSet",
    "build_graphs",
    "collate",
    "crystal_family",
    "derive_spacegroup_prior",
    "read_structures",
    "spacegroup_number",
    "split",
    "synthetic_crystals",
]
