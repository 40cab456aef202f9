"""Top-k merge on one 64-bit key per candidate: the implementation the distributed selection uses.

A candidate (global index ``i`` < 2**31, float32 score ``v``, not NaN) becomes one int64 key whose
integer order is the selection order (``v`` descending, then ``i`` ascending):

- bits 63..32: the IEEE bits of ``v`` mapped to an order-preserving unsigned integer (negative
  floats have all bits flipped, others the sign bit set), minus 2**31 so the key stays signed;
  -0.0 is mapped as +0.0, so the two zeros tie as they do in ``torch.sort``;
- bits 31..1: ``2**31 - 1 - i``, so among equal scores the lower index has the larger key;
- bit 0: set when ``v`` is -0.0, so decoding gives back the exact bits of every score.

Keys are distinct (indices are), so ``torch.topk`` on them is exact and deterministic: the merge
costs O(M) selection plus O(k log k) for the sorted output, on the CPU or the GPU, instead of two
full sorts of the M candidates. The keys are also the wire format: 8 bytes per candidate.
"""

from __future__ import annotations

import torch

#: Largest global index a key can hold.
MAX_INDEX = 2**31 - 1

_LOW = 0xFFFFFFFF


def pack_keys(indices: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """int64 [M] keys of ``indices`` (int64 [M], in [0, 2**31)) and ``values`` (float32 [M], no NaN)."""
    bits = values.float().contiguous().view(torch.int32).long() & _LOW  # IEEE bits, unsigned
    negzero = bits == 0x80000000
    bits = torch.where(negzero, torch.zeros_like(bits), bits)
    ordered = torch.where(bits >= 0x80000000, bits ^ _LOW, bits | 0x80000000)
    low = ((MAX_INDEX - indices.long()) << 1) | negzero.long()
    return ((ordered - 2**31) << 32) | low


def unpack_keys(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices int64 [M], values float32 [M]) of ``keys`` int64 [M], the exact inverse of
    :func:`pack_keys`."""
    low = keys & _LOW
    ordered = (keys >> 32) + 2**31
    bits = torch.where(ordered >= 0x80000000, ordered & 0x7FFFFFFF, ordered ^ _LOW)
    bits = torch.where((low & 1) == 1, torch.full_like(bits, 0x80000000), bits)
    signed = torch.where(bits >= 2**31, bits - 2**32, bits).to(torch.int32)
    return MAX_INDEX - (low >> 1), signed.view(torch.float32)


def merge_topk_keys(keys: torch.Tensor, k: int) -> torch.Tensor:
    """The ``min(k, M)`` largest of the distinct ``keys`` int64 [M], descending."""
    k = min(k, keys.numel())
    if k == 0:
        return keys[:0]
    return torch.topk(keys, k, sorted=True).values
