"""The EGNN roofline of ``docs/performance.md``, generated from an EGNN result file.

For every forward+backward group of the result file (``benchmarks/test_egnn.py``), the floating
point work of one forward+backward of the encoder is counted from the model's own layer widths
and the group's recorded node and edge counts, and each implementation's median time turns it
into GFLOP/s, set against the machine's fp32 and bf16 matrix-multiply rates measured by this
script on the same number of threads (``torch.matmul`` of 2048 x 2048, best of 10: a practical
peak, not the vendor's).

Work model (multiply-adds x 2; biases, activations, the gate and the sums are left out):

- Edge MLPs, per edge and layer: the first edge Linear's ``h_i``/``h_j`` columns are computed per
  node (fused form, counted per node), so per edge only its ``r^2`` column, then the other edge
  Linears and the coordinate MLP.
- Forward + backward of the edge part is 4x its forward: the fused backward recomputes the
  forward, then forms the input gradients and the weight gradients (each about one forward).
- Node parts (the per-node first edge Linear and the node MLP), forward + backward is 3x forward.

The fused CPU kernels skip the zeros of ReLU outputs, so they do less work than this dense count:
their "GFLOP/s" is dense-equivalent, the rate a dense implementation would need to match them.

Usage: ``python benchmarks/roofline.py [RESULT_JSON]`` (default: the committed
``benchmarks/results/egnn_cpu_2t_full.json``); rewrites the block between
``<!-- roofline:start -->`` and ``<!-- roofline:end -->`` in ``docs/performance.md``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from alkernels.models import EGNN

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "benchmarks" / "results" / "egnn_cpu_2t_full.json"
DOC = ROOT / "docs" / "performance.md"
START, END = "<!-- roofline:start -->", "<!-- roofline:end -->"


def _macs(seq: torch.nn.Sequential) -> list[int]:
    """in x out multiply-adds of each Linear of ``seq``, in order."""
    return [m.in_features * m.out_features for m in seq if isinstance(m, torch.nn.Linear)]


def flops_per_pass(nodes: int, edges: int) -> float:
    """Dense floating-point operations of one forward+backward of the default EGNN on a batch of
    ``nodes`` atoms and ``edges`` directed edges (the work model of the module docstring)."""
    model = EGNN(backend="torch")
    total = 0.0
    for layer in model.layers:
        edge = _macs(layer.edge_mlp)
        first = layer.edge_mlp[0]
        per_edge = first.out_features + sum(edge[1:]) + sum(_macs(layer.coord_mlp))  # r^2 column only
        per_node = (first.in_features - 1) * first.out_features + sum(_macs(layer.node_mlp))
        total += 2 * (4 * per_edge * edges + 3 * per_node * nodes)
    return total


def matmul_rate(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of ``torch.matmul`` on two random ``n x n`` matrices of ``dtype`` (best of
    ``repeats``, after warm-up) on this process's torch threads."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def table(result: dict, peaks: dict[str, float]) -> str:
    """Markdown: per forward+backward group and implementation, the median time, the work, the
    GFLOP/s and its share of the fp32 (or, for bf16 implementations, the bf16) matmul rate."""
    lines = [
        "| group | implementation | median (ms) | GFLOP per pass | GFLOP/s | % of the matmul rate |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, group in result["suites"]["egnn"]["groups"].items():
        members = group["members"]
        meta = next(iter(members.values()))["meta"]
        if "nodes" not in meta or "edges" not in meta or "weights" not in meta:
            continue
        work = flops_per_pass(meta["nodes"], meta["edges"])
        for impl, m in members.items():
            rate = work / m["median_s"] / 1e9
            peak = peaks["bf16"] if "bf16" in impl else peaks["fp32"]
            lines.append(
                f"| {name.removeprefix('egnn/')} | {impl} | {1e3 * m['median_s']:.1f} | {work / 1e9:.1f} | "
                f"{rate:.0f} | {100 * rate / peak:.0f}% |"
            )
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    path = Path(argv[0]) if argv else DEFAULT
    result = json.loads(path.read_text())
    threads = result["environment"].get("threads", torch.get_num_threads())
    torch.set_num_threads(int(threads))
    peaks = {"fp32": matmul_rate(torch.float32), "bf16": matmul_rate(torch.bfloat16)}
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    block = "\n".join(
        [
            START,
            f"Generated by `benchmarks/roofline.py` from `{where}`; matmul rates measured by the script on "
            f"{threads} thread(s): fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s.",
            "",
            table(result, peaks),
            END,
        ]
    )
    text = DOC.read_text()
    if START in text:
        text = text[: text.index(START)] + block + text[text.index(END) + len(END) :]
    else:
        raise SystemExit(f"roofline: {DOC} has no {START} ... {END} block to fill")
    DOC.write_text(text)
    print(block)


if __name__ == "__main__":
    main(sys.argv[1:])
