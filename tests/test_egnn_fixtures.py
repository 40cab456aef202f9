"""Random crystal batches for the EGNN and message-passing tests (built without alkernels.data),
and checks that they honour the GraphBatch contract."""

from __future__ import annotations

import torch

from helpers import random_batch


def test_random_batch_honours_the_contract() -> None:
    for mode in ("periodic", "matsciml"):
        b = random_batch([3, 1, 4], mode=mode, cutoff=3.0)
        assert bool((b.edge_dst[1:] >= b.edge_dst[:-1]).all())
        d = (
            b.pos[b.edge_src]
            + torch.einsum("ek,ekl->el", b.edge_shift, b.cell[b.batch[b.edge_src]])
            - b.pos[b.edge_dst]
        )
        assert bool((d.norm(dim=1) > 0).all())
        assert bool((b.batch[b.edge_src] == b.batch[b.edge_dst]).all())
        if mode == "matsciml":
            assert bool((b.edge_shift == 0).all())
            assert not bool(((b.edge_dst >= 3) & (b.edge_dst < 4)).any())  # the one-atom cell
        else:
            assert bool((d.norm(dim=1) < 3.0 + 1e-5).all())
