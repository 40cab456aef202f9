"""Active learning with your own PyTorch model and DataLoader, scored by alkernels.

No framework and no adapter: run MC-dropout passes over each batch of the unlabelled pool and
hand the logits to ``alkernels.acquisition.StreamingSelector``. It scores every batch with the
fused kernel as it arrives and keeps only the best ``k``, so the pool's [T, N, C] logits never
exist in memory (one batch plus ``k`` scores do). The result is the same query as scoring the
stacked logits with ``alkernels.acquisition.select``, ties to the lower pool index included.

The pattern, for any model that returns logits [batch, C]::

    selector = StreamingSelector("bald", k)
    offset = 0
    for x, _ in pool_loader:                      # shuffle=False: rows arrive in pool order
        selector.update(mc_logits(model, x, passes=10), offset=offset)   # [T, batch, C]
        offset += len(x)
    indices, scores = selector.result()           # positions in the pool, most informative first

This script runs a few rounds of it on Gaussian blobs with a small MLP (CPU, seconds)::

    python examples/pytorch_streaming.py --pool 5000 --rounds 3 --k 100 --strategy bald
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

from alkernels.acquisition import STRATEGIES, StreamingSelector


class MLP(nn.Module):
    """A stand-in for your model: features [batch, d] -> logits [batch, classes]."""

    def __init__(self, features: int, classes: int, hidden: int = 64, dropout: float = 0.3) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(features, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


@torch.no_grad()
def mc_logits(model: nn.Module, x: torch.Tensor, passes: int) -> torch.Tensor:
    """``passes`` stochastic forward passes, float32 [passes, batch, classes].

    Only the dropout layers are switched to training mode (MC dropout); batch norm and the
    like stay in evaluation mode. With ``passes=1`` it is the plain deterministic forward.
    """
    model.eval()
    if passes > 1:
        for module in model.modules():
            if isinstance(module, _DROPOUT):
                module.train()
    out = torch.stack([model(x) for _ in range(passes)])
    model.eval()
    return out


def query(
    model: nn.Module, pool_loader: DataLoader, strategy: str, k: int, passes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` most informative samples of the loader's dataset under ``strategy``.

    ``pool_loader`` must not shuffle: batch ``i`` covers the pool rows after batch ``i - 1``.

    Returns:
        (positions int64 [k] in the loader's dataset, scores float32 [k]), best first.
    """
    selector = StreamingSelector(strategy, k)  # exclude=labelled if the pool holds labelled rows
    offset = 0
    for x, *_ in pool_loader:
        selector.update(mc_logits(model, x, passes), offset=offset)
        offset += x.shape[0]
    return selector.result()


def blobs(n: int, test: int, classes: int, features: int, seed: int) -> tuple[TensorDataset, TensorDataset]:
    """A pool of ``n`` and a test set of ``test`` samples from Gaussian blobs with overlapping
    classes."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, features, generator=g) * 0.6
    y = torch.randint(classes, (n + test,), generator=g)
    x = centres[y] + torch.randn(n + test, features, generator=g)
    return TensorDataset(x[:n], y[:n]), TensorDataset(x[n:], y[n:])


def train(model: nn.Module, data: Subset, epochs: int, seed: int) -> None:
    torch.manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(epochs):
        for x, y in DataLoader(data, batch_size=32, shuffle=True):
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimiser.step()


@torch.no_grad()
def accuracy(model: nn.Module, data: TensorDataset) -> float:
    model.eval()
    x, y = data.tensors
    return float((model(x).argmax(1) == y).float().mean())


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", type=int, default=5000, help="pool size")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--initial", type=int, default=50, help="labelled samples to start from")
    parser.add_argument("--k", type=int, default=100, help="samples labelled per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--passes", type=int, default=10, help="MC-dropout passes T")
    parser.add_argument("--strategy", choices=STRATEGIES, default="bald")
    parser.add_argument("--batch-size", type=int, default=512, help="pool batch size")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict[str, float]]:
    """Run the AL rounds; returns one record per round (also printed)."""
    args = parse_args(argv)
    if args.initial + args.rounds * args.k > args.pool:
        raise SystemExit("error: --initial + --rounds * --k exceeds --pool")
    data, test = blobs(args.pool, 2000, args.classes, args.features, args.seed)
    g = torch.Generator().manual_seed(args.seed)
    labelled = torch.zeros(args.pool, dtype=torch.bool)
    labelled[torch.randperm(args.pool, generator=g)[: args.initial]] = True
    torch.manual_seed(args.seed)
    model = MLP(args.features, args.classes)
    records = []
    for round_ in range(args.rounds):
        train(
            model,
            Subset(data, torch.nonzero(labelled).flatten().tolist()),
            args.epochs,
            args.seed + round_,
        )
        unlabelled = torch.nonzero(~labelled).flatten()
        loader = DataLoader(Subset(data, unlabelled.tolist()), batch_size=args.batch_size, shuffle=False)
        start = time.perf_counter()
        positions, scores = query(model, loader, args.strategy, args.k, args.passes)
        seconds = time.perf_counter() - start
        labelled[unlabelled[positions]] = True  # positions in the unlabelled subset -> pool indices
        record = {
            "round": round_,
            "labelled": int(labelled.sum()),
            "test_accuracy": accuracy(model, test),
            "query_s": seconds,
            "best_score": float(scores[0]),
        }
        records.append(record)
        print(
            f"round {round_}: test accuracy {record['test_accuracy']:.3f}, queried {args.k} by "
            f"{args.strategy} in {seconds * 1e3:.1f} ms, {record['labelled']} labelled"
        )
    return records


if __name__ == "__main__":
    main()
