"""EGNN benchmarks: fused message passing against its peers, a training epoch and pool scoring.

1. Forward+backward throughput (graphs/s) and peak memory of the paper's EGNN encoder on batches
   of built-in synthetic crystals, both graph modes, for three peers in the same run:
   ``fused`` (backend "auto": C++ on CPU, Triton on CUDA), ``reference`` (plain PyTorch) and
   ``pyg`` (the same layer as a torch_geometric ``MessagePassing``). Timings interleave the peers
   rep by rep in one process (so load drifts on a shared machine hit all of them alike) and
   report the median. Each (mode, batch) is timed with the initial weights and with the weights
   after ``--train-steps`` of training (``--weights``): the fused CPU kernels skip the zeros of
   ReLU outputs, which grow sparser with training, so rows record the mean ReLU density too.
   Peak memory of each (peer, mode, batch) comes from a fresh subprocess: on CPU the growth of the
   peak resident set over one forward+backward (VmHWM), on CUDA ``max_memory_allocated``.
2. One training epoch (AdamW, batch 24) over ``--train-n`` structures.
3. One pool-scoring pass over ``--pool-n`` structures with T MC-dropout passes: the encoder runs
   once per batch, the head T times, and a streaming BALD top-k consumes the [T, b, 230] logits.

Structures: ``--distinct`` synthetic crystals, tiled to the requested sizes (as in
bench_graphs.py). Results go to JSON with the machine, versions, sizes and date.

Usage::

    python benchmarks/bench_egnn.py --out benchmarks/results/egnn_cpu2.json
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
from pathlib import Path

import numpy as np
import torch
from torch_geometric.nn import MessagePassing

from alkernels.data import GraphDataset, build_graphs, collate, synthetic_crystals
from alkernels.models import EGNN, SpaceGroupClassifier
from alkernels.models.egnn import EGNNLayer, check_batch, edge_shift_vectors, sum_pool
from alkernels.ops.message_passing import resolve_backend

CUTOFFS = {"periodic": 6.0, "matsciml": 20.0}
EDGE_MACS = 65 * 128 + 2 * 128 * 128 + 128 * 64 + 64 * 64 + 64  # per edge per layer, forward
NODE_MACS = 160 * 128 + 2 * 128 * 128 + 128 * 32  # per node per layer, forward


class PygEdgeOp(MessagePassing):
    """The EGNN edge work of one layer as a torch_geometric MessagePassing (sum aggregation)."""

    def __init__(self, layer: EGNNLayer) -> None:
        super().__init__(aggr="add", flow="source_to_target")
        self.layer = layer

    def forward(self, h, x, shift, edge_index):
        out = self.propagate(edge_index, h=h, x=x, shift=shift)
        hidden = out.shape[1] - 3
        return out[:, :hidden], out[:, hidden:]

    def message(self, h_i, h_j, x_i, x_j, shift):
        d = x_j + shift - x_i
        r = d.norm(dim=1, keepdim=True)
        m = self.layer.edge_mlp(torch.cat([h_j, h_i, (d * d).sum(dim=1, keepdim=True)], dim=1))
        gate = torch.tanh(self.layer.coord_mlp(m))
        return torch.cat([m, d / (r + self.layer.cfg.eps) * gate], dim=1)


class PygEGNN(torch.nn.Module):
    """The EGNN encoder with every layer's edge work done by :class:`PygEdgeOp`."""

    def __init__(self, encoder: EGNN) -> None:
        super().__init__()
        self.encoder = encoder
        self.ops = torch.nn.ModuleList(PygEdgeOp(layer) for layer in encoder.layers)

    def forward(self, batch):
        enc = self.encoder
        check_batch(batch)
        shift = edge_shift_vectors(batch, torch.float32)
        edge_index = torch.stack([batch.edge_src, batch.edge_dst])
        h, x = enc.input(enc.embedding(batch.z)), batch.pos
        for k, (layer, op) in enumerate(zip(enc.layers, self.ops)):
            m, dx = op(h, x, shift, edge_index)
            h, x = h + layer.node_mlp(torch.cat([h, m], dim=1)), x + dx
            if k < len(enc.layers) - 1:
                h = enc.act(h)
        return sum_pool(enc.projection(h), batch.batch, batch.num_graphs)


def dataset(args, mode: str, size: int) -> GraphDataset:
    """``size`` graphs: the ``--distinct`` synthetic crystals tiled."""
    structures = synthetic_crystals(args.distinct, seed=0, cache_dir=args.cache_dir)
    graphs = build_graphs(structures, cutoff=CUTOFFS[mode], mode=mode, cache_dir=args.cache_dir)
    return GraphDataset(graphs, y=structures.labels - 1, indices=np.resize(np.arange(args.distinct), size))


def make_model(peer: str, device: torch.device, state: dict | None = None) -> torch.nn.Module:
    """The encoder of ``peer`` with the seed-0 initial weights, or the encoder weights ``state``."""
    torch.manual_seed(0)
    encoder = EGNN(backend="auto" if peer == "fused" else "reference")
    if state is not None:
        encoder.load_state_dict(state)
    return (PygEGNN(encoder) if peer == "pyg" else encoder).to(device)


def trained_state(args, mode: str, device: torch.device) -> dict:
    """Encoder weights after ``args.train_steps`` AdamW steps (lr 1e-3, batch 24) of space-group
    classification on the ``--distinct`` built-in crystals in ``mode``. The fused C++ kernels skip
    the zeros of the edge MLPs' ReLU outputs, which grow sparser as the model trains, so their
    speed depends on the weights while the dense peers' does not."""
    model = train_classifier(dataset(args, mode, args.distinct), device, lr=1e-3, steps=args.train_steps)
    return {k: v.detach().cpu() for k, v in model.encoder.state_dict().items()}


def train_classifier(
    ds: GraphDataset, device: torch.device, lr: float, steps: int | None = None
) -> torch.nn.Module:
    """A seed-0 ``SpaceGroupClassifier(EGNN())`` trained with AdamW (batch 24, shuffled) for one
    epoch over ``ds``, or for ``steps`` steps cycling over it."""
    loader = torch.utils.data.DataLoader(ds, batch_size=24, shuffle=True, collate_fn=collate)
    torch.manual_seed(0)
    model = SpaceGroupClassifier(EGNN(), dropout=0.1).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    done = 0
    while steps is None or done < steps:
        for batch in loader:
            batch = batch.to(device)
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(batch), batch.y).backward()
            opt.step()
            done += 1
            if done == steps:
                break
        if steps is None:
            break
    sync(device)
    return model


def relu_density(state: dict | None, batch, device: torch.device) -> float:
    """Mean fraction of positive outputs of the edge and coordinate MLPs' ReLUs on ``batch`` (the
    share of multiply-adds the fused kernels' zero-skipping GEMMs still do)."""
    model = make_model("pyg", device, state)
    fractions: list[float] = []
    for layer in model.encoder.layers:
        for act in [*layer.edge_mlp, *layer.coord_mlp]:
            if isinstance(act, torch.nn.ReLU):
                act.register_forward_hook(lambda _m, _i, out: fractions.append((out > 0).float().mean().item()))
    with torch.no_grad():
        model(batch)
    return float(np.mean(fractions))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def fused_step(model: torch.nn.Module, batch, device: torch.device) -> None:
    """One forward+backward of the encoder on ``batch``."""
    model.zero_grad(set_to_none=True)
    model(batch).square().sum().backward()
    sync(device)


def peak_memory(args) -> float:
    """Child process: peak memory (MiB) of one forward+backward of ``args.peer`` (after a warm-up
    step on CUDA; on CPU the first step, whose one-off allocations every peer pays alike)."""
    device = torch.device(args.device)
    ds = dataset(args, args.mode, args.batch)
    batch = collate([ds[i] for i in range(args.batch)]).to(device)
    model = make_model(args.peer, device)  # peak memory does not depend on the weights
    if device.type == "cuda":
        fused_step(model, batch, device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fused_step(model, batch, device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    rss_before = _proc_status_kib("VmRSS")
    try:  # reset the high-water mark to the current RSS (Linux >= 4.0)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    fused_step(model, batch, device)
    return (_proc_status_kib("VmHWM") - rss_before) / 1024


def _proc_status_kib(field: str) -> int:
    """A ``kB`` field of /proc/self/status (VmHWM, unlike ru_maxrss, is not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def throughput(args, mode: str, b: int, device: torch.device, weights: str, state: dict | None) -> list[dict]:
    """Rows of one (mode, batch, weights): interleaved timings of every peer, and with the initial
    weights their peak memory (which the weights do not change)."""
    ds = dataset(args, mode, b)
    batch = collate([ds[i] for i in range(b)]).to(device)
    models = {peer: make_model(peer, device, state) for peer in args.peers}
    density = relu_density(state, batch, device)
    times: dict[str, list[float]] = {peer: [] for peer in args.peers}
    for peer in args.peers:  # warm-up
        fused_step(models[peer], batch, device)
    for _ in range(args.reps):
        for peer in args.peers:
            t0 = time.perf_counter()
            fused_step(models[peer], batch, device)
            times[peer].append(time.perf_counter() - t0)
    rows = []
    for peer in args.peers:
        med = statistics.median(times[peer])
        row = {
            "peer": peer, "mode": mode, "batch": b, "weights": weights, "relu_density": density,
            "nodes": batch.num_nodes, "edges": batch.num_edges, "median_s": med, "graphs_per_s": b / med,
        }  # fmt: skip
        if weights == "init":
            cmd = [sys.executable, __file__, "--one", "--peer", peer, "--mode", mode, "--batch", str(b),
                   "--device", args.device, "--distinct", str(args.distinct), "--cache-dir", args.cache_dir]  # fmt: skip
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            row["peak_mem_MiB"] = float(out.split()[-1])
        if device.type == "cuda":
            flops = 6 * 5 * (EDGE_MACS * batch.num_edges + NODE_MACS * batch.num_nodes)
            row["achieved_TFLOPs"] = flops / med / 1e12
        rows.append(row)
    return rows


def matmul_tflops(device: torch.device) -> dict:
    """Measured dense matmul rate on the device (fp32 IEEE and TF32), 8192^3, median of 10."""
    a = torch.randn(8192, 8192, device=device)
    b = torch.randn(8192, 8192, device=device)
    rates = {}
    for name, tf32 in (("fp32", False), ("tf32", True)):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        a @ b
        sync(device)
        times = []
        for _ in range(10):
            t0 = time.perf_counter()
            a @ b
            sync(device)
            times.append(time.perf_counter() - t0)
        rates[name] = 2 * 8192**3 / statistics.median(times) / 1e12
    torch.backends.cuda.matmul.allow_tf32 = False
    return rates


def train_epoch(args, device: torch.device) -> dict:
    ds = dataset(args, args.task_mode, args.train_n)
    t0 = time.perf_counter()
    train_classifier(ds, device, lr=1e-4)
    sec = time.perf_counter() - t0
    return {"structures": args.train_n, "mode": args.task_mode, "batch": 24, "epoch_s": sec, "structures_per_s": args.train_n / sec}


def score_pool(args, device: torch.device) -> dict:
    from alkernels.acquisition import StreamingSelector

    ds = dataset(args, args.task_mode, args.pool_n)
    loader = torch.utils.data.DataLoader(ds, batch_size=args.pool_batch, collate_fn=collate)
    torch.manual_seed(0)
    model = SpaceGroupClassifier(EGNN(), dropout=0.1).to(device).eval()
    selector = StreamingSelector("bald", k=args.pool_n // 10)
    t0 = time.perf_counter()
    with torch.no_grad():
        for batch in loader:
            selector.update(model.mc_logits(batch.to(device), args.T))
    selector.result()
    sync(device)
    sec = time.perf_counter() - t0
    return {"structures": args.pool_n, "mode": args.task_mode, "T": args.T, "batch": args.pool_batch, "pass_s": sec, "structures_per_s": args.pool_n / sec}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--distinct", type=int, default=2000, help="distinct synthetic crystals")
    p.add_argument("--batches", type=int, nargs="+", default=[24, 256])
    p.add_argument("--modes", nargs="+", default=["periodic", "matsciml"])
    p.add_argument("--peers", nargs="+", default=["fused", "reference", "pyg"])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--weights", nargs="+", default=["init", "trained"], choices=["init", "trained"],
                   help="time with the initial encoder weights and/or after --train-steps of training")
    p.add_argument("--train-steps", type=int, default=400)
    p.add_argument("--train-n", type=int, default=10_000)
    p.add_argument("--pool-n", type=int, default=100_000)
    p.add_argument("--pool-batch", type=int, default=256)
    p.add_argument("--T", type=int, default=10)
    p.add_argument("--task-mode", default="matsciml", help="graph mode of the epoch and pool pass")
    p.add_argument("--sections", nargs="+", default=["throughput", "tasks"], choices=["throughput", "tasks"])
    p.add_argument("--threads", type=int, default=None, help="torch/OpenMP threads (default: torch's)")
    p.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "alkernels-bench"))
    p.add_argument("--out", type=Path)
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--peer", help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)  # also the OpenMP threads of the C++ kernels
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # for the memory subprocesses
    if args.one:
        print(peak_memory(args))
        return
    device = torch.device(args.device)
    dataset(args, "periodic", 1), dataset(args, "matsciml", 1)  # fill the caches once
    rows = []
    for mode in args.modes if "throughput" in args.sections else []:
        for weights in args.weights:
            state = trained_state(args, mode, device) if weights == "trained" else None
            for b in args.batches:
                for row in throughput(args, mode, b, device, weights, state):
                    rows.append(row)
                    mem = f"{row['peak_mem_MiB']:8.1f} MiB" if "peak_mem_MiB" in row else ""
                    print(f"{mode:9s} {weights:7s} B={b:4d} {row['peer']:9s} E={row['edges']:7d} "
                          f"{row['graphs_per_s']:9.1f} graphs/s  ReLU density {row['relu_density']:.2f} {mem}",
                          flush=True)  # fmt: skip
    for row in rows:
        key = (row["mode"], row["batch"], row["weights"], "reference")
        ref = next(r for r in rows if (r["mode"], r["batch"], r["weights"], r["peer"]) == key)
        row["speedup_vs_reference"] = row["graphs_per_s"] / ref["graphs_per_s"]
        if "peak_mem_MiB" in row:
            row["memory_vs_reference"] = row["peak_mem_MiB"] / ref["peak_mem_MiB"]
    result = {
        "benchmark": "EGNN encoder forward+backward; training epoch; pool scoring",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__,
            "fused_backend": resolve_backend("auto", torch.empty(0, device=device)),
        },
        "cutoffs_A": CUTOFFS, "distinct_structures": args.distinct, "train_steps": args.train_steps,
        "throughput": rows,
    }  # fmt: skip
    if device.type == "cuda":
        result["matmul_TFLOPs"] = matmul_tflops(device)
    save(args.out, result)
    if "tasks" in args.sections:
        result["train_epoch"] = train_epoch(args, device)
        print("train epoch", result["train_epoch"], flush=True)
        save(args.out, result)
        result["pool_scoring"] = score_pool(args, device)
        print("pool scoring", result["pool_scoring"], flush=True)
        save(args.out, result)


def save(path: Path | None, result: dict) -> None:
    """Write the results so far (each section is saved as soon as it is measured)."""
    if path is None:
        return
    result["machine"]["load_average_1min_at_save"] = os.getloadavg()[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")

if __name__ == "__main__":
    main()
