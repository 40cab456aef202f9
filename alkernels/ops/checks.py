"""Value checks as registered operators, so that a compiled model keeps them without a graph break.

A check that reads values back (an index range, say) is a host synchronisation and, written in
Python, a graph break under ``torch.compile``. Registered as an operator, it runs opaquely inside
the compiled graph and raises the same ``ValueError`` as in eager mode. Each returns a new tensor
that the caller uses in place of its input, so no compiler can drop the check as dead code.
"""

from __future__ import annotations

import torch
from torch import Tensor

from alkernels.ops.registry import qualname


@torch.library.custom_op(qualname("check_atomic_numbers"), mutates_args=())
def check_atomic_numbers(z: Tensor, num_species: int) -> Tensor:
    """A copy of ``z`` (int64 [n]) after checking that every entry lies in ``[0, num_species)``.

    Raises:
        ValueError: an atomic number outside that range (the message names it).
    """
    if z.numel():
        lo, hi = int(z.min()), int(z.max())
        if lo < 0 or hi >= num_species:
            raise ValueError(f"atomic numbers must lie in [0, {num_species}), got values in [{lo}, {hi}]")
    return z.clone()


@check_atomic_numbers.register_fake
def _check_atomic_numbers_fake(z: Tensor, num_species: int) -> Tensor:
    return torch.empty_like(z)
