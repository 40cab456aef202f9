"""The command line shared by ``benchmarks/bench_*.py``: one suite of the pytest-benchmark suite,
run with the right options and output path.

Every size of the suite in :mod:`benchmarks.settings` is a flag (``--N 50000``,
``--batches 24 256``, ``--ase-n 400``); ``--threads N`` sets ``OMP_NUM_THREADS=N`` in the
environment before pytest (and so OpenMP) starts, which is why the script replaces itself with
``python -m pytest`` instead of calling it in-process. Arguments after ``--`` go to pytest
unchanged (e.g. ``-- -k "not baal" --benchmark-autosave``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from benchmarks.settings import PRESETS

ROOT = Path(__file__).resolve().parent.parent


def _size_fields(suite: str) -> list[tuple[str, object]]:
    """(name, full-size default) of every size of ``suite``."""
    sizes = getattr(PRESETS["full"], suite)
    return [(f.name, getattr(sizes, f.name)) for f in dataclasses.fields(sizes)]


def main(suite: str, description: str, argv: list[str] | None = None) -> None:
    """Parse ``argv`` and exec pytest on ``benchmarks/test_<suite>.py`` (does not return)."""
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("quick", "full"), default="full", help="size preset (default full)")
    parser.add_argument("--threads", type=int, help="torch/OpenMP threads (sets OMP_NUM_THREADS)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device (default cpu)")
    parser.add_argument(
        "--out", type=Path, help="summary JSON (default: benchmarks/results/local/, named by suite and size)"
    )
    parser.add_argument(
        "--commit", action="store_true", help="write into benchmarks/results/ (the committed results report.py renders)"
    )
    parser.add_argument("--json", type=Path, help="also write pytest-benchmark's full JSON here")
    parser.add_argument("--cache-dir", type=Path, help="cache of generated structures and graphs ($ALKERNELS_CACHE)")
    sizes = parser.add_argument_group("sizes (default: the --size preset)")
    fields = _size_fields(suite)
    for name, default in fields:
        many = isinstance(default, tuple)
        full = ",".join(map(str, default)) if many else default
        sizes.add_argument(
            f"--{name.replace('_', '-')}",
            dest=f"size_{name}",
            nargs="+" if many else None,
            metavar=name.upper(),
            help=f"full size: {full}",
        )
    args = parser.parse_args(argv)

    env = dict(os.environ)
    if args.threads is not None:
        env["OMP_NUM_THREADS"] = str(args.threads)
    if args.cache_dir is not None:
        env["ALKERNELS_CACHE"] = str(args.cache_dir)
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        f"benchmarks/test_{suite}.py",
        "--bench-size",
        args.size,
        "--bench-device",
        args.device,
    ]
    if args.threads is not None:
        cmd += ["--bench-threads", str(args.threads)]
    if args.out is not None:
        cmd += ["--bench-out", str(args.out.resolve())]
    if args.commit:
        cmd += ["--bench-commit"]
    if args.json is not None:
        cmd += ["--benchmark-json", str(args.json.resolve())]
    for name, _ in fields:
        value = getattr(args, f"size_{name}")
        if value is not None:
            cmd += ["--bench-set", f"{suite}.{name}={','.join(value) if isinstance(value, list) else value}"]
    os.chdir(ROOT)
    os.execve(sys.executable, cmd + extra, env)
