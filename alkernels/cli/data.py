"""``alkernels data``: generate the built-in synthetic dataset and build (cached) crystal graphs."""
from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="synthetic crystals and crystal graphs")
    data_sub = p.add_subparsers(dest="data_command", required=True)

    synth = data_sub.add_parser(
        "synth", help="generate symmetric random crystals (pyxtal) labelled by spglib",
        description="Writes DIR/synthetic.extxyz (info: id, spacegroup_number, requested_spacegroup) "
                    "and DIR/synthetic.csv (one row per structure).",
    )
    synth.add_argument("--n", type=int, required=True, help="number of structures")
    synth.add_argument("--out", type=Path, required=True, help="output directory")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    synth.add_argument("--cache-dir", type=Path, default=None, help="reuse/keep generated sets here")
    synth.set_defaults(func=run_synth)

    graphs = data_sub.add_parser(
        "build-graphs", help="build and cache crystal graphs from any source read_structures reads",
    )
    graphs.add_argument("source", help="CSV(.gz) with a cif column, CIF/POSCAR/extxyz file or folder, "
                                       "ASE db, matbench JSON")
    graphs.add_argument("--cutoff", type=float, default=6.0, help="neighbour cutoff in Angstrom")
    graphs.add_argument("--mode", choices=("periodic", "matsciml"), default="periodic")
    graphs.add_argument("--max-neighbors", type=int, default=None)
    graphs.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    graphs.add_argument("--cache-dir", type=Path, required=True, help="where the graph cache goes")
    graphs.set_defaults(func=run_build_graphs)


def run_synth(args: argparse.Namespace) -> int:
    import ase.io

    from alkernels.data import synthetic_crystals

    t0 = time.perf_counter()
    structures = synthetic_crystals(args.n, seed=args.seed, workers=args.workers, cache_dir=args.cache_dir)
    elapsed = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    frames = []
    for atoms, sid, row in zip(structures.atoms, structures.ids, structures.table.itertuples()):
        frame = atoms.copy()
        frame.info.update(id=sid, spacegroup_number=int(row.spacegroup_number),
                          requested_spacegroup=int(row.requested_spacegroup))
        frames.append(frame)
    ase.io.write(args.out / "synthetic.extxyz", frames, format="extxyz")
    structures.table.assign(id=structures.ids).to_csv(args.out / "synthetic.csv", index=False)
    print(f"{len(structures)} structures ({structures.table['n_atoms'].mean():.1f} atoms on average, "
          f"{len(set(structures.labels.tolist()))} space groups) in {elapsed:.1f} s -> {args.out}")
    return 0


def run_build_graphs(args: argparse.Namespace) -> int:
    from alkernels.data import build_graphs, read_structures

    t0 = time.perf_counter()
    structures = read_structures(args.source)
    t1 = time.perf_counter()
    graphs = build_graphs(structures, cutoff=args.cutoff, mode=args.mode, max_neighbors=args.max_neighbors,
                          workers=args.workers, cache_dir=args.cache_dir)
    t2 = time.perf_counter()
    print(f"read {len(structures)} structures ({len(structures.rejected)} rejected) in {t1 - t0:.1f} s")
    for row, reason in structures.rejected[:10]:
        print(f"  rejected {row}: {reason}")
    if len(structures.rejected) > 10:
        print(f"  ... and {len(structures.rejected) - 10} more")
    print(f"{graphs.num_edges} edges ({graphs.num_edges / max(graphs.num_nodes, 1):.1f} per atom, "
          f"{args.mode}, cutoff {args.cutoff} A) in {t2 - t1:.1f} s -> {graphs.path}")
    return 0
