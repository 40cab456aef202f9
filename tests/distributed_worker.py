"""A small active-learning run for the distributed tests, launched by torchrun (or imported).

``build_loop`` makes the same run in one process or on every rank of a job: 48 random graphs
(``alkernels.data.random_graphs``, no neighbour library) with 4 classes, a narrow 2-layer EGNN
classifier, 4 rounds of 4 queried structures, 2 epochs per round. Under torchrun::

    torchrun --standalone --nproc_per_node 2 tests/distributed_worker.py --out DIR --strategies margin:0,bald:0.1

runs each strategy (with the head dropout after the colon, 0 by default) into ``DIR/<strategy>``.
``--kill-rank R --kill-at N`` makes rank R kill itself (SIGKILL, no clean-up, as an out-of-memory
kill or a lost node would) at its N-th training forward pass, in the middle of a round.
"""

from __future__ import annotations

import argparse
import os
import signal
from functools import partial
from pathlib import Path

import numpy as np
import torch

from alkernels.data import GraphDataset, random_graphs
from alkernels.loop import ActiveLearningLoop, LoopConfig, LoopRuntime
from alkernels.models import EGNN, EGNNConfig, SpaceGroupClassifier

N_TRAIN, N_TEST = 36, 12


def dataset() -> GraphDataset:
    """48 random cells of 2-5 atoms; the class is the atom count minus 2 (learnable)."""
    graphs = random_graphs(N_TRAIN + N_TEST, atoms=(2, 5), seed=0)
    return GraphDataset(graphs, y=np.diff(graphs.node_ptr) - 2)


def classifier(dropout: float, kill_rank: int | None = None, kill_at: int | None = None) -> SpaceGroupClassifier:
    """A narrow EGNN with a 4-class head; optionally SIGKILLs rank ``kill_rank`` at its
    ``kill_at``-th forward pass in training mode."""
    config = EGNNConfig(num_layers=2, edge_hidden=32, coord_hidden=16, node_hidden=32, proj_dim=32)
    model = SpaceGroupClassifier(EGNN(config, backend="auto"), dropout=dropout, hidden=32, num_classes=4)
    if kill_rank is not None and int(os.environ.get("RANK", "0")) == kill_rank:
        calls = [0]

        def hook(module, inputs):
            if module.training:
                calls[0] += 1
                if calls[0] == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)

        model.register_forward_pre_hook(hook)
    return model


def build_loop(
    out: str | os.PathLike,
    strategy: str,
    *,
    distributed: bool,
    dropout: float = 0.0,
    kill_rank: int | None = None,
    kill_at: int | None = None,
) -> ActiveLearningLoop:
    data = dataset()
    return ActiveLearningLoop(
        partial(classifier, dropout, kill_rank, kill_at),
        strategy,
        data[np.arange(N_TRAIN)],
        data[np.arange(N_TRAIN, N_TRAIN + N_TEST)],
        LoopConfig(initial=4, query_size=4, rounds=4, epochs=2, seed=0, batch_size=6, lr=1e-2),
        out_dir=out,
        runtime=LoopRuntime(eval_batch_size=8, distributed=distributed),
    )


def main() -> None:
    from alkernels import distributed

    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--strategies", default="margin", help="name[:dropout],...")
    p.add_argument("--kill-rank", type=int, default=None)
    p.add_argument("--kill-at", type=int, default=None)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--timeout", type=float, default=30.0)
    args = p.parse_args()
    torch.set_num_threads(1)
    distributed.init_process_group(timeout=args.timeout)
    for spec in args.strategies.split(","):
        name, _, dropout = spec.partition(":")
        build_loop(
            Path(args.out) / name,
            name,
            distributed=True,
            dropout=float(dropout or 0.0),
            kill_rank=args.kill_rank,
            kill_at=args.kill_at,
        ).run(resume=args.resume)
    distributed.destroy_process_group()


if __name__ == "__main__":
    main()
