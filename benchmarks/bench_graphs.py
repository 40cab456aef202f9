"""Graph-building throughput: alkernels (vesin) against a builder on ``ase.neighborlist``.

Runs on the built-in synthetic dataset (about 10-atom cells) at a periodic cutoff, in one run:

1. both builders in one process on the same structures (structures/s, ratio);
2. alkernels with ``--workers`` processes;
3. end to end for ``--total`` structures (the synthetic set tiled to that size): hashing,
   validation, neighbour lists, CSR assembly and the write of the memory-mapped cache.

Usage::

    python benchmarks/bench_graphs.py --n 2000 --ase-n 400 --total 100000 --workers 2 \\
        --out benchmarks/results/graphs_cpu2.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list

from alkernels.data import build_graphs, synthetic_crystals


def ase_build(structures: list[Atoms], cutoff: float) -> tuple[np.ndarray, ...]:
    """The same CSR-by-receiver arrays as ``build_graphs`` (periodic mode), from ASE."""
    src, dst, shifts, vecs, counts = [], [], [], [], []
    offset = 0
    for atoms in structures:
        i, j, shift, vec = neighbor_list("ijSD", atoms, cutoff)
        order = np.argsort(i, kind="stable")
        src.append(j[order] + offset)
        dst.append(i[order] + offset)
        shifts.append(shift[order].astype(np.int16))
        vecs.append(vec[order].astype(np.float32))
        counts.append(len(i))
        offset += len(atoms)
    edge_ptr = np.concatenate([[0], np.cumsum(counts)])
    return np.concatenate(src), np.concatenate(dst), np.concatenate(shifts), np.concatenate(vecs), edge_ptr


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="synthetic structures to benchmark on")
    parser.add_argument("--ase-n", type=int, default=400, help="of those, how many the ASE builder runs on")
    parser.add_argument("--cutoff", type=float, default=6.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--total", type=int, default=100_000, help="end-to-end size (tiled synthetic set)")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "alkernels",
                        help="where the synthetic set is cached between runs")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()

    t_synth, structures = timed(synthetic_crystals, args.n, seed=0, workers=args.workers, cache_dir=args.cache_dir)
    atoms = structures.atoms
    mean_atoms = float(np.mean([len(a) for a in atoms]))
    print(f"{len(atoms)} synthetic structures, {mean_atoms:.1f} atoms on average (ready in {t_synth:.1f} s)")

    subset = atoms[:args.ase_n]
    t_ase, ase_graphs = timed(ase_build, subset, args.cutoff)
    t_ours_subset, ours_subset = timed(build_graphs, subset, cutoff=args.cutoff, workers=1)
    if not np.array_equal(ase_graphs[4], ours_subset.edge_ptr):
        raise SystemExit("edge counts differ between ASE and alkernels")
    t_ours, ours = timed(build_graphs, atoms, cutoff=args.cutoff, workers=1)
    t_par, _ = timed(build_graphs, atoms, cutoff=args.cutoff, workers=args.workers)
    ase_rate = len(subset) / t_ase
    ours_rate = len(atoms) / t_ours
    par_rate = len(atoms) / t_par
    print(f"ASE neighbor_list builder, 1 process:  {ase_rate:9.0f} structures/s ({len(subset)} structures)")
    print(f"alkernels build_graphs, 1 process:     {ours_rate:9.0f} structures/s ({len(atoms)} structures, "
          f"{ours.num_edges / ours.num_nodes:.1f} edges per atom)")
    print(f"alkernels build_graphs, {args.workers} processes:   {par_rate:9.0f} structures/s")
    print(f"speed-up over ASE (1 process each):    {ours_rate / ase_rate:9.1f}x")

    tiled = (atoms * (args.total // len(atoms) + 1))[:args.total]
    with tempfile.TemporaryDirectory() as tmp:
        t_total, big = timed(build_graphs, tiled, cutoff=args.cutoff, workers=args.workers, cache_dir=tmp)
        size_mb = sum(f.stat().st_size for f in Path(big.path).iterdir()) / 2**20
        t_reload, _ = timed(build_graphs, tiled, cutoff=args.cutoff, workers=args.workers, cache_dir=tmp)
        del big
    print(f"end to end, {args.total} structures, {args.workers} processes: {t_total:.1f} s "
          f"(cache {size_mb:.0f} MiB, reload {t_reload:.1f} s)")

    if args.out is not None:
        result = {
            "benchmark": "graph building, periodic mode",
            "command": "python benchmarks/bench_graphs.py " + " ".join(
                f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("out", "cache_dir")),
            "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                        "python": platform.python_version(),
                        "load_average_1min_at_end": round(os.getloadavg()[0], 2)},
            "cutoff_A": args.cutoff,
            "structures": len(atoms),
            "mean_atoms": round(mean_atoms, 2),
            "edges_per_atom": round(ours.num_edges / ours.num_nodes, 1),
            "ase_structures_per_s": round(ase_rate, 1),
            "alkernels_structures_per_s_1proc": round(ours_rate, 1),
            f"alkernels_structures_per_s_{args.workers}proc": round(par_rate, 1),
            "speedup_vs_ase_1proc": round(ours_rate / ase_rate, 2),
            "end_to_end_total_structures": args.total,
            "end_to_end_s": round(t_total, 2),
            "end_to_end_cache_MiB": round(size_mb, 1),
            "cache_reload_s": round(t_reload, 2),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
