"""GP posteriors refitted from scratch: the specification and test oracle of the incremental ops.

Both functions solve the whole problem again on every call (a Cholesky factorisation of the
training covariance, O(n^3) for the exact GP), exactly what an AL loop that refits after every
query does.
"""

from __future__ import annotations

import torch

from alkernels.ops.gp.kernels import GPParams, covariance, prior_variance


def cholesky(matrix: torch.Tensor, what: str) -> torch.Tensor:
    """Lower Cholesky factor of a symmetric positive-definite ``matrix``; ValueError naming
    ``what`` when it is not positive definite in its dtype."""
    factor, info = torch.linalg.cholesky_ex(matrix)
    if bool((info != 0).any()):
        raise ValueError(
            f"{what} is not positive definite in {matrix.dtype} (leading minor "
            f"{int(info.max())} failed): raise the noise or the jitter, or use float64"
        )
    return factor


def _chunks(n: int, chunk: int):
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    for start in range(0, n, chunk):
        yield slice(start, min(n, start + chunk))


def exact_posterior(
    params: GPParams, x_train: torch.Tensor, y_train: torch.Tensor, x_query: torch.Tensor, *, chunk: int = 4096
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact GP posterior of the latent function at ``x_query``.

    ``K = K(X, X) + noise * I = L L^T``, ``alpha = L^{-1} (y - m)``; per query chunk
    ``V = L^{-1} K(X, x*)``, mean ``m + V^T alpha`` and variance ``s^2 - sum(V^2)``.

    Args:
        params: hyper-parameters.
        x_train: [n, d]; y_train: [n]; x_query: [q, d]; one floating dtype and device.
        chunk: query rows per block (memory O(n^2 + chunk * n)).

    Returns:
        (mean [q], variance [q]) in the inputs' dtype; the variance is of the latent function
        (add ``params.noise`` for a new observation) and is not clamped at zero.
    """
    n = x_train.shape[0]
    k = covariance(params, x_train, x_train, same=True)
    k.diagonal().add_(params.noise)
    low = cholesky(k, "the training covariance")
    alpha = torch.linalg.solve_triangular(low, (y_train - params.mean)[:, None], upper=False)[:, 0]
    mean = torch.empty(x_query.shape[0], dtype=x_query.dtype, device=x_query.device)
    var = torch.empty_like(mean)
    for s in _chunks(x_query.shape[0], chunk):
        v = (
            torch.linalg.solve_triangular(low, covariance(params, x_train, x_query[s]), upper=False)
            if n
            else x_query.new_zeros(0, s.stop - s.start)
        )
        mean[s] = params.mean + v.T @ alpha
        var[s] = prior_variance(params, x_query[s]) - (v * v).sum(0)
    return mean, var


def sparse_features(params: GPParams, inducing: torch.Tensor, x: torch.Tensor, low_uu: torch.Tensor) -> torch.Tensor:
    """``phi(x) = L_uu^{-1} K(Z, x)``, [m, n]: the whitened inducing-point features of ``x``."""
    return torch.linalg.solve_triangular(low_uu, covariance(params, inducing, x), upper=False)


def inducing_cholesky(params: GPParams, inducing: torch.Tensor, jitter: float) -> torch.Tensor:
    """Lower Cholesky factor of ``K(Z, Z) + jitter * s^2 * I``."""
    kuu = covariance(params, inducing, inducing, same=True)
    kuu.diagonal().add_(jitter * params.outputscale)
    return cholesky(kuu, "the inducing-point covariance K(Z, Z)")


def sparse_posterior(
    params: GPParams,
    inducing: torch.Tensor,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_query: torch.Tensor,
    *,
    jitter: float = 1e-6,
    chunk: int = 4096,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inducing-point (SGPR / DTC) posterior of the latent function at ``x_query``.

    With ``phi(x) = L_uu^{-1} K(Z, x)`` the model is Bayesian linear regression on ``phi`` with a
    unit Gaussian prior on the weights: ``P = I + Phi Phi^T / noise`` ([m, m]),
    mean ``m + phi^T P^{-1} Phi (y - m) / noise``, variance
    ``s^2 - |phi|^2 + phi^T P^{-1} phi`` (Titsias' SGPR predictive, equal to DTC's).

    Args:
        params: hyper-parameters (``noise`` must be > 0).
        inducing: Z [m, d]; x_train [n, d]; y_train [n]; x_query [q, d].
        jitter: added to ``K(Z, Z)``'s diagonal, relative to ``s^2``.
        chunk: rows per block of training and query points.

    Returns:
        (mean [q], variance [q]), latent, not clamped.
    """
    if params.noise <= 0:
        raise ValueError("the inducing-point posterior needs noise > 0")
    low_uu = inducing_cholesky(params, inducing, jitter)
    m = inducing.shape[0]
    prec = torch.eye(m, dtype=inducing.dtype, device=inducing.device)
    rhs = inducing.new_zeros(m)
    for s in _chunks(x_train.shape[0], chunk):
        phi = sparse_features(params, inducing, x_train[s], low_uu)
        prec += phi @ phi.T / params.noise
        rhs += phi @ (y_train[s] - params.mean) / params.noise
    low_p = cholesky(prec, "the inducing-point posterior precision")
    w = torch.cholesky_solve(rhs[:, None], low_p)[:, 0]
    mean = torch.empty(x_query.shape[0], dtype=x_query.dtype, device=x_query.device)
    var = torch.empty_like(mean)
    for s in _chunks(x_query.shape[0], chunk):
        phi = sparse_features(params, inducing, x_query[s], low_uu)
        t = torch.linalg.solve_triangular(low_p, phi, upper=False)
        mean[s] = params.mean + phi.T @ w
        var[s] = prior_variance(params, x_query[s]) - (phi * phi).sum(0) + (t * t).sum(0)
    return mean, var
