"""``alkernels data``: generate the built-in datasets and build (cached) crystal graphs."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from alkernels.cli._common import NON_NEGATIVE, POSITIVE, POSITIVE_FLOAT


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``alkernels data synth`` and ``alkernels data build-graphs``."""
    p = sub.add_parser("data", help="synthetic crystals and crystal graphs")
    data_sub = p.add_subparsers(dest="data_command", required=True)

    synth = data_sub.add_parser(
        "synth",
        help="generate a built-in dataset (perovskite-derived cells or random crystals), spglib-labelled",
        description="Writes DIR/synthetic.extxyz (--generator builtin) or DIR/perovskite.extxyz (info: id and "
        "every table column, e.g. spacegroup_number) and the same name .csv (one row per "
        "structure). The output is checked before generating.",
    )
    synth.add_argument(
        "--generator",
        choices=("builtin", "perovskite"),
        default="builtin",
        help="builtin: random symmetric crystals from pyxtal (dataset spec builtin:N); perovskite: "
        "tilted/polar ABX3 cells (perovskite:N, the embedded default)",
    )
    synth.add_argument("--n", type=POSITIVE, required=True, help="number of structures")
    synth.add_argument("--out", type=Path, required=True, help="output directory")
    synth.add_argument("--seed", type=NON_NEGATIVE, default=0, help="seed of the generator")
    synth.add_argument("--workers", type=POSITIVE, default=None, help="processes (default: all cores)")
    synth.add_argument(
        "--cache-dir", type=Path, default=None, help="reuse/keep generated sets here (default: no cache)"
    )
    synth.set_defaults(func=run_synth)

    graphs = data_sub.add_parser(
        "build-graphs",
        help="build and cache crystal graphs from any source read_structures reads",
    )
    graphs.add_argument(
        "source", help="CSV(.gz) with a cif column, CIF/POSCAR/extxyz file or folder, ASE db, matbench JSON"
    )
    graphs.add_argument("--cutoff", type=POSITIVE_FLOAT, default=6.0, help="neighbour cutoff in Angstrom")
    graphs.add_argument(
        "--mode",
        choices=("periodic", "matsciml"),
        default="periodic",
        help="periodic images within --cutoff, or matsciml's in-cell graphs",
    )
    graphs.add_argument(
        "--max-neighbors",
        type=POSITIVE,
        default=None,
        help="keep this many nearest neighbours per atom (default: all within --cutoff)",
    )
    graphs.add_argument(
        "--max-edges",
        type=POSITIVE,
        default=2_000_000,
        help="reject structures whose graph would exceed this many edges (default 2,000,000)",
    )
    graphs.add_argument("--workers", type=POSITIVE, default=None, help="processes (default: all cores)")
    graphs.add_argument("--cache-dir", type=Path, required=True, help="where the graph cache goes")
    graphs.set_defaults(func=run_build_graphs)


def _check_synth_output(out: Path, names: list[str]) -> None:
    """Fail before generating when the files cannot be written: a file where the folder should
    be (or above it), a folder that cannot be written, or output files that already exist."""
    for parent in (out, *out.parents):
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"--out {out}: {parent} is a file, not a folder")
            break
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"--out {out}: cannot create the folder ({err.strerror})") from err
    if not os.access(out, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: the folder is not writable")
    existing = [name for name in names if (out / name).exists()]
    if existing:
        raise ValueError(f"--out {out} already holds {', '.join(existing)}: choose another folder or remove them")


def run_synth(args: argparse.Namespace) -> int:
    """Generate the dataset and write it (the folder is checked first)."""
    stem = "synthetic" if args.generator == "builtin" else "perovskite"
    names = [f"{stem}.extxyz", f"{stem}.csv"]
    _check_synth_output(args.out, names)

    import ase.io
    import numpy as np

    from alkernels.data import perovskite_crystals, synthetic_crystals

    generate = perovskite_crystals if args.generator == "perovskite" else synthetic_crystals
    t0 = time.perf_counter()
    structures = generate(args.n, seed=args.seed, workers=args.workers, cache_dir=args.cache_dir)
    elapsed = time.perf_counter() - t0
    frames = []
    for atoms, sid, row in zip(structures.atoms, structures.ids, structures.table.to_dict("records")):
        frame = atoms.copy()
        frame.info.update(id=sid, **{k: v.item() if isinstance(v, np.generic) else v for k, v in row.items()})
        frames.append(frame)
    # write beside the final names, then rename: an interrupted write leaves no partial file
    tmp = [args.out / f".{name}.{os.getpid()}.tmp" for name in names]
    ase.io.write(tmp[0], frames, format="extxyz")
    structures.table.assign(id=structures.ids).to_csv(tmp[1], index=False)
    for t, name in zip(tmp, names):
        os.replace(t, args.out / name)
    print(
        f"{len(structures)} structures ({structures.table['n_atoms'].mean():.1f} atoms on average, "
        f"{len(set(structures.labels.tolist()))} space groups) in {elapsed:.1f} s -> {args.out}"
    )
    return 0


def run_build_graphs(args: argparse.Namespace) -> int:
    """Read the structures, build their graphs into the cache and print a summary."""
    from alkernels.data import build_graphs, read_structures

    t0 = time.perf_counter()
    structures = read_structures(args.source).drop_dense(args.cutoff, args.mode, args.max_edges)
    t1 = time.perf_counter()
    graphs = build_graphs(
        structures,
        cutoff=args.cutoff,
        mode=args.mode,
        max_neighbors=args.max_neighbors,
        max_edges=args.max_edges,
        workers=args.workers,
        cache_dir=args.cache_dir,
    )
    t2 = time.perf_counter()
    print(f"read {len(structures)} structures ({len(structures.rejected)} rejected) in {t1 - t0:.1f} s")
    for row, reason in structures.rejected[:10]:
        print(f"  rejected {row}: {reason}")
    if len(structures.rejected) > 10:
        print(f"  ... and {len(structures.rejected) - 10} more")
    print(
        f"{graphs.num_edges} edges ({graphs.num_edges / max(graphs.num_nodes, 1):.1f} per atom, "
        f"{args.mode}, cutoff {args.cutoff} A) in {t2 - t1:.1f} s -> {graphs.path}"
    )
    return 0
