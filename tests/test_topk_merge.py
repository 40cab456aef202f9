"""The top-k merge op (packed keys against the two-sort reference) and the pool partition.

Single-process and fast; the multi-process selection that uses them is in ``test_distributed``.
"""

from __future__ import annotations

import pytest
import torch

from alkernels import acquisition
from alkernels.distributed import shard_range
from alkernels.ops.topk_merge import (
    MAX_INDEX,
    merge_topk,
    merge_topk_keys,
    merge_topk_torch,
    pack_keys,
    unpack_keys,
)

SPECIAL = torch.tensor(
    [0.0, -0.0, 1.0, -1.0, float("inf"), float("-inf"), 1e-45, -1e-45, 3.4e38, -3.4e38, 1.0000001, 0.99999994]
)


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.float().contiguous().view(torch.int32)


def test_keys_round_trip_every_bit_and_order_like_the_selection():
    idx = torch.tensor([0, 1, 5, MAX_INDEX, 7, 123456789, 2, 3, 4, 9, 10, 11])
    keys = pack_keys(idx, SPECIAL)
    back_idx, back_val = unpack_keys(keys)
    assert torch.equal(back_idx, idx) and torch.equal(bits(back_val), bits(SPECIAL))
    # integer order of the keys == score descending, ties (including -0.0 == 0.0) to the lower index
    order = torch.argsort(keys, descending=True)
    ref_idx, _ = merge_topk_torch(idx, SPECIAL, len(idx))
    assert torch.equal(idx[order], ref_idx)


@pytest.mark.parametrize("seed", range(5))
def test_merge_equals_the_reference_with_many_ties(seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(40):
        m = int(torch.randint(0, 200, (1,), generator=g))
        idx = torch.randperm(1000, generator=g)[:m] * 9973 + int(torch.randint(0, 2**30, (1,), generator=g))
        val = (torch.randint(-3, 4, (m,), generator=g) / 2).float()
        val[torch.rand(m, generator=g) < 0.2] = -0.0
        pick = torch.randint(0, len(SPECIAL), (m,), generator=g)
        special = torch.rand(m, generator=g) < 0.2
        val[special] = SPECIAL[pick[special]]
        k = int(torch.randint(0, m + 3, (1,), generator=g))
        got, ref = merge_topk(idx, val, k), merge_topk_torch(idx, val, k)
        assert torch.equal(got[0], ref[0]) and torch.equal(bits(got[1]), bits(ref[1]))


def test_merging_local_topk_lists_equals_topk_of_the_whole():
    g = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 5, (300,), generator=g).float()
    for parts in (1, 2, 3, 7, 300):
        cands_i, cands_v = [], []
        for r in range(parts):
            lo, hi = shard_range(300, r, parts)
            i, v = acquisition.topk(scores[lo:hi], min(40, hi - lo))
            cands_i.append(i + lo)
            cands_v.append(v)
        got = merge_topk(torch.cat(cands_i), torch.cat(cands_v), 40)
        ref = acquisition.topk(scores, 40)
        assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])


def test_indices_beyond_the_key_range_use_the_reference():
    idx = torch.tensor([2**40, 5, 2**33])
    val = torch.tensor([1.0, 1.0, 2.0])
    got = merge_topk(idx, val, 2)
    assert got[0].tolist() == [2**33, 5]


def test_merge_rejects_bad_candidates():
    with pytest.raises(ValueError, match="NaN"):
        merge_topk(torch.tensor([0, 1]), torch.tensor([1.0, float("nan")]), 1)
    with pytest.raises(ValueError, match="negative index"):
        merge_topk(torch.tensor([-1, 1]), torch.tensor([1.0, 2.0]), 1)
    with pytest.raises(ValueError, match="1-D of one length"):
        merge_topk(torch.tensor([0, 1]), torch.tensor([1.0]), 1)
    assert merge_topk_keys(torch.empty(0, dtype=torch.int64), 3).numel() == 0


def test_shard_range_partitions_in_rank_order():
    for n in (0, 1, 5, 16, 17):
        for world in (1, 2, 3, 8):
            parts = [shard_range(n, r, world) for r in range(world)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            sizes = [hi - lo for lo, hi in parts]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    with pytest.raises(ValueError, match="rank 2 is not in a world of 2"):
        shard_range(10, 2, 2)
    with pytest.raises(ValueError, match="non-negative"):
        shard_range(-1, 0, 1)


def test_empty_chunks_and_empty_exclusion_lists():
    logits = torch.randn(3, 10, 4)
    scores = acquisition.score_all(logits[:, 4:4])
    assert all(s.shape == (0,) for s in scores.values())
    assert torch.equal(acquisition.select(logits, "bald", 3, exclude=[])[0], acquisition.select(logits, "bald", 3)[0])
