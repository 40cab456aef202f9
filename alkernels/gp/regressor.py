"""``GPRegressor``: GP regression on fixed features for active learning, fitted once with gpytorch
and then conditioned on new labels incrementally (:mod:`alkernels.ops.gp`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np
import torch

from alkernels._deprecation import warn_legacy_keywords
from alkernels.ops.gp.incremental import ExactPosterior, SparsePosterior, exact_memory_bytes
from alkernels.ops.gp.kernels import GPParams, check_kernel


@dataclass
class FitResult:
    """The chosen hyper-parameters and the fit's trace.

    Attributes:
        params: the kept iterate's hyper-parameters (standardised units).
        inducing: its inducing points [m, d] (sparse fit) or None.
        best_iteration: the kept iterate (0 = the initial values).
        history: per evaluated iterate ``{"iteration", "loss", "val_mae"}``; ``loss`` is the
            negative marginal log likelihood per point (with SGPR's trace term), ``val_mae`` the
            validation MAE in standardised units (None without validation data).
    """

    params: GPParams
    inducing: torch.Tensor | None
    best_iteration: int
    history: list[dict] = field(default_factory=list)


#: ``method=`` values: ``auto`` picks ``exact`` while :func:`exact_memory_bytes` fits
#: ``memory_budget``, else ``sparse`` (inducing points, SGPR).
METHODS = ("auto", "exact", "sparse")
#: Default memory allowed to the exact posterior before ``auto`` switches to ``sparse``.
DEFAULT_MEMORY_BUDGET = 8 * 2**30


@dataclass(frozen=True)
class GPKernelConfig:
    """The GP's covariance and noise model.

    Attributes:
        kernel: ``"matern12"`` (default, the exponential kernel of protocol B), ``"matern32"``,
            ``"matern52"`` or ``"rbf"``.
        ard: one lengthscale per feature.
        noise: None learns the observation-noise variance; ``0`` is the noise-free model of the
            study with ``jitter`` on the diagonal; a positive number fixes the noise variance (in
            target units squared).
        jitter: diagonal jitter of ``noise=0`` and of the inducing-point covariance, relative to
            the standardised target variance.
    """

    kernel: str = "matern12"
    ard: bool = False
    noise: float | None = None
    jitter: float = 1e-6

    def __post_init__(self) -> None:
        check_kernel(self.kernel)
        if self.noise is not None and (not math.isfinite(self.noise) or self.noise < 0):
            raise ValueError(f"noise must be None (learned), 0 (noise-free with jitter) or > 0, got {self.noise}")
        if not self.jitter > 0:
            raise ValueError(f"jitter must be > 0, got {self.jitter}")


@dataclass(frozen=True)
class GPFitConfig:
    """The hyper-parameter fit (gpytorch, exact marginal likelihood, Adam).

    Attributes:
        iterations, lr: Adam steps and learning rate.
        val_fraction: without explicit validation data, this fraction of the fit data is held
            out to choose the iterate (the posterior is then conditioned on all of it).
        max_fit_points: the hyper-parameters are fitted on at most this many random points
            (the exact fit costs O(n^3) per Adam step).
    """

    iterations: int = 200
    lr: float = 0.05
    val_fraction: float = 0.2
    max_fit_points: int = 2000

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.iterations < 0 or not self.lr > 0 or self.max_fit_points < 1:
            raise ValueError(f"need iterations >= 0, lr > 0 and max_fit_points >= 1, got {self.iterations}, "
                             f"{self.lr}, {self.max_fit_points}")  # fmt: skip


@dataclass(frozen=True)
class GPSolverConfig:
    """How the posterior is computed and stored.

    Attributes:
        method: ``"exact"``, ``"sparse"`` (SGPR with ``inducing_points`` learned inducing
            points) or ``"auto"`` (exact while its memory, :func:`exact_memory_bytes` of the final
            size, fits ``memory_budget``).
        inducing_points: m for the sparse method (initialised at random training points).
        memory_budget: bytes the exact posterior may use under ``method="auto"``.
        dtype: computation dtype, float64 (default) or float32.
        device: torch device.
        chunk: rows per block when predicting arbitrary points.
        block: :meth:`GPRegressor.fit` conditions on its data in blocks of at most this many
            points, so its temporaries are O(block * (n + p)) rather than O(n * p).
    """

    method: str = "auto"
    inducing_points: int = 512
    memory_budget: int = DEFAULT_MEMORY_BUDGET
    dtype: torch.dtype = torch.float64
    device: str | torch.device = "cpu"
    chunk: int = 4096
    block: int = 1024

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; expected one of {', '.join(METHODS)}")
        if self.dtype not in (torch.float64, torch.float32):
            raise ValueError(f"dtype must be torch.float64 or torch.float32, got {self.dtype}")
        for name in ("inducing_points", "chunk", "block"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class GPConfig:
    """A GP's three settings together (what :class:`~alkernels.gp.GPActiveLearner` takes)."""

    kernel: GPKernelConfig = GPKernelConfig()
    fit: GPFitConfig = GPFitConfig()
    solver: GPSolverConfig = GPSolverConfig()

    @classmethod
    def from_flat(cls, settings: dict) -> GPConfig:
        """The config of flat keyword settings (``{"kernel": "rbf", "iterations": 50, ...}``, the
        form ``config.json`` and the CLI use); ValueError naming an unknown key."""
        parts: dict[str, dict] = {"kernel": {}, "fit": {}, "solver": {}}
        for key, value in settings.items():
            part = _FIELD_PART.get(key)
            if part is None:
                raise ValueError(f"unknown GP setting {key!r}; expected one of {', '.join(sorted(_FIELD_PART))}")
            parts[part][key] = value
        return cls(GPKernelConfig(**parts["kernel"]), GPFitConfig(**parts["fit"]), GPSolverConfig(**parts["solver"]))

    def overrides(self) -> dict:
        """The settings that differ from the defaults, flat (the form ``config.json`` records)."""
        out = {}
        defaults = (GPKernelConfig(), GPFitConfig(), GPSolverConfig())
        for part, default in zip((self.kernel, self.fit, self.solver), defaults):
            for f in fields(part):
                value = getattr(part, f.name)
                if value != getattr(default, f.name):
                    out[f.name] = str(value) if isinstance(value, (torch.dtype, torch.device)) else value
        return out


_PARTS = (("kernel", GPKernelConfig), ("fit", GPFitConfig), ("solver", GPSolverConfig))
_FIELD_PART = {f.name: part for part, cls in _PARTS for f in fields(cls)}


def _matrix(x, dtype: torch.dtype, device: torch.device, what: str) -> torch.Tensor:
    t = torch.as_tensor(x).to(dtype=dtype, device=device)
    if t.dim() != 2:
        raise ValueError(f"{what} must be a 2-D [n, d] array, got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        rows = torch.nonzero(~torch.isfinite(t).all(1))[:5, 0].tolist()
        raise ValueError(f"{what} has non-finite features in rows {rows}")
    return t


def _vector(y, n: int, dtype: torch.dtype, device: torch.device, what: str) -> torch.Tensor:
    t = torch.as_tensor(y).to(dtype=dtype, device=device).reshape(-1)
    if t.numel() != n:
        raise ValueError(f"{what}: {t.numel()} targets for {n} points")
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        rows = torch.nonzero(bad)[:5, 0].tolist()
        raise ValueError(
            f"{what} has {int(bad.sum())} NaN or infinite targets (rows {rows}...); drop those points first"
        )
    return t


class GPRegressor:
    """A Gaussian process on fixed features, for pool-based active learning.

    Hyper-parameters (constant mean, outputscale, lengthscale(s), noise) are fitted ONCE by
    :meth:`fit` with gpytorch, maximising the exact marginal likelihood and keeping the iterate
    with the lowest validation MAE (protocol B). Afterwards the posterior is updated at those
    fixed hyper-parameters: :meth:`condition` adds observations in O(n^2 b + n b p) and keeps
    the posterior mean and variance of a registered pool current in place (``pool_mean``,
    ``pool_var``).

    Targets are standardised with the mean and std of the data given to :meth:`fit`; inputs are
    centred on their mean there (the kernels are stationary, so neither changes the model, only
    the rounding). Everything the user sees is in the original target units.

    Args:
        kernel: a :class:`GPKernelConfig`, or a kernel name for the default one of that kernel.
        fit: the hyper-parameter fit's :class:`GPFitConfig`.
        solver: the posterior's :class:`GPSolverConfig` (method, memory, dtype, device).
        seed: seeds the validation hold-out, the fit subset and the inducing-point start.
        **legacy: the flat keyword arguments of alkernels 0.1 (``ard=``, ``iterations=``,
            ``method=``, ...), mapped onto the three configs with a DeprecationWarning; removed
            in 0.3.
    """

    def __init__(
        self,
        kernel: str | GPKernelConfig = "matern12",
        fit: GPFitConfig | None = None,
        solver: GPSolverConfig | None = None,
        *,
        seed: int = 0,
        **legacy: object,
    ) -> None:
        config = GPConfig(kernel if isinstance(kernel, GPKernelConfig) else GPKernelConfig(kernel),
                          fit or GPFitConfig(), solver or GPSolverConfig())  # fmt: skip
        if legacy:
            warn_legacy_keywords("GPRegressor", legacy, None, "GPKernelConfig, GPFitConfig and GPSolverConfig", depth=1)
            if fit is not None or solver is not None or isinstance(kernel, GPKernelConfig):
                raise TypeError("GPRegressor takes config objects or the old keywords, not both")
            config = GPConfig.from_flat({"kernel": kernel, **legacy})
        if config.solver.method == "sparse" and config.kernel.noise == 0:
            raise ValueError(
                "the sparse (inducing-point) method needs noise > 0: use noise=None (learned) or a positive variance"
            )
        self.config = config
        k, f, v = config.kernel, config.fit, config.solver
        self.kernel = k.kernel
        self.ard, self.noise, self.jitter, self.method = k.ard, k.noise, k.jitter, v.method
        self.inducing_points, self.memory_budget = v.inducing_points, v.memory_budget
        self.iterations, self.lr, self.val_fraction = f.iterations, f.lr, f.val_fraction
        self.max_fit_points, self.dtype, self.device = f.max_fit_points, v.dtype, torch.device(v.device)
        self.chunk, self.block, self.seed = v.chunk, v.block, seed
        self.posterior: ExactPosterior | SparsePosterior | None = None
        self.fit_result = None

    # -- fitting --------------------------------------------------------------------------------
    def choose_method(self, n: int, p: int, d: int) -> str:
        """``"exact"`` or ``"sparse"`` for n observations, p pool points of width d."""
        if self.method != "auto":
            return self.method
        return "exact" if exact_memory_bytes(n, p, d, self.dtype) <= self.memory_budget else "sparse"

    def fit(self, x, y, *, x_val=None, y_val=None, pool=None, capacity: int | None = None) -> "GPRegressor":
        """Fit the hyper-parameters (gpytorch) and condition on all of (x, y).

        Args:
            x: [n, d] features; y: [n] finite targets (NaN raises: drop unlabelled points).
            x_val, y_val: validation data for choosing the iterate; default: a random
                ``val_fraction`` of (x, y).
            pool: [p, d] points whose posterior is kept current (``pool_mean``, ``pool_var``).
            capacity: the number of observations the posterior will reach (reserves memory and
                decides ``method="auto"``); default n.
        """
        from alkernels.gp.fit import fit_hyperparameters

        x = _matrix(x, self.dtype, self.device, "x")
        y = _vector(y, x.shape[0], self.dtype, self.device, "y")
        n, d = x.shape
        if n < 2:
            raise ValueError(f"fitting a GP needs at least 2 labelled points, got {n}")
        pool_t = _matrix(pool, self.dtype, self.device, "pool") if pool is not None else x.new_zeros(0, d)
        if pool_t.shape[1] != d:
            raise ValueError(f"pool has {pool_t.shape[1]} features, x has {d}")
        self.center = x.mean(0)
        self.y_mean = float(y.mean())
        std = float(y.std()) if n > 1 else 1.0
        self.y_std = std if std > 0 and math.isfinite(std) else 1.0
        xs, ys = x - self.center, (y - self.y_mean) / self.y_std
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(n)
        if x_val is not None:
            xv = _matrix(x_val, self.dtype, self.device, "x_val") - self.center
            yv = (_vector(y_val, xv.shape[0], self.dtype, self.device, "y_val") - self.y_mean) / self.y_std
            fit_idx = order
        elif self.val_fraction > 0 and n >= 5:
            n_val = max(1, int(round(self.val_fraction * n)))
            val_idx, fit_idx = order[:n_val], order[n_val:]
            xv, yv = xs[val_idx], ys[val_idx]
        else:
            xv = yv = None
            fit_idx = order
        fit_idx = np.sort(fit_idx[: self.max_fit_points])
        total = max(capacity or n, n)
        self.method_ = self.choose_method(total, pool_t.shape[0], d)
        if self.method_ == "sparse" and self.noise == 0:
            raise ValueError(
                f"{total} observations over a pool of {pool_t.shape[0]} exceed the exact GP's memory "
                f"budget ({self.memory_budget / 2**30:.1f} GiB), and the sparse method needs noise > 0: "
                f"raise memory_budget or use a learned or positive noise"
            )
        inducing = None
        if self.method_ == "sparse":
            m = min(self.inducing_points, len(fit_idx))
            inducing = xs[np.sort(rng.choice(fit_idx, m, replace=False))]
        fixed = None if self.noise is None else (self.jitter if self.noise == 0 else self.noise / self.y_std**2)
        self.fit_result = fit_hyperparameters(
            xs[fit_idx],
            ys[fit_idx],
            kernel=self.kernel,
            ard=self.ard,
            noise=fixed,
            x_val=xv,
            y_val=yv,
            iterations=self.iterations,
            lr=self.lr,
            inducing=inducing,
        )
        self.params_ = self.fit_result.params
        self.inducing_ = self.fit_result.inducing
        self._start(pool_t - self.center, total)
        for start in range(0, n, self.block):
            self.posterior.condition(xs[start : start + self.block], ys[start : start + self.block])
        return self

    def _start(self, pool_centred: torch.Tensor, capacity: int) -> None:
        if self.method_ == "exact":
            self.posterior = ExactPosterior(self.params_, pool_centred, capacity=capacity)
        else:
            self.posterior = SparsePosterior(self.params_, self.inducing_, pool_centred, jitter=self.jitter)

    def _check_fitted(self) -> ExactPosterior | SparsePosterior:
        if self.posterior is None:
            raise ValueError("the GPRegressor is not fitted: call fit() first")
        return self.posterior

    # -- incremental updates --------------------------------------------------------------------
    def condition(self, x_new, y_new=None, *, pool_index=None) -> torch.Tensor:
        """Add observations at the fitted hyper-parameters (no refit).

        Args:
            x_new: [b, d] features; y_new: [b] targets, or None to fantasise them at the current
                posterior mean (see :meth:`update_targets`).
            pool_index: int64 [b] positions of ``x_new`` in the pool (faster for pool points).

        Returns:
            [b] the posterior means at ``x_new`` before the update (target units).
        """
        post = self._check_fitted()
        x_new = _matrix(x_new, self.dtype, self.device, "x_new")
        ys = None
        if y_new is not None:
            ys = (_vector(y_new, x_new.shape[0], self.dtype, self.device, "y_new") - self.y_mean) / self.y_std
        prior = post.condition(x_new - self.center, ys, pool_index=pool_index)
        return prior * self.y_std + self.y_mean

    def update_targets(self, y_new) -> None:
        """Replace the targets of the last b observations (fantasies by real labels)."""
        post = self._check_fitted()
        y = torch.as_tensor(y_new).reshape(-1)
        post.update_targets((_vector(y, y.numel(), self.dtype, self.device, "y_new") - self.y_mean) / self.y_std)

    # -- predictions ----------------------------------------------------------------------------
    def predict(self, x, *, chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior (mean [q], variance [q]) of the latent function at ``x`` [q, d], in target
        units (variance clamped at 0), memory O(n^2 + chunk * n)."""
        post = self._check_fitted()
        x = _matrix(x, self.dtype, self.device, "x")
        mean, var = post.predict(x - self.center, chunk=chunk or self.chunk)
        return mean * self.y_std + self.y_mean, var.clamp_min(0.0) * self.y_std**2

    @property
    def pool_mean(self) -> torch.Tensor:
        """[p] posterior means of the pool (target units)."""
        return self._check_fitted().pool_mean * self.y_std + self.y_mean

    @property
    def pool_var(self) -> torch.Tensor:
        """[p] latent posterior variances of the pool (target units squared, clamped at 0)."""
        return self._check_fitted().pool_var.clamp_min(0.0) * self.y_std**2

    @property
    def n_observations(self) -> int:
        return self._check_fitted().n

    # -- persistence ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The fitted state (hyper-parameters, scaling, posterior) for :meth:`load_state_dict`."""
        post = self._check_fitted()
        return {
            "method": self.method_,
            "center": self.center.clone(),
            "y_mean": self.y_mean,
            "y_std": self.y_std,
            "params": self.params_.to_dict(),
            "inducing": None if self.inducing_ is None else self.inducing_.clone(),
            "posterior": post.state_dict(),
            "fit": {"best_iteration": self.fit_result.best_iteration, "history": self.fit_result.history},
        }

    def load_state_dict(self, state: dict, pool, *, capacity: int = 256) -> "GPRegressor":
        """Restore :meth:`state_dict` with the same pool [p, d] (raw features)."""
        self.method_ = state["method"]
        self.center = state["center"].to(dtype=self.dtype, device=self.device)
        self.y_mean, self.y_std = state["y_mean"], state["y_std"]
        self.params_ = GPParams.from_dict(state["params"])
        self.inducing_ = state["inducing"]
        pool_c = _matrix(pool, self.dtype, self.device, "pool") - self.center
        if self.method_ == "exact":
            self.posterior = ExactPosterior.from_state(state["posterior"], pool_c, capacity=capacity)
        else:
            self.posterior = SparsePosterior.from_state(state["posterior"], pool_c)
        self.fit_result = FitResult(self.params_, self.inducing_, **state["fit"])
        return self

    def describe(self) -> dict:
        """JSON-serialisable hyper-parameters in target units (for records and reports)."""
        p = self.params_
        return {
            "method": self.method_,
            "kernel": p.kernel,
            "lengthscale": p.lengthscale.tolist()
            if p.lengthscale.numel() <= 8
            else f"{p.lengthscale.numel()} values, median {float(p.lengthscale.median()):.4g}",
            "outputscale": p.outputscale * self.y_std**2,
            "noise": p.noise * self.y_std**2,
            "mean": p.mean * self.y_std + self.y_mean,
            "inducing_points": None if self.inducing_ is None else int(self.inducing_.shape[0]),
            "best_iteration": self.fit_result.best_iteration,
        }
