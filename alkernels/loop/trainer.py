"""The one place where the package takes optimiser steps.

Every training loop in alkernels (the active-learning loop in one process or data-parallel,
transfer fits, the GP feature encoder and the GP hyper-parameters, the scale search of the
space-group study, and :class:`alkernels.loop.step.TrainStep` with its CUDA graphs) trains
through a :class:`Trainer`: ``step(loss)`` zeroes the gradients, back-propagates and steps the
optimiser (and its schedule); ``epoch(batches, loss_fn)`` does that for every batch of an epoch.
What differs between the loops (where batches come from, how a batch becomes a loss, what is
recorded) stays with them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

_B = TypeVar("_B")


@dataclass(frozen=True)
class EpochResult:
    """What :meth:`Trainer.epoch` saw: the mean loss of its steps (0.0 without one), their count
    and whether ``max_steps`` stopped it early."""

    mean_loss: float
    steps: int
    stopped: bool


class Trainer:
    """Optimiser steps for any model and loss.

    Args:
        optimizer: the optimiser over the trained parameters.
        scheduler: a learning-rate schedule stepped after every optimiser step, or None.
        set_to_none: free the gradients between steps (True), or zero them in place (False: a
            CUDA graph replays into fixed gradient buffers).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        *,
        set_to_none: bool = True,
    ) -> None:
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.set_to_none = set_to_none

    @classmethod
    def adamw(cls, params: Iterable[torch.nn.Parameter], *, lr: float, weight_decay: float = 0.0,
              set_to_none: bool = True, **options: Any) -> Trainer:  # fmt: skip
        """A trainer with ``torch.optim.AdamW(params, lr, weight_decay, **options)`` (the
        optimiser of every network the package trains; ``options`` such as ``fused`` and
        ``capturable`` go to AdamW).

        Unless ``options`` ask for ``fused=True`` or set ``foreach``, the multi-tensor implementation
        (``foreach=True``) runs on every device. PyTorch's default on the CPU is the per-parameter
        loop; the two give bit-identical parameters (the same elementwise kernels, batched into
        fewer calls), and the multi-tensor step of the paper's classifier (110 tensors) is about
        1.3x faster on two cores (``benchmarks/profile_training.py``). ``fused=True`` is faster
        still but orders the update's arithmetic differently, so its parameters differ in the
        last bits and the differences grow over a run: opt-in."""
        if not options.get("fused") and options.get("foreach") is None:
            options["foreach"] = True
        optimizer = torch.optim.AdamW(list(params), lr=lr, weight_decay=weight_decay, **options)
        return cls(optimizer, set_to_none=set_to_none)

    def step(self, loss: torch.Tensor) -> torch.Tensor:
        """Zero the gradients, back-propagate ``loss`` (a 0-d tensor) and step; returns it detached."""
        self.optimizer.zero_grad(set_to_none=self.set_to_none)
        loss.backward()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return loss.detach()

    def epoch(
        self,
        batches: Iterable[_B],
        loss_fn: Callable[[_B], torch.Tensor],
        *,
        on_step: Callable[[torch.Tensor], None] | None = None,
        max_steps: int | None = None,
    ) -> EpochResult:
        """One step per batch: ``loss_fn(batch)`` then :meth:`step`.

        Args:
            batches: the epoch's batches, in order.
            loss_fn: a batch's loss (a 0-d tensor with a graph).
            on_step: called with each step's detached loss (a progress bar, say).
            max_steps: stop after this many steps (None: the whole epoch).
        """
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or None, got {max_steps}")
        total, steps = 0.0, 0
        for batch in batches:
            loss = self.step(loss_fn(batch))
            total, steps = total + float(loss), steps + 1
            if on_step is not None:
                on_step(loss)
            if max_steps is not None and steps >= max_steps:
                return EpochResult(total / steps, steps, True)
        return EpochResult(total / max(steps, 1), steps, False)

    def state_dict(self) -> dict:
        """The optimiser's (and schedule's) state, for checkpoints."""
        state = {"optimizer": self.optimizer.state_dict()}
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])
