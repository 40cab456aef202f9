"""The scale search of the space-group study: where does the paper's EGNN learn on a CPU?

A *trial* trains the paper's classifier (unchanged architecture) on a labelled fraction of a
dataset's training split, as random sampling's learning curve would see it, and evaluates test
accuracy after every epoch. Each trial appends one JSON line to a results file, so a search can
be stopped and continued, and :func:`scale_table` turns the file into the committed markdown table
(dataset, size, graphs, cutoff, optimiser and schedule, epochs, final test accuracy, the
majority-class rate of the test split, wall time).

Run it as a module::

    python -m alkernels.experiments.spacegroup.scale --dataset perovskite:2500 --fractions 0.1,0.5,1 \
        --epochs 15 --lr 1e-3 --schedule cosine --out experiments/spacegroup/scale/trials.jsonl
    python -m alkernels.experiments.spacegroup.scale --table experiments/spacegroup/scale/trials.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from alkernels._paths import user_path
from alkernels.data.batch import GraphBatch
from alkernels.data.dataset import collate
from alkernels.data.specs import DatasetSplit
from alkernels.data.symmetry import LABEL_MODES, class_labels
from alkernels.loop.trainer import Trainer
from alkernels.models import paper_classifier

#: Learning-rate schedules of a trial: constant, or cosine decay to zero over the trial's epochs.
SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class Trial:
    """One training configuration of the search (the data settings are recorded alongside).

    Attributes:
        fraction: labelled fraction of the training split (a fixed random subset per seed).
        epochs: epochs over that subset.
        lr, schedule, weight_decay: AdamW learning rate, ``SCHEDULES`` entry, weight decay.
        dropout: the head's dropout.
        batch_size: training batch size.
        seed: model init, subset, batch order and dropout.
        backend: EGNN edge-op backend.
    """

    fraction: float = 1.0
    epochs: int = 10
    lr: float = 1e-3
    schedule: str = "constant"
    weight_decay: float = 0.0
    dropout: float = 0.1
    batch_size: int = 24
    seed: int = 0
    backend: str = "auto"

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")


def majority_rate(data: DatasetSplit) -> float:
    """The test accuracy of always predicting the training split's most frequent class."""
    train = class_labels(data.train_labels, data.label_mode)
    values, counts = np.unique(train, return_counts=True)
    return float(np.mean(class_labels(data.test_labels, data.label_mode) == values[np.argmax(counts)]))


@torch.no_grad()
def _evaluate(model: nn.Module, loader: DataLoader) -> tuple[float, float]:
    model.eval()
    correct, loss, n = 0, 0.0, 0
    for batch in loader:
        logits = model(batch).float()
        loss += nn.functional.cross_entropy(logits, batch.y, reduction="sum").item()
        correct += int((logits.argmax(1) == batch.y).sum())
        n += int(batch.y.numel())
    return correct / n, loss / n


def run_trial(data: DatasetSplit, trial: Trial) -> dict:
    """Train on ``trial.fraction`` of ``data.train`` and evaluate on ``data.test`` after each epoch.

    Returns:
        ``{"trial", "n_labelled", "n_test", "majority", "curve": [{"epoch", "accuracy", "loss",
        "train_loss"}], "accuracy", "best_accuracy", "seconds", "cpu_seconds"}``; accuracies are
        fractions, ``seconds`` is wall time and ``cpu_seconds`` the process's CPU time (on a shared
        machine the better measure of what the trial costs alone).
    """
    t0, c0 = time.perf_counter(), time.process_time()
    torch.manual_seed(trial.seed)
    model = paper_classifier(trial.backend, trial.dropout, num_classes=data.num_classes)
    n = len(data.train)
    k = max(1, int(math.floor(trial.fraction * n + 0.5)))
    subset = np.sort(np.random.default_rng(trial.seed).choice(n, k, replace=False))
    gen = torch.Generator().manual_seed(trial.seed)
    loader = DataLoader(
        Subset(data.train, subset.tolist()),
        batch_size=trial.batch_size,
        shuffle=True,
        generator=gen,
        collate_fn=collate,
    )
    test = DataLoader(data.test, batch_size=256, shuffle=False, collate_fn=collate)
    opt = torch.optim.AdamW(model.parameters(), lr=trial.lr, weight_decay=trial.weight_decay)
    steps = trial.epochs * len(loader)
    sched = (
        torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
        if trial.schedule == "cosine"
        else None
    )
    trainer = Trainer(opt, sched)
    curve = []
    for epoch in range(trial.epochs):
        model.train()
        total, seen = 0.0, 0

        def batch_loss(batch: GraphBatch) -> torch.Tensor:
            nonlocal total, seen
            loss = nn.functional.cross_entropy(model(batch), batch.y)
            total += float(loss) * int(batch.y.numel())
            seen += int(batch.y.numel())
            return loss

        trainer.epoch(loader, batch_loss)
        acc, test_loss = _evaluate(model, test)
        curve.append({"epoch": epoch + 1, "accuracy": acc, "loss": test_loss, "train_loss": total / seen})
    return {
        "trial": asdict(trial),
        "n_labelled": k,
        "n_test": len(data.test),
        "majority": majority_rate(data),
        "curve": curve,
        "accuracy": curve[-1]["accuracy"],
        "best_accuracy": max(c["accuracy"] for c in curve),
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - c0,
    }


def scale_table(rows: Sequence[dict]) -> str:
    """Markdown table of trial results, one line per trial, grouped by dataset and settings and
    ordered by labelled fraction within a group."""
    head = (
        "| dataset | structures (train/test) | graphs | cutoff A | labelled | lr, schedule | wd | dropout "
        "| epochs | test acc % (best) | majority % | acc / majority | acc - majority | threads | wall s | CPU s |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]

    def key(r: dict) -> tuple:
        t, d = r["trial"], r["data"]
        return (
            d["dataset"],
            d.get("label_mode", "spacegroup"),
            d["graph_mode"],
            d["cutoff"],
            -t["lr"],
            t["schedule"],
            t["weight_decay"],
            t["dropout"],
            t["epochs"],
            t["fraction"],
        )

    for r in sorted(rows, key=key):
        t, d = r["trial"], r["data"]
        acc, maj = 100 * r["accuracy"], 100 * r["majority"]
        cpu = f"{r['cpu_seconds']:.0f}" if "cpu_seconds" in r else ""
        lines.append(
            f"| {d['dataset']}{'' if d.get('label_mode', 'spacegroup') == 'spacegroup' else ', ' + d['label_mode']} "
            f"| {d['n_train']}/{r['n_test']} | {d['graph_mode']} | {d['cutoff']:g} "
            f"| {t['fraction']:.0%} ({r['n_labelled']}) | {t['lr']:g}, {t['schedule']} | {t['weight_decay']:g} "
            f"| {t['dropout']:g} | {t['epochs']} | {acc:.1f} ({100 * r['best_accuracy']:.1f}) | {maj:.1f} "
            f"| {acc / maj:.2f} | {acc - maj:+.1f} | {r.get('threads', '')} | {r['seconds']:.0f} | {cpu} |"
        )
    return "\n".join(lines)


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m alkernels.experiments.spacegroup.scale",
        description="Scale-search trials of the space-group study (appended to --out), "
        "or --table FILE to print the markdown table of a results file.",
    )
    p.add_argument("--table", help="print the table of this results file and exit")
    p.add_argument("--dataset", help="a dataset spec (perovskite:N, builtin:N or a path)")
    p.add_argument("--label", help="for files: 'spacegroup' or a column of space-group numbers")
    p.add_argument("--label-mode", default="spacegroup", choices=list(LABEL_MODES))
    p.add_argument("--structures", type=int, default=None, help="a fixed random subset of this many")
    p.add_argument("--split", default="0.8,0.2", help="train,test fractions (crystal-family stratified, seed 0)")
    p.add_argument("--graph-mode", default="periodic", choices=["periodic", "matsciml"])
    p.add_argument("--cutoff", type=float, default=4.5)
    p.add_argument("--fractions", default="1.0", help="comma-separated labelled fractions")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--schedule", default="constant", choices=SCHEDULES)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="auto")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--out", help="results file (JSON lines, appended)")
    args = p.parse_args(argv)
    if args.table:
        rows = [json.loads(x) for x in user_path(args.table).read_text().splitlines() if x.strip()]
        print(scale_table(rows))
        return 0
    if not args.dataset or not args.out:
        p.error("--dataset and --out are required (or --table FILE)")
    from alkernels.data import load_split

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    split = tuple(_floats(args.split))
    data = load_split(
        args.dataset,
        label=args.label,
        structures=args.structures,
        split=split,
        cutoff=args.cutoff,
        graph_mode=args.graph_mode,
        cache_dir=args.cache_dir,
        workers=1,
        label_mode=args.label_mode,
    )
    print(
        f"{data.name}: {len(data.train)} train / {len(data.test)} test, majority {majority_rate(data):.3f} "
        f"({time.perf_counter() - t0:.0f} s to load)",
        flush=True,
    )
    info = {
        "dataset": data.name,
        "structures": args.structures,
        "split": split,
        "n_train": len(data.train),
        "graph_mode": args.graph_mode,
        "cutoff": args.cutoff,
        "label_mode": args.label_mode,
    }
    out = user_path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for fraction in _floats(args.fractions):
        trial = Trial(
            fraction=fraction,
            epochs=args.epochs,
            lr=args.lr,
            schedule=args.schedule,
            weight_decay=args.weight_decay,
            dropout=args.dropout,
            batch_size=args.batch_size,
            seed=args.seed,
            backend=args.backend,
        )
        res = {"data": info, "threads": args.threads, **run_trial(data, trial)}
        with open(out, "a", encoding="utf-8") as f:
            f.write(json.dumps(res) + "\n")
            f.flush()
            os.fsync(f.fileno())
        accs = " ".join(f"{100 * c['accuracy']:.0f}" for c in res["curve"])
        print(
            f"fraction {fraction:g}: final {100 * res['accuracy']:.1f}% (per epoch: {accs}) in {res['seconds']:.0f} s",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
