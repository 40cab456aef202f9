"""Acquisition scores in plain PyTorch, written straight from the formulas of
``docs/acquisition.md`` (softmax, mean, entropy and top-2 as separate ops).

The readable specification and the oracle of the tests. It materialises [T, N, C] temporaries,
so it costs several times the input's memory.
"""

from __future__ import annotations

import torch

#: BALD differences within ``BALD_ZERO * (1 + H(p_bar))`` (the float32 rounding of the two
#: entropies; identical passes measured up to about 5 eps (1 + H)) are exactly 0 on every backend,
#: so mathematically zero BALD ties and ties go to the lower index.
BALD_ZERO = 16 * torch.finfo(torch.float32).eps


def score_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the scores of ``dtype`` logits: float64 for float64, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def bald_of(h_bar: torch.Tensor, h_exp: torch.Tensor) -> torch.Tensor:
    """BALD ``H(p_bar) - mean_t H(p_t)`` ([N], float32 or float64) with rounding-level values set
    to 0: :data:`BALD_ZERO` in float32, 16 eps of float64 in float64."""
    d = h_bar - h_exp
    zero = BALD_ZERO if d.dtype != torch.float64 else 16 * torch.finfo(torch.float64).eps
    return torch.where(d <= zero * (1.0 + h_bar), torch.zeros_like(d), d)


def _top2(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Largest and second-largest value along the last dim of ``p`` [..., C]."""
    top = torch.topk(p, 2, dim=-1).values
    return top[..., 0], top[..., 1]


def score_all_torch(logits: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Reference scores of ``logits`` [T, N, C] (any float dtype, any device), computed in float64
    for float64 logits and in float32 otherwise.

    Returns:
        (float32 [8, N] in ``SCORE_ORDER`` (float64 for float64 logits), index of the first sample
        with a non-finite logit or -1); such samples get NaN in all eight rows.
    """
    x = logits if logits.dtype == torch.float64 else logits.float()
    finite = torch.isfinite(x).all(dim=2).all(dim=0)  # [N]
    bad = torch.nonzero(~finite)
    first_bad = int(bad[0, 0]) if bad.numel() else -1
    x = torch.where(finite[None, :, None], x, torch.zeros((), dtype=x.dtype, device=x.device))
    p = torch.softmax(x, dim=-1)  # p_t      [T, N, C]
    p_bar = p.mean(dim=0)  # p_bar    [N, C]
    h_bar = torch.special.entr(p_bar).sum(-1)  # H(p_bar) [N]
    h_t = torch.special.entr(p).sum(-1)  # H(p_t)   [T, N]
    p1, p2 = _top2(p_bar)
    pt1, pt2 = _top2(p)
    scores = torch.stack(
        [
            h_bar,
            1.0 - p1,
            -(p1 - p2),
            h_bar,
            h_t.mean(0),
            bald_of(h_bar, h_t.mean(0)),
            1.0 - pt1.mean(0),
            -(pt1 - pt2).mean(0),
        ]
    )
    scores[:, ~finite] = float("nan")
    return scores, first_bad


def topk_torch(scores: torch.Tensor, k: int, exclude: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Top-k of ``scores`` [N] over entries that are not NaN and not ``exclude``d (bool [N]).

    Returns:
        (int64 [k'], float32 [k'] (float64 for float64 scores), number of selectable entries)
        with k' = min(k, selectable): descending, ties to the lower index.
    """
    ok = ~torch.isnan(scores)
    if exclude is not None:
        ok &= ~exclude
    idx = torch.nonzero(ok).flatten()  # ascending, so a stable sort keeps ties in index order
    vals = scores[idx]
    order = torch.sort(vals, descending=True, stable=True).indices[:k]
    return idx[order], vals[order].to(score_dtype(scores.dtype)), int(idx.numel())
