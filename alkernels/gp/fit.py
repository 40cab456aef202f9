"""Hyper-parameter fit with gpytorch: maximise the marginal likelihood with Adam and keep the
iterate with the lowest validation MAE (protocol B's rule)."""

from __future__ import annotations

import math

import torch

from alkernels._extras import missing_extra
from alkernels.gp.regressor import FitResult
from alkernels.loop.trainer import Trainer
from alkernels.ops.gp.kernels import GPParams, check_kernel

try:
    import gpytorch
except ImportError as err:
    raise missing_extra("gp", __name__, err) from err

#: Lower bound of a learned noise variance (in units of the standardised target's variance).
MIN_NOISE = 1e-6
#: gpytorch's Matern smoothness per kernel name.
_NU = {"matern12": 0.5, "matern32": 1.5, "matern52": 2.5}


def base_kernel(kernel: str, ard_dims: int | None) -> "gpytorch.kernels.Kernel":
    """The gpytorch kernel of a kernel name (without the outputscale)."""
    check_kernel(kernel)
    if kernel == "rbf":
        return gpytorch.kernels.RBFKernel(ard_num_dims=ard_dims)
    return gpytorch.kernels.MaternKernel(nu=_NU[kernel], ard_num_dims=ard_dims)


class _GPModel(gpytorch.models.ExactGP):
    """Constant mean + ``ScaleKernel(base)``, optionally behind an ``InducingPointKernel``."""

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, likelihood, kernel: str, ard: bool, inducing: torch.Tensor | None
    ) -> None:
        super().__init__(x, y, likelihood)
        self.mean_module = gpytorch.means.ConstantMean()
        self.scaled = gpytorch.kernels.ScaleKernel(base_kernel(kernel, x.shape[1] if ard else None))
        self.covar_module = (
            self.scaled
            if inducing is None
            else gpytorch.kernels.InducingPointKernel(
                self.scaled, inducing_points=inducing.clone(), likelihood=likelihood
            )
        )

    def forward(self, x: torch.Tensor):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def median_distance(x: torch.Tensor, max_points: int = 1000) -> float:
    """Median pairwise Euclidean distance of (the first ``max_points`` rows of) ``x`` [n, d]."""
    sub = x[:max_points]
    if sub.shape[0] < 2:
        return 1.0
    dist = torch.pdist(sub)
    med = float(dist.median()) if dist.numel() else 1.0
    return med if math.isfinite(med) and med > 0 else 1.0


def _params(model: _GPModel, likelihood, kernel: str, fixed_noise: float | None) -> GPParams:
    ls = model.scaled.base_kernel.lengthscale.detach().reshape(-1).double().cpu()
    noise = fixed_noise if fixed_noise is not None else float(likelihood.noise.detach().reshape(-1)[0])
    return GPParams(
        kernel, ls, float(model.scaled.outputscale.detach()), noise, float(model.mean_module.constant.detach())
    )


def fit_hyperparameters(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    kernel: str = "matern12",
    ard: bool = False,
    noise: float | None = None,
    x_val: torch.Tensor | None = None,
    y_val: torch.Tensor | None = None,
    iterations: int = 200,
    lr: float = 0.05,
    inducing: torch.Tensor | None = None,
    eval_every: int = 1,
) -> FitResult:
    """Fit a GP's hyper-parameters on (x, y) by Adam on the negative marginal log likelihood.

    Args:
        x: [n, d] training inputs (centred); y: [n] standardised targets; same dtype.
        kernel: a name of :data:`alkernels.ops.gp.KERNELS`.
        ard: one lengthscale per input dimension.
        noise: None learns the noise variance (bounded below by :data:`MIN_NOISE`); a number
            fixes it (use a small jitter for the noise-free model of protocol B).
        x_val, y_val: validation data; the iterate with the lowest MAE on it is kept (the last
            one without it).
        iterations: Adam steps; iterates 0..iterations are candidates.
        lr: Adam learning rate.
        inducing: initial inducing points [m, d] for an SGPR fit (learned with the rest), or
            None for the exact GP.
        eval_every: evaluate the validation MAE every this many iterates (and at the last).

    Returns:
        a :class:`FitResult`. Everything runs with Cholesky solves (no CG), so it is
        deterministic.
    """
    if iterations < 0 or eval_every < 1:
        raise ValueError(f"iterations must be >= 0 and eval_every >= 1, got {iterations}, {eval_every}")
    dtype = x.dtype
    if noise is None:
        likelihood = gpytorch.likelihoods.GaussianLikelihood(
            noise_constraint=gpytorch.constraints.GreaterThan(MIN_NOISE)
        )
        likelihood.noise = 0.1
    else:
        likelihood = gpytorch.likelihoods.FixedNoiseGaussianLikelihood(
            noise=torch.full((x.shape[0],), float(noise), dtype=dtype, device=x.device), learn_additional_noise=False
        )
    model = _GPModel(x, y, likelihood, kernel, ard, inducing).to(device=x.device, dtype=dtype)
    likelihood.to(device=x.device, dtype=dtype)
    model.scaled.base_kernel.lengthscale = median_distance(x)  # the median heuristic, per dim for ARD too
    model.scaled.outputscale = 1.0
    model.mean_module.constant.data.fill_(float(y.mean()) if y.numel() else 0.0)
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
    trainer = Trainer(torch.optim.Adam(model.parameters(), lr=lr))
    history: list[dict] = []
    best = (math.inf, None, None, 0)
    validate = x_val is not None and y_val is not None and x_val.shape[0] > 0
    with (
        gpytorch.settings.max_cholesky_size(10**9),
        gpytorch.settings.fast_pred_var(False),
        gpytorch.settings.cholesky_max_tries(6),
    ):
        for it in range(iterations + 1):
            model.train()
            likelihood.train()
            loss = -mll(model(x), y)
            entry = {"iteration": it, "loss": float(loss.detach()), "val_mae": None}
            if validate and (it % eval_every == 0 or it == iterations):
                model.eval()
                with torch.no_grad():
                    pred = model(x_val).mean
                mae = float((pred - y_val).abs().mean())
                entry["val_mae"] = mae
                if mae < best[0]:
                    best = (mae, _params(model, likelihood, kernel, noise), _inducing(model), it)
            history.append(entry)
            if it < iterations:
                trainer.step(loss)
    if best[1] is None:
        best = (math.nan, _params(model, likelihood, kernel, noise), _inducing(model), iterations)
    return FitResult(best[1], best[2], best[3], history)


def _inducing(model: _GPModel) -> torch.Tensor | None:
    cov = model.covar_module
    if isinstance(cov, gpytorch.kernels.InducingPointKernel):
        return cov.inducing_points.detach().clone()
    return None
