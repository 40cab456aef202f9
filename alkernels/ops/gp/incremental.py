"""GP posteriors grown by blocks of observations at fixed hyper-parameters, with the posterior
mean and variance of a fixed set of "pool" points kept current in place.

:class:`ExactPosterior` (exact GP). With ``K + noise * I = L L^T`` over the n observations so
far, ``alpha = L^{-1} (y - m)`` and ``V = L^{-1} K(X, X_pool)`` [n, p], b new observations
``X_b`` extend the factor by one block row::

    A   = L^{-1} K(X, X_b)                     [n, b]   (= V[:, j] when X_b are pool points j)
    L22 = chol(K(X_b, X_b) + noise * I - A^T A) [b, b]
    L'  = [[L, 0], [A^T, L22]]
    alpha_b = L22^{-1} (y_b - m - A^T alpha)
    W   = L22^{-1} (K(X_b, X_pool) - A^T V)      [b, p]   (appended to V)
    mean_pool += W^T alpha_b,  var_pool -= sum_rows(W^2)

O(n^2 b) for the factor (no solve at all for pool points, whose ``A`` is a column block of V),
O(n b p) for the pool: no O(n^3) refit. :class:`SparsePosterior` does the same for the
inducing-point (SGPR) posterior with O(m^2 b + m b p) per block.

The oracle of both is :mod:`alkernels.ops.gp.reference`.
"""

from __future__ import annotations

import math

import torch

from alkernels.ops.gp.kernels import GPParams, covariance, covariance_scaled, prior_variance, scaled
from alkernels.ops.gp.reference import cholesky, inducing_cholesky, sparse_features

#: Row-panel height of the blocked forward substitution through the stored factor.
PANEL = 512


def _as_targets(y: torch.Tensor | None, b: int, like: torch.Tensor) -> torch.Tensor | None:
    if y is None:
        return None
    y = torch.as_tensor(y, dtype=like.dtype, device=like.device).reshape(-1)
    if y.numel() != b:
        raise ValueError(f"{b} new points but {y.numel()} targets")
    if not bool(torch.isfinite(y).all()):
        raise ValueError("targets must be finite (drop NaN labels before conditioning)")
    return y


def _check_points(x: torch.Tensor, d: int, like: torch.Tensor, what: str) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.dim() != 2 or x.shape[1] != d:
        raise ValueError(f"{what} must be [b, {d}], got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{what} has non-finite entries")
    return x.to(dtype=like.dtype, device=like.device)


class ExactPosterior:
    """Exact GP posterior at fixed hyper-parameters, conditioned block by block.

    Memory: the factor ``[capacity, capacity]``, ``V`` ``[capacity, p]`` and ``X`` ``[capacity, d]``
    in the pool's dtype; buffers grow geometrically when ``capacity`` is exceeded (give the final
    number of observations to avoid the copies).

    Args:
        params: fixed hyper-parameters.
        x_pool: [p, d] points whose posterior mean and variance are kept current (``pool_mean``,
            ``pool_var``); its dtype (float64 or float32) and device are the computation's.
            ``[0, d]`` tracks nothing.
        capacity: observations to reserve room for.
    """

    def __init__(self, params: GPParams, x_pool: torch.Tensor, *, capacity: int = 256) -> None:
        if x_pool.dim() != 2:
            raise ValueError(f"x_pool must be [p, d], got {tuple(x_pool.shape)}")
        if not x_pool.is_floating_point():
            raise ValueError(f"x_pool must be floating point, got {x_pool.dtype}")
        params.check_dim(x_pool.shape[1])
        self.params = params
        self.x_pool = x_pool
        self._pool_scaled = scaled(params, x_pool)  # reused by every update's K(X_b, X_pool)
        self.n = 0
        self._cap = 0
        kw = dict(dtype=x_pool.dtype, device=x_pool.device)
        self._x = torch.empty(0, x_pool.shape[1], **kw)
        self._y = torch.empty(0, **kw)
        self._low = torch.empty(0, 0, **kw)
        self._alpha = torch.empty(0, **kw)
        self._v = torch.empty(0, x_pool.shape[0], **kw)
        self.pool_mean = torch.full((x_pool.shape[0],), params.mean, **kw)
        self.pool_var = prior_variance(params, x_pool)
        self._reserve(max(int(capacity), 1))

    # -- storage --------------------------------------------------------------------------------
    def _reserve(self, need: int) -> None:
        if need <= self._cap:
            return
        cap = max(need, 2 * self._cap)
        n, kw = self.n, dict(dtype=self.x_pool.dtype, device=self.x_pool.device)
        x = torch.empty(cap, self.x_pool.shape[1], **kw)
        y, alpha = torch.empty(cap, **kw), torch.empty(cap, **kw)
        low = torch.zeros(cap, cap, **kw)
        v = torch.empty(cap, self.x_pool.shape[0], **kw)
        x[:n], y[:n], alpha[:n], v[:n] = self._x[:n], self._y[:n], self._alpha[:n], self._v[:n]
        low[:n, :n] = self._low[:n, :n]
        self._x, self._y, self._alpha, self._low, self._v, self._cap = x, y, alpha, low, v, cap

    @property
    def x_train(self) -> torch.Tensor:
        """[n, d], the conditioned inputs in order (a view)."""
        return self._x[: self.n]

    @property
    def y_train(self) -> torch.Tensor:
        """[n], their targets (fantasised ones included) (a view)."""
        return self._y[: self.n]

    @property
    def factor(self) -> torch.Tensor:
        """[n, n], the lower Cholesky factor of ``K + noise * I`` (a strided view)."""
        return self._low[: self.n, : self.n]

    def solve_lower(self, rhs: torch.Tensor) -> torch.Tensor:
        """``L^{-1} rhs`` for ``rhs`` [n, c], by row panels of :data:`PANEL` (every BLAS call
        on a view the library can use without copying the factor)."""
        x = rhs.clone()
        low = self._low
        for r0 in range(0, self.n, PANEL):
            r1 = min(self.n, r0 + PANEL)
            if r0:
                x[r0:r1].sub_(low[r0:r1, :r0] @ x[:r0])
            x[r0:r1] = torch.linalg.solve_triangular(low[r0:r1, r0:r1], x[r0:r1], upper=False)
        return x

    # -- updates --------------------------------------------------------------------------------
    def condition(
        self, x_new: torch.Tensor, y_new: torch.Tensor | None = None, *, pool_index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Add b observations.

        Args:
            x_new: [b, d] inputs.
            y_new: [b] targets; None fantasises each at the current posterior mean (the factor,
                ``V`` and the variances change; the means do not). Replace fantasies by real
                targets later with :meth:`update_targets`.
            pool_index: when ``x_new`` are pool points, their int64 [b] positions in ``x_pool``:
                the cross term ``A`` is then read from ``V`` instead of solved for (faster, equal
                up to rounding).

        Returns:
            [b] the posterior means at ``x_new`` before the update.
        """
        d = self.x_pool.shape[1]
        x_new = _check_points(x_new, d, self.x_pool, "x_new")
        b, n = x_new.shape[0], self.n
        if b == 0:
            return x_new.new_zeros(0)
        y_new = _as_targets(y_new, b, self.x_pool)
        p = self.params
        if pool_index is not None:
            pool_index = torch.as_tensor(pool_index, dtype=torch.int64, device=self.x_pool.device).reshape(-1)
            if pool_index.numel() != b:
                raise ValueError(f"{b} new points but {pool_index.numel()} pool positions")
            a = self._v[:n, pool_index]
        else:
            a = self.solve_lower(covariance(p, self._x[:n], x_new))
        k_nn = covariance(p, x_new, x_new, same=True)
        k_nn.diagonal().add_(p.noise)
        l22 = cholesky(torch.addmm(k_nn, a.T, a, alpha=-1.0), "the updated training covariance")
        prior = p.mean + a.T @ self._alpha[:n]
        y_use = prior if y_new is None else y_new
        alpha_b = torch.linalg.solve_triangular(l22, (y_use - prior)[:, None], upper=False)[:, 0]
        k_np = covariance_scaled(p, *scaled(p, x_new), *self._pool_scaled)
        w = torch.addmm(k_np, a.T, self._v[:n], alpha=-1.0)
        w = torch.linalg.solve_triangular(l22, w, upper=False)
        self._reserve(n + b)
        self._low[n : n + b, :n] = a.T
        self._low[n : n + b, n : n + b] = l22
        self._x[n : n + b], self._y[n : n + b], self._alpha[n : n + b] = x_new, y_use, alpha_b
        self._v[n : n + b] = w
        if y_new is not None:
            self.pool_mean.addmv_(w.T, alpha_b)
        self.pool_var.sub_((w * w).sum(0))
        self.n = n + b
        return prior

    def update_targets(self, y_new: torch.Tensor) -> None:
        """Replace the targets of the last b observations (e.g. fantasies by the real labels):
        their ``alpha`` and the pool means change, the factor and variances do not. O(n b + b p)."""
        b = int(torch.as_tensor(y_new).numel())
        if b > self.n:
            raise ValueError(f"{b} targets but only {self.n} observations")
        y_new = _as_targets(y_new, b, self.x_pool)
        s, n = self.n - b, self.n
        rhs = y_new - self.params.mean - self._low[s:n, :s] @ self._alpha[:s]
        alpha_b = torch.linalg.solve_triangular(self._low[s:n, s:n], rhs[:, None], upper=False)[:, 0]
        self.pool_mean.addmv_(self._v[s:n].T, alpha_b - self._alpha[s:n])
        self._alpha[s:n], self._y[s:n] = alpha_b, y_new

    # -- queries --------------------------------------------------------------------------------
    def predict(self, x: torch.Tensor, *, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior (mean [q], latent variance [q]) at ``x`` [q, d]; memory O(n * chunk)."""
        x = _check_points(x, self.x_pool.shape[1], self.x_pool, "x")
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        mean = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
        var = torch.empty_like(mean)
        for s in range(0, x.shape[0], chunk):
            xc = x[s : s + chunk]
            v = self.solve_lower(covariance(self.params, self._x[: self.n], xc))
            mean[s : s + chunk] = self.params.mean + v.T @ self._alpha[: self.n]
            var[s : s + chunk] = prior_variance(self.params, xc) - (v * v).sum(0)
        return mean, var

    # -- persistence ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue bit for bit (with the same ``x_pool``)."""
        n = self.n
        return {
            "params": self.params.to_dict(),
            "x": self._x[:n].clone(),
            "y": self._y[:n].clone(),
            "low": self._low[:n, :n].clone(),
            "alpha": self._alpha[:n].clone(),
            "v": self._v[:n].clone(),
            "pool_mean": self.pool_mean.clone(),
            "pool_var": self.pool_var.clone(),
        }

    @classmethod
    def from_state(cls, state: dict, x_pool: torch.Tensor, *, capacity: int = 256) -> "ExactPosterior":
        """Rebuild from :meth:`state_dict` and the same pool."""
        post = cls(GPParams.from_dict(state["params"]), x_pool, capacity=max(capacity, state["x"].shape[0]))
        n = state["x"].shape[0]
        if state["v"].shape != (n, x_pool.shape[0]):
            raise ValueError(f"state was saved for a pool of {state['v'].shape[1]} points, not {x_pool.shape[0]}")
        post._x[:n], post._y[:n], post._alpha[:n] = state["x"], state["y"], state["alpha"]
        post._low[:n, :n], post._v[:n] = state["low"], state["v"]
        post.pool_mean, post.pool_var, post.n = state["pool_mean"].clone(), state["pool_var"].clone(), n
        return post


class SparsePosterior:
    """Inducing-point (SGPR / DTC) posterior at fixed hyper-parameters and inducing points,
    conditioned block by block.

    Bayesian linear regression on ``phi(x) = L_uu^{-1} K(Z, x)`` ([m]); the state is
    ``P^{-1}`` ([m, m], ``P = I + Phi Phi^T / noise``), ``s = Phi (y - m)`` and
    ``G = P^{-1} Phi_pool`` ([m, p]). A block of b observations is a rank-b Woodbury update,
    ``S = noise * I + phi_b^T P^{-1} phi_b`` ([b, b]), ``U = phi_b^T G``::

        var_pool -= diag(U^T S^{-1} U),  G -= P^{-1} phi_b S^{-1} U,  P^{-1} -= ...

    O(m^2 b + m b p) per block, memory O(m^2 + m p): independent of the number of observations.

    Args:
        params: hyper-parameters (``noise`` > 0).
        inducing: Z [m, d] (same dtype and device as ``x_pool``).
        x_pool: [p, d] points whose posterior is kept current.
        jitter: added to ``K(Z, Z)``'s diagonal, relative to the outputscale.
    """

    def __init__(self, params: GPParams, inducing: torch.Tensor, x_pool: torch.Tensor, *, jitter: float = 1e-6) -> None:
        if params.noise <= 0:
            raise ValueError("the inducing-point posterior needs noise > 0")
        if inducing.dim() != 2 or inducing.shape[1] != x_pool.shape[1]:
            raise ValueError(f"inducing points must be [m, {x_pool.shape[1]}], got {tuple(inducing.shape)}")
        params.check_dim(x_pool.shape[1])
        self.params, self.jitter = params, float(jitter)
        self.inducing = inducing.to(dtype=x_pool.dtype, device=x_pool.device)
        self.x_pool = x_pool
        self._low_uu = inducing_cholesky(params, self.inducing, self.jitter)
        m = self.inducing.shape[0]
        kw = dict(dtype=x_pool.dtype, device=x_pool.device)
        self._pinv = torch.eye(m, **kw)
        self._s = torch.zeros(m, **kw)
        self._g = sparse_features(params, self.inducing, x_pool, self._low_uu)  # P = I: G = Phi_pool
        self.pool_var = prior_variance(params, x_pool)
        self.pool_mean = torch.full((x_pool.shape[0],), params.mean, **kw)
        self._x: list[torch.Tensor] = []
        self._y: list[torch.Tensor] = []
        self.n = 0

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``phi(x)`` [m, q] for ``x`` [q, d]."""
        return sparse_features(self.params, self.inducing, x, self._low_uu)

    @property
    def x_train(self) -> torch.Tensor:
        return torch.cat(self._x) if self._x else self.x_pool.new_zeros(0, self.x_pool.shape[1])

    @property
    def y_train(self) -> torch.Tensor:
        return torch.cat(self._y) if self._y else self.x_pool.new_zeros(0)

    def _refresh_mean(self) -> None:
        self.pool_mean = self.params.mean + self._g.T @ self._s / self.params.noise

    def condition(
        self, x_new: torch.Tensor, y_new: torch.Tensor | None = None, *, pool_index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Add b observations (see :meth:`ExactPosterior.condition`; ``pool_index`` is accepted
        for the same call signature and not needed). Returns the prior means at ``x_new``."""
        x_new = _check_points(x_new, self.x_pool.shape[1], self.x_pool, "x_new")
        b = x_new.shape[0]
        if b == 0:
            return x_new.new_zeros(0)
        y_new = _as_targets(y_new, b, self.x_pool)
        noise = self.params.noise
        phi = self.features(x_new)  # [m, b]
        pphi = self._pinv @ phi  # [m, b]
        prior = self.params.mean + pphi.T @ self._s / noise
        s_mat = phi.T @ pphi
        s_mat.diagonal().add_(noise)
        low_s = cholesky(s_mat, "the inducing-point update")
        u = phi.T @ self._g  # [b, p]
        t = torch.linalg.solve_triangular(low_s, u, upper=False)
        self.pool_var.sub_((t * t).sum(0))
        self._g.sub_(pphi @ torch.cholesky_solve(u, low_s))
        self._pinv.sub_(pphi @ torch.cholesky_solve(pphi.T, low_s))
        y_use = prior if y_new is None else y_new
        self._s.add_(phi @ (y_use - self.params.mean))
        self._refresh_mean()
        self._x.append(x_new)
        self._y.append(y_use)
        self.n += b
        return prior

    def update_targets(self, y_new: torch.Tensor) -> None:
        """Replace the targets of the last b observations; O(m b + m p)."""
        b = int(torch.as_tensor(y_new).numel())
        if b > self.n:
            raise ValueError(f"{b} targets but only {self.n} observations")
        y_new = _as_targets(y_new, b, self.x_pool)
        x_all, y_all = self.x_train, self.y_train
        self._s.add_(self.features(x_all[-b:]) @ (y_new - y_all[-b:]))
        y_all[-b:] = y_new
        self._x, self._y = [x_all], [y_all]
        self._refresh_mean()

    def predict(self, x: torch.Tensor, *, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior (mean [q], latent variance [q]) at ``x`` [q, d]."""
        x = _check_points(x, self.x_pool.shape[1], self.x_pool, "x")
        w = self._pinv @ self._s / self.params.noise
        mean = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
        var = torch.empty_like(mean)
        for s in range(0, x.shape[0], chunk):
            phi = self.features(x[s : s + chunk])
            mean[s : s + chunk] = self.params.mean + phi.T @ w
            var[s : s + chunk] = (
                prior_variance(self.params, x[s : s + chunk]) - (phi * phi).sum(0) + (phi * (self._pinv @ phi)).sum(0)
            )
        return mean, var

    def state_dict(self) -> dict:
        return {
            "params": self.params.to_dict(),
            "jitter": self.jitter,
            "inducing": self.inducing.clone(),
            "x": self.x_train.clone(),
            "y": self.y_train.clone(),
            "pinv": self._pinv.clone(),
            "s": self._s.clone(),
            "g": self._g.clone(),
            "pool_mean": self.pool_mean.clone(),
            "pool_var": self.pool_var.clone(),
        }

    @classmethod
    def from_state(cls, state: dict, x_pool: torch.Tensor) -> "SparsePosterior":
        post = cls(GPParams.from_dict(state["params"]), state["inducing"], x_pool, jitter=state["jitter"])
        if state["g"].shape[1] != x_pool.shape[0]:
            raise ValueError(f"state was saved for a pool of {state['g'].shape[1]} points, not {x_pool.shape[0]}")
        post._pinv, post._s, post._g = state["pinv"].clone(), state["s"].clone(), state["g"].clone()
        post.pool_mean, post.pool_var = state["pool_mean"].clone(), state["pool_var"].clone()
        post._x, post._y, post.n = [state["x"].clone()], [state["y"].clone()], int(state["x"].shape[0])
        return post


def exact_memory_bytes(n: int, p: int, d: int, dtype: torch.dtype = torch.float64) -> int:
    """Bytes of an :class:`ExactPosterior` with capacity n over p pool points of width d: the
    factor n^2, V n p, the inputs n d, the pool features and their scaled copy 2 p d, and the
    vectors y, alpha (n) and the pool's squared norms, mean and variance (p). An update of b
    points adds O(b (n + p)) temporaries, a predict of c rows about 3 n c."""
    item = torch.finfo(dtype).bits // 8
    return item * (n * n + n * p + n * d + 2 * p * d + 2 * n + 3 * p)


def exact_max_n(budget_bytes: int, p: int, d: int, dtype: torch.dtype = torch.float64) -> int:
    """The largest n with :func:`exact_memory_bytes` (n, p, d) <= ``budget_bytes``."""
    item = torch.finfo(dtype).bits // 8
    # n^2 + (p + d + 2) n + (2 d + 3) p - budget/item <= 0
    c = budget_bytes / item - (2 * d + 3) * p
    bq = p + d + 2
    n = int((-bq + math.sqrt(bq * bq + 4 * c)) / 2) if c > 0 else 0
    while n > 0 and exact_memory_bytes(n, p, d, dtype) > budget_bytes:
        n -= 1
    while exact_memory_bytes(n + 1, p, d, dtype) <= budget_bytes:
        n += 1
    return n
