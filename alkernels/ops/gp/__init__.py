"""Gaussian-process posteriors for regression active learning (torch only).

- :mod:`~alkernels.ops.gp.kernels`: Matern-1/2, 3/2, 5/2 and RBF covariances with fixed
  hyper-parameters (:class:`GPParams`), gpytorch's definitions.
- :mod:`~alkernels.ops.gp.reference`: the posterior refitted from scratch (exact and
  inducing-point), the specification and test oracle.
- :mod:`~alkernels.ops.gp.incremental`: :class:`ExactPosterior` and :class:`SparsePosterior`,
  conditioned block by block with the pool's posterior mean and variance updated in place.

All of it runs on torch's BLAS/LAPACK (CPU or CUDA); there is no C++ or Triton kernel in this
family (see ``docs/gp.md`` for the measurements behind that choice). The model around it, with
the gpytorch hyper-parameter fit, is :class:`alkernels.gp.GPRegressor`.
"""

from __future__ import annotations

from alkernels.ops.gp.incremental import ExactPosterior, SparsePosterior, exact_max_n, exact_memory_bytes
from alkernels.ops.gp.kernels import KERNELS, GPParams, check_kernel, covariance, prior_variance
from alkernels.ops.gp.reference import exact_posterior, sparse_posterior

__all__ = [
    "KERNELS",
    "ExactPosterior",
    "GPParams",
    "SparsePosterior",
    "check_kernel",
    "covariance",
    "exact_max_n",
    "exact_memory_bytes",
    "exact_posterior",
    "prior_variance",
    "sparse_posterior",
]
