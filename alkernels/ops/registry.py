"""The ``alkernels`` operator namespace: every fused op is a registered PyTorch operator.

Each op family registers its kernels with :func:`torch.library.custom_op` under
``alkernels::<name>`` (``torch.ops.alkernels.<name>``), with

* a fake (meta) implementation, so that FakeTensor, ``torch.compile`` and ``torch.export`` see the
  output shapes without running a kernel;
* its autograd formula through :func:`torch.library.register_autograd`, where the op is
  differentiable (and a differentiable backward, so that double backward is correct);
* a ``vmap`` rule (:func:`register_vmap_by_loop`): ``torch.func.vmap`` runs the op once per
  batch entry, a correct if unfused fallback.

The compiled extension stays free of libtorch: the registration is Python-only (the kernels are
reached through pybind11 and NumPy views of CPU tensors, or Triton), so one wheel serves every
torch release. :data:`OPERATORS` names every registered op; the tests run
:func:`torch.library.opcheck` on each of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

#: The namespace of every operator this package registers.
NAMESPACE = "alkernels"

#: Qualified names (``alkernels::<name>``) of the registered operators, filled on registration.
OPERATORS: list[str] = []


def qualname(name: str) -> str:
    """``alkernels::<name>``, recorded in :data:`OPERATORS`."""
    full = f"{NAMESPACE}::{name}"
    if full not in OPERATORS:
        OPERATORS.append(full)
    return full


def _select(arg: Any, dim: int | None, index: int) -> Any:
    if dim is None or not isinstance(arg, torch.Tensor):
        return arg
    return arg.select(dim, index)


def register_vmap_by_loop(op: Callable[..., Any], num_outputs: int | None) -> None:
    """Register a ``torch.func.vmap`` rule for the custom op ``op`` that calls it once per batch
    entry and stacks the outputs along dim 0.

    Args:
        op: the operator as :func:`torch.library.custom_op` returned it.
        num_outputs: the number of tensors it returns as a tuple or list, or None for one tensor.
    """

    def rule(info: Any, in_dims: Sequence[int | None], *args: Any) -> tuple[Any, Any]:
        results = [op(*(_select(a, d, i) for a, d in zip(args, in_dims))) for i in range(info.batch_size)]
        if num_outputs is None:
            return torch.stack(results), 0
        stacked = tuple(torch.stack([r[k] for r in results]) for k in range(num_outputs))
        return stacked, (0,) * num_outputs

    torch.library.register_vmap(op, rule)
