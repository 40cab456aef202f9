"""Epochs per round: the paper's fixed schedule, or a compute-matched one from an epoch budget.

The training cost of an AL run is the sum over rounds of (labelled structures x epochs), counted
here in *sample-epochs* (one structure seen once in training). With a fixed ``epochs`` per round
and the paper's 10% chunks that is ``5.5 x epochs x n_train``: the run costs 5.5 times the
standard (full-data) run of the same epochs, and most of it is spent in the late rounds.

``epoch_budget = E`` fixes the total instead: ``E x n_train`` sample-epochs, what the standard run
of ``E`` epochs costs, spread evenly over the rounds. Each round gets the same share, ``E x n_train
/ rounds`` sample-epochs, so the small early sets are trained for many epochs and the large late
ones for few (with ``E = 10`` and ten 10% rounds: 10, 5, 3, 3, 2, 2, 1, 1, 1, 1 epochs). Epochs are
whole numbers, at least 1 per round; they are rounded so that the running total follows the
running target ``(r + 1) x E x n_train / rounds`` as closely as possible, which keeps the total
within half an epoch of the last round's labelled set of the budget, except where the 1-epoch
floor forces more (a budget below what one epoch per round costs is rejected).

Weights kept between rounds (the paper's Table 1) suit this schedule: every round continues from
the last. With weights reset, each round starts from the initial weights and gets only its share,
so the late rounds are trained far less than the standard run of ``E`` epochs; a reset study should
keep the fixed schedule or use a larger budget.
"""

from __future__ import annotations

from typing import Sequence


def epoch_schedule(
    counts: Sequence[int], n_train: int, *, epochs: int | None = None, epoch_budget: float | None = None
) -> list[int]:
    """Epochs of each round for the labelled-set sizes ``counts`` (from ``labelled_schedule``).

    Args:
        counts: labelled structures in each round (each at most ``n_train``).
        n_train: the training-set (pool) size; the budget is in epochs over all of it.
        epochs: a fixed number of epochs per round (the paper's schedule).
        epoch_budget: total training in full-training-set epochs (``epoch_budget x n_train``
            sample-epochs); give exactly one of ``epochs`` and ``epoch_budget``.

    Returns:
        ``len(counts)`` positive integers.
    """
    if (epochs is None) == (epoch_budget is None):
        raise ValueError("give exactly one of epochs and epoch_budget")
    if not counts or any(c < 1 or c > n_train for c in counts):
        raise ValueError(f"labelled counts must lie in 1..n_train = {n_train}, got {list(counts)}")
    rounds = len(counts)
    if epochs is not None:
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        return [int(epochs)] * rounds
    floor = sum(counts) / n_train
    if not epoch_budget >= floor:  # also rejects NaN
        raise ValueError(
            f"epoch_budget {epoch_budget} is below {floor:.3g}, what one epoch per round "
            f"already costs (in epochs of the {n_train}-structure training set)"
        )
    total = epoch_budget * n_train
    out: list[int] = []
    spent = 0
    for r, n in enumerate(counts):
        target = (r + 1) * total / rounds
        e = max(1, int((target - spent) / n + 0.5))
        out.append(e)
        spent += e * n
    return out


def sample_epochs(counts: Sequence[int], epochs_per_round: Sequence[int]) -> int:
    """The training cost of a schedule: sum over rounds of labelled count x epochs."""
    if len(counts) != len(epochs_per_round):
        raise ValueError(f"{len(counts)} rounds but {len(epochs_per_round)} epoch counts")
    return int(sum(int(c) * int(e) for c, e in zip(counts, epochs_per_round)))
