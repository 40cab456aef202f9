"""Entry point of the GP benchmark (``benchmarks/test_gp.py``): sets the size and the thread
count before pytest (and OpenMP) start, then runs it.

    .venv/bin/python benchmarks/bench_gp.py                    # quick, synthetic, 1 thread
    .venv/bin/python benchmarks/bench_gp.py --size full        # the perovskite run (needs ../shared/data)
    .venv/bin/python benchmarks/bench_gp.py --size full --threads 2 -- -k "not small"
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("quick", "full"), default="quick")
    parser.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads (default 1)")
    args = parser.parse_args(argv)
    env = dict(os.environ, ALKERNELS_GP_BENCH_SIZE=args.size, OMP_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads))
    cmd = [sys.executable, "-m", "pytest", "benchmarks/test_gp.py", "-s", "-q", "-p", "no:cacheprovider",
           f"--bench-size={args.size}", "--benchmark-columns=median,rounds", *extra]
    os.chdir(ROOT)
    os.execve(sys.executable, cmd, env)


if __name__ == "__main__":
    main()
