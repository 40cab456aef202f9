"""Benchmark: fused acquisition scoring + top-k against the peers of shared/spec/performance.md.

Input: T=10 MC passes, N=100,000 pool samples, C=230 classes, float32 normal logits scaled by 3
(softmax far from one-hot). Peers, all in this process on the same input:

1. ``eager``:    the paper framework's formulas in eager PyTorch, one strategy at a time
                 (softmax, mean, entropy, topk as separate ops);
2. ``compiled``: the same functions under ``torch.compile``;
3. ``baal``:     baal's heuristics (NumPy) on the [N, C, T] layout, for the four it has.

Reports per strategy the time of ``select`` (fused score + top-k), ``score_all`` + top-k for all
eight at once, each peer's time and our speed-up over it, the achieved read bandwidth against a
memcpy measured in the same run, and the peak extra memory beyond the input. Writes JSON to
``benchmarks/results/`` and prints a markdown table.

    .venv/bin/python benchmarks/bench_acquisition.py            # CPU (and GPU if present)
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_acquisition.py --name acquisition_cpu_1thread
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from alkernels import acquisition as acq
from alkernels.ops.dispatch import has_ext

RESULTS = Path(__file__).resolve().parent / "results"


# ---- peer 1: the paper framework's formulas, one strategy at a time --------------------------
def _entr_sum(p: torch.Tensor) -> torch.Tensor:
    return torch.special.entr(p).sum(-1)


def _top2(p: torch.Tensor) -> torch.Tensor:
    return torch.topk(p, 2, dim=-1).values


def eager_peer(strategy: str) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """A function (logits [T, N, C], k) -> indices computing one strategy with separate ops."""

    def scores(x: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(x, dim=-1)
        if strategy in ("entropy", "predictive_entropy"):
            return _entr_sum(p.mean(0))
        if strategy == "least_confidence":
            return 1 - p.mean(0).max(-1).values
        if strategy == "margin":
            t = _top2(p.mean(0))
            return -(t[..., 0] - t[..., 1])
        if strategy == "expected_entropy":
            return _entr_sum(p).mean(0)
        if strategy == "bald":
            return _entr_sum(p.mean(0)) - _entr_sum(p).mean(0)
        if strategy == "expected_least_confidence":
            return 1 - p.max(-1).values.mean(0)
        t = _top2(p)  # expected_margin
        return -(t[..., 0] - t[..., 1]).mean(0)

    def run(x: torch.Tensor, k: int) -> torch.Tensor:
        return torch.topk(scores(x), k).indices

    return run


BAAL = {"bald": "BALD", "entropy": "Entropy", "margin": "Margin", "least_confidence": "Certainty"}


# ---- measurement helpers ----------------------------------------------------------------------
def timed(fn: Callable[[], object], reps: int) -> float:
    """Median wall time in seconds over ``reps`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_extra_mb(which: str, T: int, N: int, C: int, k: int) -> float | None:
    """Peak resident memory beyond the input of one run of ``which`` ("fused" = score_all + top-k,
    "eager" = the eager BALD peer), measured in a fresh interpreter so that no freed heap from
    earlier runs hides allocations (Linux: VmHWM reset through /proc/self/clear_refs)."""
    if not Path("/proc/self/clear_refs").exists():
        return None
    out = subprocess.run(
        [sys.executable, __file__, "--probe", which, "--T", str(T), "--N", str(N), "--C", str(C), "--k", str(k)],
        capture_output=True, text=True, check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def _probe(which: str, T: int, N: int, C: int, k: int) -> float:
    logits = torch.randn(T, N, C) * 3.0
    run = (lambda: acq.topk(acq.score_all(logits)["bald"], k)) if which == "fused" else \
        (lambda: eager_peer("bald")(logits, k))
    Path("/proc/self/clear_refs").write_text("5")
    before = _rss_kb("VmRSS")
    run()
    return (_rss_kb("VmHWM") - before) / 1024


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# ---- CPU --------------------------------------------------------------------------------------
def bench_cpu(T: int, N: int, C: int, k: int, reps: int, compile_peer: bool, baal: bool) -> dict:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(T, N, C, generator=g) * 3.0
    nbytes = logits.numel() * logits.element_size()
    backend = "cpu" if has_ext() else "torch"

    dst = torch.empty_like(logits)
    t_copy = timed(lambda: dst.copy_(logits), reps)
    copy_gbs = 2 * nbytes / t_copy / 1e9  # read + write
    del dst

    # the fused call is ~0.1 s: three times the reps cost little and keep a burst of load on the
    # shared machine from setting the median
    fused_all = timed(lambda: acq.topk(acq.score_all(logits, backend=backend)["bald"], k), 3 * reps)
    mem_fused = peak_extra_mb("fused", T, N, C, k)
    mem_eager = peak_extra_mb("eager", T, N, C, k)

    rows = []
    baal_input = logits.permute(1, 2, 0).contiguous().numpy() if baal else None
    if baal:
        from baal.active import heuristics
    for name in acq.STRATEGIES:
        row: dict[str, float | str | None] = {"strategy": name}
        row["fused_select_s"] = timed(lambda: acq.select(logits, name, k, backend=backend), reps)
        peer = eager_peer(name)
        row["eager_s"] = timed(lambda: peer(logits, k), max(1, reps // 2))
        row["compiled_s"] = None
        if compile_peer:
            compiled = torch.compile(peer, dynamic=False)
            t0 = time.perf_counter()
            compiled(logits, k)
            row["compile_warmup_s"] = time.perf_counter() - t0
            row["compiled_s"] = timed(lambda: compiled(logits, k), max(1, reps // 2))
        row["baal_s"] = None
        if baal and name in BAAL:
            h = getattr(heuristics, BAAL[name])()
            baal_reps = 1 if name == "bald" else max(1, reps // 2)  # baal's BALD takes seconds
            row["baal_s"] = timed(lambda: h.compute_score(baal_input), baal_reps)
        rows.append(row)
        print(f"  {name:<26} fused {row['fused_select_s'] * 1e3:8.1f} ms   eager {row['eager_s'] * 1e3:8.1f} ms",
              file=sys.stderr)
    bald = next(r for r in rows if r["strategy"] == "bald")
    return {
        "device": cpu_name(),
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "backend": backend,
        "shape": [T, N, C],
        "k": k,
        "input_bytes": nbytes,
        "memcpy_gbs": copy_gbs,
        "score_all_topk_s": fused_all,
        "score_all_topk_read_gbs": nbytes / fused_all / 1e9,
        "extra_memory_mb": {"fused_score_all_topk": mem_fused, "eager_bald": mem_eager},
        "targets": {
            "score_all+topk vs eager BALD (>= 10x)": bald["eager_s"] / fused_all,
            "score_all+topk vs baal BALD (>= 50x)": (bald["baal_s"] / fused_all) if bald["baal_s"] else None,
            "extra memory MB (< 64)": mem_fused,
        },
        "strategies": rows,
    }


# ---- GPU --------------------------------------------------------------------------------------
def bench_gpu(T: int, N: int, C: int, k: int) -> dict:
    import triton.testing

    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    logits = torch.randn(T, N, C, generator=g, device=dev) * 3.0
    nbytes = logits.numel() * logits.element_size()
    dst = torch.empty_like(logits)
    t_copy = triton.testing.do_bench(lambda: dst.copy_(logits)) / 1e3
    copy_gbs = 2 * nbytes / t_copy / 1e9
    ref = acq.score_all(logits, backend="torch")
    got = acq.score_all(logits, backend="triton")
    max_rel = max(float((got[s] - ref[s]).abs().max() / ref[s].abs().max()) for s in acq.STRATEGIES)
    t_score = triton.testing.do_bench(lambda: acq.score_all(logits, backend="triton")) / 1e3
    t_select = triton.testing.do_bench(lambda: acq.select(logits, "bald", k, backend="triton")) / 1e3
    t_eager = triton.testing.do_bench(lambda: eager_peer("bald")(logits, k)) / 1e3
    return {
        "device": torch.cuda.get_device_name(),
        "shape": [T, N, C],
        "k": k,
        "max_rel_error_vs_torch": max_rel,
        "memcpy_gbs": copy_gbs,
        "score_all_s": t_score,
        "score_all_read_gbs": nbytes / t_score / 1e9,
        "fraction_of_copy_read_bw": (nbytes / t_score) / (copy_gbs * 1e9 / 2),
        "select_bald_s": t_select,
        "eager_bald_s": t_eager,
        "speedup_vs_eager_bald": t_eager / t_select,
    }


def markdown(cpu: dict) -> str:
    lines = [
        f"T={cpu['shape'][0]}, N={cpu['shape'][1]:,}, C={cpu['shape'][2]} float32, k={cpu['k']:,}; "
        f"{cpu['device']}, {cpu['threads']} threads, backend `{cpu['backend']}`.",
        "",
        "| strategy | fused select (ms) | eager (ms) | x eager | compiled (ms) | x compiled | baal (ms) | x baal |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def cell(v: float | None, scale: float = 1e3, fmt: str = "{:.1f}") -> str:
        return "-" if v is None else fmt.format(v * scale)

    for r in cpu["strategies"]:
        f = r["fused_select_s"]
        lines.append(
            f"| {r['strategy']} | {cell(f)} | {cell(r['eager_s'])} | {cell(r['eager_s'] / f, 1, '{:.1f}x')} "
            f"| {cell(r['compiled_s'])} | {cell(r['compiled_s'] and r['compiled_s'] / f, 1, '{:.1f}x')} "
            f"| {cell(r['baal_s'])} | {cell(r['baal_s'] and r['baal_s'] / f, 1, '{:.0f}x')} |"
        )
    bald = next(r for r in cpu["strategies"] if r["strategy"] == "bald")
    s = cpu["score_all_topk_s"]
    lines += [
        f"| **score_all (all 8) + top-k** | {s * 1e3:.1f} | BALD {bald['eager_s'] * 1e3:.0f} | "
        f"{bald['eager_s'] / s:.1f}x | BALD {cell(bald['compiled_s'])} | "
        f"{cell(bald['compiled_s'] and bald['compiled_s'] / s, 1, '{:.1f}x')} | BALD {cell(bald['baal_s'])} | "
        f"{cell(bald['baal_s'] and bald['baal_s'] / s, 1, '{:.0f}x')} |",
        "",
        f"Read bandwidth of score_all+top-k: {cpu['score_all_topk_read_gbs']:.1f} GB/s; memcpy in the same run: "
        f"{cpu['memcpy_gbs']:.1f} GB/s (read+write). Peak extra memory: fused "
        f"{cpu['extra_memory_mb']['fused_score_all_topk']:.1f} MB, eager BALD "
        f"{cpu['extra_memory_mb']['eager_bald']:.0f} MB.",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--T", type=int, default=10)
    ap.add_argument("--N", type=int, default=100_000)
    ap.add_argument("--C", type=int, default=230)
    ap.add_argument("--k", type=int, default=10_000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile peer")
    ap.add_argument("--no-baal", action="store_true", help="skip the baal peer")
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON results")
    ap.add_argument("--name", default="acquisition_cpu", help="CPU result file name (without .json)")
    ap.add_argument("--probe", choices=["fused", "eager"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe:
        print(_probe(args.probe, args.T, args.N, args.C, args.k))
        return

    meta = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "command": " ".join(["python", *sys.argv]),
        "load_average_1min_at_start": os.getloadavg()[0],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    cpu = bench_cpu(args.T, args.N, args.C, args.k, args.reps, not args.no_compile, not args.no_baal)
    (args.out / f"{args.name}.json").write_text(json.dumps({**meta, **cpu, "markdown": markdown(cpu)}, indent=2))
    print(markdown(cpu))
    if torch.cuda.is_available():
        gpu = bench_gpu(args.T, args.N, args.C, args.k)
        (args.out / "acquisition_gpu.json").write_text(json.dumps({**meta, **gpu}, indent=2))
        print(json.dumps(gpu, indent=2))


if __name__ == "__main__":
    main()
