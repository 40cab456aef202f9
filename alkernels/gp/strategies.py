"""Query strategies for GP regression: the largest predictive variance, its greedy batch form,
and random selection.

Each strategy picks ``k`` positions of a :class:`~alkernels.gp.GPRegressor`'s pool among
``candidates``. Ties in a score go to the lower pool position, so a query is reproducible.
"""

from __future__ import annotations

import numpy as np
import torch

from alkernels.gp.regressor import GPRegressor


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """int64 [k] positions of the k largest ``scores`` [N] (any float dtype, no cast), highest
    first, ties to the lower position; NaN is never picked."""
    if k > scores.numel():
        raise ValueError(f"cannot pick {k} of {scores.numel()} candidates")
    key = torch.where(torch.isnan(scores), torch.full_like(scores, -torch.inf), scores)
    order = torch.argsort(key, descending=True, stable=True)[:k]
    if bool(torch.isnan(scores[order]).any()):
        raise ValueError(f"fewer than {k} candidates have a finite score")
    return order


class GPStrategy:
    """Interface: ``query(gp, candidates, k, rng) -> int64 [k]`` pool positions.

    Attributes:
        name: registered name.
        fantasises: ``query`` leaves the picks conditioned on fantasised targets; the caller
            must then give the real labels with ``gp.update_targets`` (not ``gp.condition``).
    """

    name = ""
    fantasises = False

    def query(self, gp: GPRegressor, candidates: torch.Tensor, k: int, rng: np.random.Generator) -> torch.Tensor:
        raise NotImplementedError


class VarianceStrategy(GPStrategy):
    """``gp_variance``: the k largest latent posterior variances (plain top-k for k > 1).

    For a Gaussian the predictive entropy ``0.5 ln(2 pi e sigma^2)`` is increasing in
    ``sigma^2``, so this is also the largest-entropy query.
    """

    name = "gp_variance"

    def query(self, gp, candidates, k, rng):
        return candidates[top_k(gp.posterior.pool_var[candidates], k)]


class BatchVarianceStrategy(GPStrategy):
    """``gp_batch_variance``: greedy batch. Each pick is the largest variance after conditioning
    the GP on the previous picks at their predicted means (the variance does not depend on the
    targets), so a batch does not pile onto one uncertain region. Equal to ``gp_variance`` for
    k = 1; each pick costs one incremental update."""

    name = "gp_batch_variance"
    fantasises = True

    def query(self, gp, candidates, k, rng):
        if k > candidates.numel():
            raise ValueError(f"cannot pick {k} of {candidates.numel()} candidates")
        free = torch.ones(candidates.numel(), dtype=torch.bool, device=candidates.device)
        picks = []
        post = gp.posterior
        for _ in range(k):
            scores = torch.where(free, post.pool_var[candidates], torch.full_like(post.pool_var[candidates], torch.nan))
            j = int(top_k(scores, 1)[0])
            free[j] = False
            pos = candidates[j : j + 1]
            post.condition(post.x_pool[pos], None, pool_index=pos)
            picks.append(pos)
        return torch.cat(picks)


class RandomGPStrategy(GPStrategy):
    """``random``: k distinct candidates drawn with the run's NumPy generator."""

    name = "random"

    def query(self, gp, candidates, k, rng):
        if k > candidates.numel():
            raise ValueError(f"cannot pick {k} of {candidates.numel()} candidates")
        chosen = rng.choice(candidates.numel(), size=k, replace=False)
        return candidates[torch.as_tensor(chosen, dtype=torch.int64, device=candidates.device)]


#: Registered GP strategies by name.
GP_STRATEGIES: dict[str, type[GPStrategy]] = {
    cls.name: cls for cls in (VarianceStrategy, BatchVarianceStrategy, RandomGPStrategy)
}


def get_strategy(name: str) -> GPStrategy:
    """A GP strategy by name; ValueError listing the known ones."""
    if name not in GP_STRATEGIES:
        raise ValueError(f"unknown regression strategy {name!r}; expected one of {', '.join(GP_STRATEGIES)}")
    return GP_STRATEGIES[name]()
