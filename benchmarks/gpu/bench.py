"""GPU benchmarks of the device check: acquisition, the EGNN edge op, and the whole training step.

Each benchmark times alkernels' fused GPU path against its peers in the same process, on the same
data, and writes one self-describing JSON (device, versions, sizes, ceilings, date, rows):

``acquisition``  ``select(logits, "bald", k)`` (all eight scores + top-k) on [T, N, C] float32
                 logits: the Triton kernel vs torch eager and torch.compile of the reference;
                 achieved GB/s of the logits read against the measured copy bandwidth.
``edge_op``      one EGNN layer's edge op, forward + backward, on a batch of paper-sized random
                 crystals (matsciml mode): Triton in fp32/tf32/bf16 vs the torch reference
                 (eager and torch.compile) and a PyG ``MessagePassing``; TFLOP/s of the edge
                 MLPs against the measured matmul rate of the same precision.
``train_step``   forward + backward + AdamW of the paper's classifier (EGNN + head, batch 256):
                 :class:`alkernels.loop.step.TrainStep` (Triton edge op, bf16 autocast, bucketed
                 shapes, fused AdamW, CUDA graphs) vs the same model on the torch backend and on
                 PyG, in graphs/s; and the projected GPU-hours of the paper's grid at that rate.

Graphs come from :func:`alkernels.data.random_graphs` (NumPy only: the device image has no
ase/spglib/vesin). ``--tiny`` runs every benchmark at toy sizes on whatever device is there (the
dry run of ``check.sh`` uses it on a CPU under ``TRITON_INTERPRET=1``); the figures it writes are
marked ``"dry_run": true`` and measure nothing.

Usage::

    python benchmarks/gpu/bench.py all --out benchmarks/results          # on a GPU
    TRITON_INTERPRET=1 python benchmarks/gpu/bench.py all --tiny --out /tmp/dry
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from alkernels import acquisition as acq
from alkernels.data import GraphDataset, collate, random_graphs
from alkernels.loop.step import TrainStep
from alkernels.models import EGNN, EGNNConfig, EGNNLayer, SpaceGroupClassifier
from alkernels.models.egnn import check_batch, edge_shift_vectors, sum_pool
from alkernels.ops.acquisition.reference import score_all_torch, topk_torch
from alkernels.ops.message_passing import build_edge_graph, egnn_edge_op

ROOT = Path(__file__).resolve().parents[2]
#: Multiply-adds per edge per layer of the paper's edge and coordinate MLPs (forward).
EDGE_MACS = 65 * 128 + 2 * 128 * 128 + 128 * 64 + 64 * 64 + 64
#: The paper's protocol (docs/protocols.md): train split, rounds (10% each), epochs, grid size.
PAPER = {"train_structures": 108_160, "rounds": 10, "epochs": 25, "strategies": 12, "seeds": 3, "variants": 2}
SIZES = {
    "full": {
        "acquisition": {"T": 10, "N": 100_000, "C": 230, "k": 10_816},
        "edge_op": {"batch": 256},
        "train_step": {"batch": 256, "batches": 8, "steps": 30},
    },
    "tiny": {
        "acquisition": {"T": 2, "N": 40, "C": 230, "k": 5},
        "edge_op": {"batch": 2, "atoms": (2, 4)},
        "train_step": {"batch": 2, "batches": 1, "steps": 1, "atoms": (2, 3)},
    },
}


# -- context -------------------------------------------------------------------------------------
def versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    for name in ("triton", "torch_geometric"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = None
    try:
        out["alkernels_commit"] = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        out["alkernels_commit"] = None
    return out


def device_info(device: torch.device) -> dict:
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return {
            "type": "cuda",
            "name": p.name,
            "capability": f"sm_{p.major}{p.minor}",
            "multiprocessors": p.multi_processor_count,
            "memory_GiB": round(p.total_memory / 2**30, 1),
            "l2_MiB": round(getattr(p, "L2_cache_size", 0) / 2**20, 1),
        }
    return {
        "type": "cpu",
        "name": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "triton_interpret": os.environ.get("TRITON_INTERPRET", "0") == "1",
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], object], device: torch.device, warmup: int, reps: int) -> float:
    """Median seconds of ``fn()`` after ``warmup`` calls: CUDA events per call on a GPU, the
    wall clock around a synchronised call elsewhere."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def ceilings(device: torch.device, tiny: bool) -> dict:
    """Measured device-to-device copy bandwidth (bytes read + written per second) and matmul
    rates (fp32 with TF32 off, TF32, bf16) on random data."""
    n = 2**18 if tiny else 2**29  # floats: 2 GiB per buffer on a GPU

    def copy_time() -> float:  # the buffers are freed on return
        src = torch.rand(n, device=device)
        dst = torch.empty_like(src)
        return median_time(lambda: dst.copy_(src), device, 2 if tiny else 5, 3 if tiny else 20)

    t = copy_time()
    out = {"copy_GBps": round(2 * n * 4 / t / 1e9, 1), "copy_bytes": 2 * n * 4}
    size = 256 if tiny else 8192
    old = torch.backends.cuda.matmul.allow_tf32
    try:
        for name, dtype, tf32 in (
            ("fp32", torch.float32, False),
            ("tf32", torch.float32, True),
            ("bf16", torch.bfloat16, False),
        ):
            torch.backends.cuda.matmul.allow_tf32 = tf32
            a = torch.randn(size, size, device=device, dtype=dtype)
            b = torch.randn(size, size, device=device, dtype=dtype)
            t = median_time(lambda: a @ b, device, 1 if tiny else 3, 2 if tiny else 10)
            out[f"matmul_{name}_TFLOPs"] = round(2 * size**3 / t / 1e12, 3)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    out["matmul_size"] = size
    return out


def document(name: str, args, device: torch.device, sizes: dict, ceil: dict, rows: list, extra: dict) -> dict:
    return {
        "benchmark": f"gpu_{name}",
        "description": DESCRIPTIONS[name],
        "command": "python benchmarks/gpu/bench.py " + " ".join(args.argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "dry_run": bool(args.tiny),
        "device": device_info(device),
        "versions": versions(),
        "sizes": sizes,
        "ceilings": ceil,
        "rows": rows,
        **extra,
    }


DESCRIPTIONS = {
    "acquisition": "All eight acquisition scores + BALD top-k of [T, N, C] float32 logits; median time, "
    "GB/s of the logits read, and its fraction of the measured copy bandwidth (target >= 0.70).",
    "edge_op": "One EGNN layer's fused edge op, forward + backward, on a batch of random matsciml-mode "
    "crystals; median time, edges/s, TFLOP/s of the edge and coordinate MLPs (3x forward) and the fraction "
    "of the measured matmul rate at that precision; speed-up vs the torch reference (target >= 4x).",
    "train_step": "One training step (forward + backward + AdamW) of the paper's classifier, batch 256; "
    "graphs/s per peer, speed-up vs the torch backend (target >= 4x), and the paper grid's projected "
    "GPU-hours at the measured rate (moonshot: 3 h, about 100k graphs/s).",
}


def peer_row(name: str, fn: Callable[[], object], device: torch.device, warmup: int, reps: int) -> dict:
    """Time one peer; a peer that fails (e.g. torch.compile on an image without a compiler) gets
    its error recorded instead of a time."""
    try:
        return {"peer": name, "median_s": median_time(fn, device, warmup, reps)}
    except Exception as err:  # a broken peer must not lose the other rows
        traceback.print_exc()
        return {
            "peer": name,
            "error": f"{type(err).__name__}: {str(err).strip().splitlines()[-1][:300] if str(err).strip() else ''}",
        }


# -- acquisition ---------------------------------------------------------------------------------
def bench_acquisition(args, device: torch.device, ceil: dict) -> dict:
    s = SIZES["tiny" if args.tiny else "full"]["acquisition"]
    T, N, C, k = s["T"], s["N"], s["C"], s["k"]
    logits = torch.randn(T, N, C, device=device, generator=torch.Generator(device).manual_seed(0)) * 3
    warm, reps = (0, 1) if args.tiny else (5, 30)

    def fused():
        return acq.select(logits, "bald", k, backend="triton")

    def eager():
        return topk_torch(score_all_torch(logits)[0][5], k, None)

    peers = [("triton", fused), ("torch eager", eager)]
    if not args.tiny:
        compiled = torch.compile(lambda x: score_all_torch(x)[0])
        peers.append(("torch.compile", lambda: topk_torch(compiled(logits)[5], k, None)))
    rows = [peer_row(name, fn, device, warm, reps) for name, fn in peers]
    want = eager()[0]
    got = fused()[0]
    read = T * N * C * 4
    base = next((r["median_s"] for r in rows if r["peer"] == "torch eager" and "median_s" in r), None)
    for r in rows:
        if "median_s" in r:
            r["GBps"] = round(read / r["median_s"] / 1e9, 1)
            r["fraction_of_copy_bandwidth"] = round(r["GBps"] / ceil["copy_GBps"], 3)
            r["speedup_vs_torch_eager"] = round(base / r["median_s"], 2) if base else None
    overlap = len(set(got.tolist()) & set(want.tolist())) / max(len(want), 1)
    extra = {
        "selection_overlap_with_reference": round(overlap, 4),
        "bytes_read": read,
        "targets": {"fraction_of_copy_bandwidth": 0.70},
    }
    return document("acquisition", args, device, s, ceil, rows, extra)


# -- EGNN edge op --------------------------------------------------------------------------------
def paper_batches(count: int, size: int, seed: int = 0, atoms: tuple[int, int] = (4, 20)) -> list:
    """``count`` CPU batches of ``size`` random crystals (4-20 atoms as in MP-20, matsciml mode,
    cutoff 20 A) with random space-group labels."""
    graphs = random_graphs(count * size, atoms=tuple(atoms), seed=seed)
    labels = np.random.default_rng(seed).integers(0, 230, count * size)
    data = GraphDataset(graphs, y=labels)
    return [collate([data[i] for i in range(b * size, (b + 1) * size)]) for b in range(count)]


class PygEdgeOp(torch.nn.Module):
    """The edge work of one EGNN layer as a torch_geometric ``MessagePassing`` (sum aggregation)."""

    def __init__(self, layer: EGNNLayer) -> None:
        super().__init__()
        from torch_geometric.nn import MessagePassing

        class _Op(MessagePassing):
            def __init__(self, lay: EGNNLayer) -> None:
                super().__init__(aggr="add", flow="source_to_target")
                self.lay = lay

            def forward(self, h, x, shift, edge_index):
                return self.propagate(edge_index, h=h, x=x, shift=shift)

            def message(self, h_i, h_j, x_i, x_j, shift):
                d = x_j + shift - x_i
                r = d.norm(dim=1, keepdim=True)
                m = self.lay.edge_mlp(torch.cat([h_j, h_i, (d * d).sum(dim=1, keepdim=True)], dim=1))
                return torch.cat([m, d / (r + self.lay.cfg.eps) * torch.tanh(self.lay.coord_mlp(m))], dim=1)

        self.op = _Op(layer)

    def forward(self, h, x, shift, edge_index):
        out = self.op(h, x, shift, edge_index)
        return out[:, :-3], out[:, -3:]


class PygClassifier(torch.nn.Module):
    """``SpaceGroupClassifier`` whose encoder's edge work runs through :class:`PygEdgeOp`."""

    def __init__(self, model: SpaceGroupClassifier) -> None:
        super().__init__()
        self.model = model
        self.ops = torch.nn.ModuleList(PygEdgeOp(layer) for layer in model.encoder.layers)

    def forward(self, batch):
        enc = self.model.encoder
        check_batch(batch)
        shift = edge_shift_vectors(batch, torch.float32)
        edge_index = torch.stack([batch.edge_src, batch.edge_dst])
        h, x = enc.input(enc.embedding(batch.z)).float(), batch.pos
        for k, (layer, op) in enumerate(zip(enc.layers, self.ops)):
            m, dx = op(h, x, shift, edge_index)
            h, x = h + layer.node_mlp(torch.cat([h, m.float()], dim=1)), x + dx.float()
            if k < len(enc.layers) - 1:
                h = enc.act(h)
        return self.model.head(sum_pool(enc.projection(h), batch.batch, batch.num_graphs))


def bench_edge_op(args, device: torch.device, ceil: dict) -> dict:
    s = SIZES["tiny" if args.tiny else "full"]["edge_op"]
    batch = paper_batches(1, s["batch"], seed=1, atoms=s.get("atoms", (4, 20)))[0].to(device)
    torch.manual_seed(0)
    layer = EGNNLayer(EGNNConfig()).to(device)
    n, e = batch.num_nodes, batch.num_edges
    h = torch.randn(n, 32, device=device, requires_grad=True)
    x = batch.pos.float().clone().requires_grad_()
    shift = edge_shift_vectors(batch, torch.float32)
    graph = build_edge_graph(batch.edge_src, batch.edge_dst, n)
    weights = layer.edge_weights()
    pm, px = torch.randn(n, 128, device=device), torch.randn(n, 3, device=device)
    warm, reps = (0, 1) if args.tiny else (5, 20)

    def step(backend: str, precision: str = "fp32"):
        def run():
            m, dx = egnn_edge_op(h, x, shift, graph, weights, backend=backend, precision=precision)
            ((m * pm).sum() + (dx * px).sum()).backward()

        return run

    pyg = PygEdgeOp(layer).to(device)
    edge_index = torch.stack([batch.edge_src, batch.edge_dst])

    def pyg_run():
        m, dx = pyg(h, x, shift, edge_index)
        ((m * pm).sum() + (dx * px).sum()).backward()

    peers = [(f"triton {p}", step("triton", p), p) for p in ("fp32", "tf32", "bf16")]
    peers += [("torch eager", step("torch"), "fp32"), ("pyg", pyg_run, "fp32")]
    if not args.tiny:
        from alkernels.ops.message_passing import egnn_edge_torch

        ref = torch.compile(egnn_edge_torch)

        def compiled():
            m, dx = ref(h, x, shift, graph, weights, eps=0.1)
            ((m * pm).sum() + (dx * px).sum()).backward()

        peers.append(("torch.compile", compiled, "fp32"))
    rows = []
    for name, fn, prec in peers:
        if device.type == "cuda" and prec != "fp32" and torch.cuda.get_device_capability(device)[0] < 8:
            rows.append({"peer": name, "error": f"{prec} needs sm_80+"})
            continue
        row = peer_row(name, fn, device, warm, reps)
        row["precision"] = prec
        rows.append(row)
    flops = 3 * 2 * EDGE_MACS * e  # forward + backward ~ 3x the forward's multiply-adds
    base = next((r["median_s"] for r in rows if r["peer"] == "torch eager" and "median_s" in r), None)
    for r in rows:
        if "median_s" in r:
            r["edges_per_s"] = round(e / r["median_s"])
            r["TFLOPs"] = round(flops / r["median_s"] / 1e12, 3)
            rate = ceil.get(f"matmul_{r['precision']}_TFLOPs")
            r["fraction_of_matmul_rate"] = round(r["TFLOPs"] / rate, 3) if rate else None
            r["speedup_vs_torch_eager"] = round(base / r["median_s"], 2) if base else None
    extra = {"nodes": n, "edges": e, "flops_per_step": flops, "targets": {"speedup_vs_torch_eager": 4.0}}
    return document("edge_op", args, device, s, ceil, rows, extra)


# -- whole training step -------------------------------------------------------------------------
def grid_projection(graphs_per_s: float) -> dict:
    """GPU-hours of the paper's grid (12 strategies x 3 seeds x 2 variants) at ``graphs_per_s``
    forward+backward graphs per second: each run trains ``epochs`` epochs on every labelled
    set of the schedule (10%, 20%, ..., 100% of the train split)."""
    p = PAPER
    per_run = p["epochs"] * sum(p["train_structures"] * r // p["rounds"] for r in range(1, p["rounds"] + 1))
    runs = p["strategies"] * p["seeds"] * p["variants"]
    hours = runs * per_run / graphs_per_s / 3600
    return {
        "graph_passes_per_run": per_run,
        "runs": runs,
        "gpu_hours": round(hours, 2),
        "moonshot_gpu_hours": 3.0,
        "graphs_per_s_for_moonshot": round(runs * per_run / 3 / 3600),
    }


def bench_train_step(args, device: torch.device, ceil: dict) -> dict:
    s = SIZES["tiny" if args.tiny else "full"]["train_step"]
    batches = paper_batches(s["batches"], s["batch"], seed=2, atoms=s.get("atoms", (4, 20)))
    steps = s["steps"]
    cuda = device.type == "cuda"

    def classifier(backend: str, precision: str = "fp32") -> SpaceGroupClassifier:
        torch.manual_seed(0)
        return SpaceGroupClassifier(EGNN(backend=backend, precision=precision), dropout=0.1).to(device)

    def plain(model: torch.nn.Module):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        on_device = [b.to(device) for b in batches]
        state = {"i": 0}

        def run():
            b = on_device[state["i"] % len(on_device)]
            state["i"] += 1
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(b), b.y).backward()
            opt.step()

        return run

    def fused(precision: str, graphs: bool):
        step = TrainStep(classifier("triton", precision), lr=1e-4, amp=True, graphs=graphs)
        state = {"i": 0}

        def run():
            b = batches[state["i"] % len(batches)]
            state["i"] += 1
            step(b)

        return run

    peers: list[tuple[str, Callable[[], object]]] = []
    if cuda:
        peers += [
            ("fused bf16 + CUDA graphs", fused("bf16", True)),
            ("fused bf16", fused("bf16", False)),
            ("fused tf32 + CUDA graphs", fused("tf32", True)),
        ]
    else:
        peers += [("fused fp32", fused("fp32", False))]
    peers += [("torch backend", plain(classifier("torch"))), ("pyg", plain(PygClassifier(classifier("torch"))))]
    warm = 0 if args.tiny else max(3, len(batches))
    rows = []
    for name, fn in peers:
        row = peer_row(name, fn, device, warm, steps)
        if "median_s" in row:
            row["graphs_per_s"] = round(s["batch"] / row["median_s"], 1)
        rows.append(row)
    base = next((r["graphs_per_s"] for r in rows if r["peer"] == "torch backend" and "graphs_per_s" in r), None)
    for r in rows:
        if "graphs_per_s" in r:
            r["speedup_vs_torch_backend"] = round(r["graphs_per_s"] / base, 2) if base else None
            r["grid_projection"] = grid_projection(r["graphs_per_s"])
    nodes = [b.num_nodes for b in batches]
    edges = [b.num_edges for b in batches]
    extra = {
        "mean_nodes_per_batch": float(np.mean(nodes)),
        "mean_edges_per_batch": float(np.mean(edges)),
        "paper_protocol": PAPER,
        "targets": {"speedup_vs_torch_backend": 4.0, "moonshot_graphs_per_s": 100_000},
    }
    return document("train_step", args, device, s, ceil, rows, extra)


BENCHMARKS = {"acquisition": bench_acquisition, "edge_op": bench_edge_op, "train_step": bench_train_step}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("which", choices=[*BENCHMARKS, "all"])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "benchmarks" / "results"))
    parser.add_argument("--tiny", action="store_true", help="toy sizes (the dry run): measures nothing")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    args.argv = [a for a in (sys.argv[1:] if argv is None else argv)]
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False  # peers run fp32 matmuls unless a row says otherwise
    args.out.mkdir(parents=True, exist_ok=True)
    ceil = ceilings(device, args.tiny)
    print(
        f"device {device_info(device)['name']}: copy {ceil['copy_GBps']} GB/s, matmul fp32/tf32/bf16 "
        f"{ceil['matmul_fp32_TFLOPs']}/{ceil['matmul_tf32_TFLOPs']}/{ceil['matmul_bf16_TFLOPs']} TFLOP/s"
    )
    failed = False
    for name in BENCHMARKS if args.which == "all" else [args.which]:
        t0 = time.perf_counter()
        doc = BENCHMARKS[name](args, device, ceil)
        doc["seconds"] = round(time.perf_counter() - t0, 1)
        path = args.out / f"gpu_{name}{'_dryrun' if args.tiny else ''}.json"
        path.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"\n{name} ({doc['seconds']} s) -> {path}")
        for r in doc["rows"]:
            figures = {k: v for k, v in r.items() if k not in ("peer", "grid_projection")}
            print(f"  {r['peer']:<28} {figures}")
            if "grid_projection" in r:
                print(f"  {'':<28} paper grid: {r['grid_projection']['gpu_hours']} GPU-hours")
            failed |= "error" in r and r["peer"].startswith(("triton", "fused"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
