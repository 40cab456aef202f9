"""The GP ops (``alkernels.ops.gp``): kernels, the refit reference and the incremental posteriors,
checked against a closed-form GP written here in NumPy and against each other."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alkernels.ops.gp import (
    KERNELS,
    ExactPosterior,
    GPParams,
    SparsePosterior,
    covariance,
    exact_max_n,
    exact_memory_bytes,
    exact_posterior,
    sparse_posterior,
)
from helpers import np_gp

pytestmark = pytest.mark.timeout(120)


def problem(n=60, q=25, d=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n + q, d))
    y = np.sin(2 * x[:, 0]) + 0.5 * x[:, 1] ** 2 + 0.05 * rng.normal(size=n + q)
    return x[:n], y[:n], x[n:], y[n:]


def params(kernel="matern12", ls=(1.3,), s2=0.8, noise=0.05, mean=0.2):
    return GPParams(kernel, torch.tensor(ls, dtype=torch.float64), s2, noise, mean)


T = torch.from_numpy


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("ard", [False, True])
def test_reference_equals_numpy_closed_form(kernel, ard):
    x, y, xq, _ = problem()
    ls = np.array([0.9, 1.4, 2.0, 1.1]) if ard else np.array([1.3])
    p = params(kernel, tuple(ls))
    m_np, v_np = np_gp(kernel, x, y, xq, ls, 0.8, 0.05, 0.2)
    m, v = exact_posterior(p, T(x), T(y), T(xq), chunk=7)
    np.testing.assert_allclose(m.numpy(), m_np, atol=1e-10)
    np.testing.assert_allclose(v.numpy(), v_np, atol=1e-10)
    # the incremental posterior, fed in uneven blocks, and its predict() agree too
    post = ExactPosterior(p, T(xq), capacity=3)
    for s, e in ((0, 1), (1, 20), (20, 21), (21, 60)):
        post.condition(T(x[s:e]), T(y[s:e]))
    np.testing.assert_allclose(post.pool_mean.numpy(), m_np, atol=1e-10)
    np.testing.assert_allclose(post.pool_var.numpy(), v_np, atol=1e-10)
    pm, pv = post.predict(T(xq), chunk=4)
    np.testing.assert_allclose(pm.numpy(), m_np, atol=1e-10)
    np.testing.assert_allclose(pv.numpy(), v_np, atol=1e-10)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("ard", [False, True])
def test_kernels_equal_gpytorch(kernel, ard):
    gpytorch = pytest.importorskip("gpytorch")
    from alkernels.gp.fit import base_kernel

    x, _, xq, _ = problem(n=30, q=20)
    k = gpytorch.kernels.ScaleKernel(base_kernel(kernel, 4 if ard else None)).double()
    k.base_kernel.lengthscale = torch.tensor([[0.9, 1.4, 2.0, 1.1]] if ard else [[1.3]], dtype=torch.float64)
    k.outputscale = 0.8
    with torch.no_grad():
        want = k(T(x), T(xq)).to_dense()
    p = params(kernel, k.base_kernel.lengthscale.detach().reshape(-1).tolist(), float(k.outputscale.detach()))
    np.testing.assert_allclose(covariance(p, T(x), T(xq)).numpy(), want.numpy(), rtol=1e-10, atol=1e-12)


def test_coincident_points_have_exact_prior_covariance():
    x = torch.randn(50, 8, dtype=torch.float64) * 30 + 100  # large offset: rounding in |a|^2+|b|^2-2ab
    p = params("matern12", (5.0,))
    k = covariance(p, x, x[10:20])
    assert torch.equal(k[torch.arange(10, 20), torch.arange(10)], torch.full((10,), 0.8, dtype=torch.float64))
    assert bool((covariance(p, x, x, same=True).diagonal() == 0.8).all())


@pytest.mark.parametrize("kernel", ["matern12", "rbf"])
def test_incremental_equals_refit_over_100_single_steps(kernel):
    """100 single-point variance queries: same selections, means and variances as a full refit
    after every step, to 1e-8 in float64."""
    rng = np.random.default_rng(1)
    xp = rng.normal(size=(400, 5))
    yp = np.cos(xp[:, 0]) + xp[:, 2] + 0.1 * rng.normal(size=400)
    pool = T(xp)
    p = params(kernel, (1.7,), 1.2, 0.02, -0.1)
    labelled = list(range(30))
    post = ExactPosterior(p, pool, capacity=16)  # grows several times on the way
    post.condition(pool[labelled], T(yp[labelled]))
    free = np.ones(400, dtype=bool)
    free[labelled] = False
    for step in range(100):
        ref_m, ref_v = exact_posterior(p, pool[labelled], T(yp[labelled]), pool)
        np.testing.assert_allclose(post.pool_mean.numpy(), ref_m.numpy(), atol=1e-8, rtol=0)
        np.testing.assert_allclose(post.pool_var.numpy(), ref_v.numpy(), atol=1e-8, rtol=0)
        cand = np.flatnonzero(free)
        pick = int(cand[torch.argmax(post.pool_var[cand])])
        assert pick == int(cand[torch.argmax(ref_v[cand])]), f"selections differ at step {step}"
        idx = torch.tensor([pick])
        post.condition(pool[idx], T(yp[[pick]]), pool_index=idx)
        labelled.append(pick)
        free[pick] = False
    assert post.n == 130
    np.testing.assert_allclose(
        post.factor.numpy(),
        np.linalg.cholesky(covariance(p, pool[labelled], pool[labelled], same=True).numpy() + 0.02 * np.eye(130)),
        atol=1e-10,
    )


def test_incremental_blocks_and_non_pool_points_equal_refit():
    x, y, xq, yq = problem(n=80, q=60)
    p = params("matern32", (1.1, 0.8, 1.5, 2.0))
    post = ExactPosterior(p, T(xq))
    order = [(0, 10), (10, 11), (11, 37), (37, 80)]
    for s, e in order:  # blocks of outside points (triangular-solve path)
        post.condition(T(x[s:e]), T(y[s:e]))
    idx = torch.tensor([3, 17, 40, 41, 59])  # one block of pool points (the V-column path)
    post.condition(T(xq)[idx], T(yq)[idx], pool_index=idx)
    xt, yt = np.concatenate([x, xq[idx.numpy()]]), np.concatenate([y, yq[idx.numpy()]])
    ref_m, ref_v = exact_posterior(p, T(xt), T(yt), T(xq))
    np.testing.assert_allclose(post.pool_mean.numpy(), ref_m.numpy(), atol=1e-10)
    np.testing.assert_allclose(post.pool_var.numpy(), ref_v.numpy(), atol=1e-10)


def test_fantasies_then_update_targets_equal_conditioning_on_the_labels():
    x, y, xq, yq = problem(n=40, q=50)
    p = params()
    a, b = ExactPosterior(p, T(xq)), ExactPosterior(p, T(xq))
    a.condition(T(x), T(y))
    b.condition(T(x), T(y))
    picks = torch.tensor([5, 9, 30])
    before = a.pool_mean.clone()
    for j in picks:  # fantasised one at a time: the means stay, the variances shrink
        a.condition(T(xq)[j : j + 1], None, pool_index=j.reshape(1))
    assert torch.equal(a.pool_mean, before)
    a.update_targets(T(yq)[picks])
    b.condition(T(xq)[picks], T(yq)[picks], pool_index=picks)
    np.testing.assert_allclose(a.pool_mean.numpy(), b.pool_mean.numpy(), atol=1e-12)
    np.testing.assert_allclose(a.pool_var.numpy(), b.pool_var.numpy(), atol=1e-12)


def test_state_round_trip_continues_bit_for_bit():
    x, y, xq, yq = problem(n=30, q=40)
    p = params("matern52")
    a = ExactPosterior(p, T(xq))
    a.condition(T(x), T(y))
    b = ExactPosterior.from_state(a.state_dict(), T(xq))
    for post in (a, b):
        post.condition(T(xq)[:3], T(yq)[:3], pool_index=torch.arange(3))
    assert torch.equal(a.pool_mean, b.pool_mean) and torch.equal(a.pool_var, b.pool_var)


def test_float32_matches_float64_loosely():
    x, y, xq, _ = problem(n=100, q=50)
    p = params("matern12", (2.0,), 1.0, 0.1)
    m64, v64 = exact_posterior(p, T(x), T(y), T(xq))
    post = ExactPosterior(p, T(xq).float())
    post.condition(T(x).float(), T(y).float())
    assert post.pool_mean.dtype == torch.float32
    np.testing.assert_allclose(post.pool_mean.numpy(), m64.numpy(), atol=1e-4)
    np.testing.assert_allclose(post.pool_var.numpy(), v64.numpy(), atol=1e-4)


def test_sparse_incremental_equals_sparse_refit():
    x, y, xq, yq = problem(n=70, q=60)
    p = params("matern12", (1.5,), 1.0, 0.05)
    z = T(x[::5])
    post = SparsePosterior(p, z, T(xq))
    post.condition(T(x[:30]), T(y[:30]))
    for j in range(30, 70):
        post.condition(T(x[j : j + 1]), T(y[j : j + 1]))
    post.condition(T(xq[:4]), None)
    post.update_targets(T(yq[:4]))
    xt, yt = np.concatenate([x, xq[:4]]), np.concatenate([y, yq[:4]])
    ref_m, ref_v = sparse_posterior(p, z, T(xt), T(yt), T(xq))
    np.testing.assert_allclose(post.pool_mean.numpy(), ref_m.numpy(), atol=1e-9)
    np.testing.assert_allclose(post.pool_var.numpy(), ref_v.numpy(), atol=1e-9)
    pm, pv = post.predict(T(xq))
    np.testing.assert_allclose(pm.numpy(), ref_m.numpy(), atol=1e-9)
    np.testing.assert_allclose(pv.numpy(), ref_v.numpy(), atol=1e-9)


def test_sparse_posterior_is_gpytorch_sgpr_plus_the_dtc_variance_term():
    """gpytorch's SGPR predictive without its diagonal correction is the subset-of-regressors
    model: the same mean, variance ``phi^T P^-1 phi``; ours adds ``k(x,x) - |phi|^2``."""
    gpytorch = pytest.importorskip("gpytorch")
    from alkernels.gp.fit import _GPModel

    x, y, xq, _ = problem(n=60, q=30)
    z = T(x[::6]).clone()
    lik = gpytorch.likelihoods.GaussianLikelihood().double()
    model = _GPModel(T(x), T(y), lik, "matern52", False, z).double()
    model.scaled.base_kernel.lengthscale = 1.4
    model.scaled.outputscale = 0.9
    model.mean_module.constant.data.fill_(0.3)
    lik.noise = 0.07
    model.eval()
    lik.eval()
    with torch.no_grad(), gpytorch.settings.sgpr_diagonal_correction(False), gpytorch.settings.max_cholesky_size(10**6):
        pred = model(T(xq))
        g_mean, g_var = pred.mean, pred.variance
    p = GPParams("matern52", torch.tensor([1.4], dtype=torch.float64), 0.9, float(lik.noise.detach()), 0.3)
    m, v = sparse_posterior(p, z, T(x), T(y), T(xq), jitter=1e-12)
    phi = torch.linalg.solve_triangular(
        torch.linalg.cholesky(covariance(p, z, z, same=True)), covariance(p, z, T(xq)), upper=False
    )
    np.testing.assert_allclose(m.numpy(), g_mean.numpy(), atol=1e-6)
    np.testing.assert_allclose((v - (0.9 - (phi * phi).sum(0))).numpy(), g_var.numpy(), atol=1e-6)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="unknown kernel 'cubic'"):
        params("cubic")
    with pytest.raises(ValueError, match="lengthscales must be finite and positive"):
        params(ls=(0.0,))
    x, y, xq, _ = problem()
    post = ExactPosterior(params(), T(xq))
    with pytest.raises(ValueError, match="targets must be finite"):
        post.condition(T(x[:2]), torch.tensor([1.0, float("nan")], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"x_new must be \[b, 4\]"):
        post.condition(T(x[:2, :3]), T(y[:2]))
    with pytest.raises(ValueError, match="not positive definite"):  # duplicates without noise
        ExactPosterior(params(noise=0.0), T(xq)).condition(T(np.repeat(x[:1], 2, 0)), T(y[:2]))
    with pytest.raises(ValueError, match="2 lengthscales for inputs of width 4"):
        ExactPosterior(params(ls=(1.0, 2.0)), T(xq))
    with pytest.raises(ValueError, match="needs noise > 0"):
        SparsePosterior(params(noise=0.0), T(x[:5]), T(xq))


def test_memory_formula_counts_the_buffers():
    n, p, d = 37, 53, 6
    post = ExactPosterior(params(ls=(1.0,)), torch.zeros(p, d, dtype=torch.float64), capacity=n)
    held = sum(
        t.numel()
        for t in (
            post._x,
            post._y,
            post._low,
            post._alpha,
            post._v,
            post.x_pool,
            *post._pool_scaled,
            post.pool_mean,
            post.pool_var,
        )
    )
    assert exact_memory_bytes(n, p, d) == 8 * held
    assert exact_memory_bytes(n, p, d, torch.float32) == 4 * held
    budget = 24 * 2**30
    n_max = exact_max_n(budget, 10_000, 128)
    assert exact_memory_bytes(n_max, 10_000, 128) <= budget < exact_memory_bytes(n_max + 1, 10_000, 128)
