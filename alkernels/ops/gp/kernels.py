"""Stationary covariance functions of the GP ops, in plain torch (no gpytorch).

Each kernel is ``k(x, x') = s^2 * g(r)`` with ``r = || (x - x') / l ||`` (one lengthscale ``l``
or one per input dimension, ARD):

- ``matern12``: ``g = exp(-r)`` (the exponential kernel of protocol B);
- ``matern32``: ``g = (1 + sqrt(3) r) exp(-sqrt(3) r)``;
- ``matern52``: ``g = (1 + sqrt(5) r + 5 r^2 / 3) exp(-sqrt(5) r)``;
- ``rbf``: ``g = exp(-r^2 / 2)``.

These are gpytorch's ``ScaleKernel(MaternKernel(nu))`` / ``ScaleKernel(RBFKernel())``
definitions, so hyper-parameters fitted with gpytorch carry over unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

#: Kernel names, the default first.
KERNELS: tuple[str, ...] = ("matern12", "matern32", "matern52", "rbf")
#: Squared distances under this many machine epsilons of ``|a|^2 + |b|^2`` are taken as zero.
ROUNDING_FLOOR = 16.0


def check_kernel(name: str) -> str:
    """``name`` if it is a known kernel, else ValueError listing the known ones."""
    if name not in KERNELS:
        raise ValueError(f"unknown kernel {name!r}; expected one of {', '.join(KERNELS)}")
    return name


@dataclass(frozen=True)
class GPParams:
    """Fixed hyper-parameters of a GP with a constant prior mean.

    Attributes:
        kernel: one of :data:`KERNELS`.
        lengthscale: float64 [1] (isotropic) or [d] (ARD) lengthscales, on the CPU.
        outputscale: ``s^2``, the prior variance of the latent function.
        noise: observation-noise variance ``sigma^2`` added to the training covariance
            (include any jitter here).
        mean: the constant prior mean.
    """

    kernel: str
    lengthscale: torch.Tensor
    outputscale: float
    noise: float
    mean: float = 0.0

    def __post_init__(self) -> None:
        check_kernel(self.kernel)
        ls = torch.as_tensor(self.lengthscale, dtype=torch.float64).detach().cpu().reshape(-1)
        object.__setattr__(self, "lengthscale", ls)
        if ls.numel() == 0 or not bool(torch.all(ls > 0)) or not bool(torch.all(torch.isfinite(ls))):
            raise ValueError(f"lengthscales must be finite and positive, got {ls.tolist()}")
        for name in ("outputscale", "noise", "mean"):
            value = float(getattr(self, name))
            object.__setattr__(self, name, value)
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value}")
        if self.outputscale <= 0:
            raise ValueError(f"outputscale must be positive, got {self.outputscale}")
        if self.noise < 0:
            raise ValueError(f"noise must be >= 0, got {self.noise}")

    def with_noise(self, noise: float) -> "GPParams":
        """A copy with another noise variance."""
        return replace(self, noise=noise)

    def check_dim(self, d: int) -> None:
        """ValueError unless the lengthscales fit inputs of width ``d``."""
        if self.lengthscale.numel() not in (1, d):
            raise ValueError(f"{self.lengthscale.numel()} lengthscales for inputs of width {d}")

    def to_dict(self) -> dict:
        """JSON-serialisable form (see :meth:`from_dict`)."""
        return {
            "kernel": self.kernel,
            "lengthscale": self.lengthscale.tolist(),
            "outputscale": self.outputscale,
            "noise": self.noise,
            "mean": self.mean,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "GPParams":
        return cls(
            d["kernel"],
            torch.tensor(d["lengthscale"], dtype=torch.float64),
            d["outputscale"],
            d["noise"],
            d.get("mean", 0.0),
        )


def scaled(params: GPParams, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x / l, |x / l|^2)``: the inputs of :func:`covariance_scaled`, [n, d] and [n]; worth
    keeping for a point set that is used again and again (a pool)."""
    params.check_dim(x.shape[1])
    a = x / params.lengthscale.to(dtype=x.dtype, device=x.device)
    return a, (a * a).sum(1)


def _shape(kernel: str, sq: torch.Tensor) -> torch.Tensor:
    """g(r) from squared scaled distances ``sq`` (in place where possible)."""
    if kernel == "rbf":
        return sq.mul_(-0.5).exp_()
    r = sq.sqrt_()
    if kernel == "matern12":
        return r.neg_().exp_()
    if kernel == "matern32":
        r.mul_(math.sqrt(3.0))
        return (r + 1.0).mul_(r.neg().exp_())
    # matern52
    poly = 1.0 + math.sqrt(5.0) * r + (5.0 / 3.0) * r * r
    return poly.mul_(r.mul_(-math.sqrt(5.0)).exp_())


def covariance_scaled(
    params: GPParams, a: torch.Tensor, a_sq: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor, *, same: bool = False
) -> torch.Tensor:
    """:func:`covariance` from the outputs of :func:`scaled` for both point sets."""
    norms = a_sq[:, None] + b_sq[None, :]
    sq = torch.addmm(norms, a, b.T, alpha=-2.0)
    # Below this the matrix-product form cannot tell a distance from zero: such pairs are the
    # same point (so K(x, X) holds exactly s^2 where x is in X, as the factor does).
    sq.masked_fill_(sq <= norms.mul_(ROUNDING_FLOOR * torch.finfo(sq.dtype).eps), 0.0)
    if same:
        sq.fill_diagonal_(0.0)
    return _shape(params.kernel, sq).mul_(params.outputscale)


def covariance(params: GPParams, x1: torch.Tensor, x2: torch.Tensor, *, same: bool = False) -> torch.Tensor:
    """The prior covariance ``K(x1, x2)``.

    Args:
        params: hyper-parameters.
        x1: [n1, d]; x2: [n2, d], same dtype and device (float32 or float64).
        same: ``x1`` and ``x2`` are the same points in the same order: the diagonal distance is
            set to exactly zero.

    Returns:
        [n1, n2] in the inputs' dtype. Squared scaled distances come from
        ``|a|^2 + |b|^2 - 2 a.b``; values below ``ROUNDING_FLOOR * eps * (|a|^2 + |b|^2)``, the
        rounding floor of that form, count as zero. Center inputs with a large common offset.
    """
    return covariance_scaled(params, *scaled(params, x1), *scaled(params, x2), same=same)


def prior_variance(params: GPParams, x: torch.Tensor) -> torch.Tensor:
    """``k(x, x)`` for each row of ``x`` [n, d]: the constant ``s^2``, shape [n]."""
    return torch.full((x.shape[0],), params.outputscale, dtype=x.dtype, device=x.device)
