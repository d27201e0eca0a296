"""Bootstrap ridge: splits, closed-form weights, CV scores/alphas vs independent implementations."""

import numpy as np
import pytest
from scipy.stats import pearsonr

from core.encoding.ridge import (DEFAULT_ALPHAS, BootstrapRidge, bootstrap_ridge, bootstrap_splits,
                                 ridge_cv_scores, ridge_svd_weights)
from core.errors import ConfigError, DataError

GRID = np.logspace(0, 3, 10)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny problems: one BLAS/torch thread (multi-threading only adds contention on a shared box)."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)


def _data(n, p, v, seed=0, snr=1.0):
    """z-scored correlated features and responses: half the voxels carry a linear signal."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 8)) @ rng.standard_normal((8, p)) + 0.7 * rng.standard_normal((n, p))
    w = rng.standard_normal((p, v)) * (np.arange(v) % 2 == 0)
    y = np.sqrt(snr) * x @ w / np.sqrt(p) + rng.standard_normal((n, v))
    z = lambda a: ((a - a.mean(0)) / a.std(0)).astype(np.float32)  # noqa: E731
    return z(x), z(y)


def _closed_form(X, Y, alphas):
    """(XᵀX + α_v² I)⁻¹ XᵀY per voxel by a direct float64 solve."""
    Xd, Yd = X.astype(np.float64), Y.astype(np.float64)
    G, B = Xd.T @ Xd, Xd.T @ Yd
    eye = np.eye(X.shape[1])
    return np.stack([np.linalg.solve(G + a ** 2 * eye, B[:, i]) for i, a in enumerate(alphas)], 1)


def _reference_cv(X, Y, splits, grid):
    """Slow, straightforward CV: normal equations per split and alpha, scipy Pearson per voxel."""
    Xd, Yd = X.astype(np.float64), Y.astype(np.float64)
    scores = np.zeros((len(grid), Y.shape[1]))
    for tr, te in splits:
        G, B = Xd[tr].T @ Xd[tr], Xd[tr].T @ Yd[tr]
        for i, a in enumerate(grid):
            pred = Xd[te] @ np.linalg.solve(G + a ** 2 * np.eye(X.shape[1]), B)
            scores[i] += [pearsonr(pred[:, j], Yd[te, j])[0] for j in range(Y.shape[1])]
    return scores / len(splits)


def _decisive(ref):
    """Voxels whose best reference alpha beats the runner-up by more than float32 noise."""
    top2 = np.sort(ref, axis=0)[-2:]
    return top2[1] - top2[0] > 1e-5


# ----------------------------------------------------------------------------- splits


def test_splits_partition_rows_into_whole_chunks():
    splits = bootstrap_splits(205, n_boots=3, chunk_len=20, held_frac=0.25, seed=4)
    assert len(splits) == 3
    for train, held in splits:
        assert np.array_equal(np.union1d(train, held), np.arange(205))
        assert np.intersect1d(train, held).size == 0
        assert held.size == 20 * round(0.25 * 10)            # 10 full chunks → 2.5 → 2 held
        starts = held[::20]
        assert np.all(starts % 20 == 0)
        assert np.array_equal(held, (starts[:, None] + np.arange(20)).ravel())
        assert held.max() < 200                               # the 5 trailing rows always train
    assert not all(np.array_equal(splits[0][1], s[1]) for s in splits[1:])


def test_splits_are_seeded():
    a = bootstrap_splits(400, seed=1)
    b = bootstrap_splits(400, seed=1)
    c = bootstrap_splits(400, seed=2)
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    assert not all(np.array_equal(x[1], y[1]) for x, y in zip(a, c))


def test_splits_respect_segments():
    seg = [45, 38, 57]                                       # story boundaries at rows 45 and 83
    allowed = [0, 10, 20, 30, 45, 55, 65, 83, 93, 103, 113, 123]
    seen = set()
    for seed in range(20):
        for _, held in bootstrap_splits(140, n_boots=2, chunk_len=10, held_frac=0.3, seed=seed,
                                        segments=seg):
            starts = held[::10]
            assert set(starts.tolist()) <= set(allowed)
            assert np.array_equal(held, (starts[:, None] + np.arange(10)).ravel())
            assert held.size == 10 * round(0.3 * len(allowed))
            seen |= set(starts.tolist())
    assert seen == set(allowed)


@pytest.mark.parametrize("kwargs, err", [
    (dict(n_rows=30), ConfigError),                           # one full chunk of 20
    (dict(n_rows=100, chunk_len=1), ConfigError),
    (dict(n_rows=100, held_frac=0.0), ConfigError),
    (dict(n_rows=100, held_frac=1.0), ConfigError),
    (dict(n_rows=100, n_boots=0), ConfigError),
    (dict(n_rows=100, segments=[50, 40]), DataError),
])
def test_splits_bad_parameters(kwargs, err):
    with pytest.raises(err):
        bootstrap_splits(**kwargs)


# ----------------------------------------------------------------------------- weights


@pytest.mark.parametrize("n, p", [(90, 25), (40, 70)])        # primal (n > p) and dual (n <= p)
def test_weights_equal_closed_form(n, p):
    X, Y = _data(n, p, 9, seed=n)
    alphas = np.logspace(-0.5, 2.5, 9)
    W = ridge_svd_weights(X, Y, alphas, voxel_batch=4, device="cpu")
    ref = _closed_form(X, Y, alphas)
    assert W.dtype == np.float32 and W.shape == (p, 9)
    np.testing.assert_allclose(W, ref, rtol=0, atol=2e-6 * np.abs(ref).max())
    np.testing.assert_allclose(ridge_svd_weights(X, Y, 3.0, device="cpu"),
                               _closed_form(X, Y, [3.0] * 9), rtol=0, atol=2e-6 * np.abs(ref).max())


def test_weights_bad_alphas():
    X, Y = _data(40, 5, 3)
    with pytest.raises(ConfigError):
        ridge_svd_weights(X, Y, [1.0, 2.0], device="cpu")
    with pytest.raises(ConfigError):
        ridge_svd_weights(X, Y, [1.0, -2.0, 3.0], device="cpu")


# ----------------------------------------------------------------------------- cross-validation


@pytest.mark.parametrize("n, p", [(200, 30), (120, 160)])
def test_cv_scores_and_alphas_match_slow_reference(n, p):
    X, Y = _data(n, p, 12, seed=p)
    splits = bootstrap_splits(n, n_boots=3, chunk_len=10, held_frac=0.25, seed=0)
    ours = ridge_cv_scores(X, Y, splits, GRID, voxel_batch=5, device="cpu")
    ref = _reference_cv(X, Y, splits, GRID)
    np.testing.assert_allclose(ours, ref, atol=2e-5)
    dec = _decisive(ref)
    assert dec.mean() > 0.9
    fit = bootstrap_ridge(X, Y, alphas=GRID, chunk_len=10, seed=0, voxel_batch=5, device="cpu")
    np.testing.assert_array_equal(fit.alphas[dec], GRID[np.argmax(ref, 0)][dec])
    assert len(np.unique(fit.alphas)) > 1                       # the grid is really searched


def test_alphas_and_weights_match_himalaya():
    from himalaya.backend import get_backend, set_backend
    from himalaya.ridge import solve_ridge_cv_svd
    from himalaya.scoring import correlation_score

    X, Y = _data(160, 40, 16, seed=7)
    fit = bootstrap_ridge(X, Y, alphas=GRID, chunk_len=10, seed=3, device="cpu")
    splits = bootstrap_splits(160, chunk_len=10, seed=3)
    previous = get_backend().name
    try:
        set_backend("numpy")
        best, coefs, best_scores = solve_ridge_cv_svd(
            X.astype(np.float64), Y.astype(np.float64), alphas=GRID ** 2,   # himalaya: α where we use α²
            score_func=correlation_score, cv=splits, warn=False)
    finally:
        set_backend(previous)
    him_alphas = np.sqrt(best)
    dec = _decisive(fit.cv_scores.astype(np.float64))
    assert dec.mean() > 0.9
    np.testing.assert_allclose(fit.alphas[dec], him_alphas[dec], rtol=1e-6)
    np.testing.assert_allclose(fit.cv_scores.max(0), best_scores[0], atol=2e-5)
    np.testing.assert_allclose(fit.weights[:, dec], coefs[:, dec], atol=2e-6 * np.abs(coefs).max())


@pytest.mark.parametrize("n, p", [(150, 20), (60, 80)])
def test_fit_contents_and_batch_invariance(n, p, monkeypatch):
    from core.encoding import ridge

    X, Y = _data(n, p, 11, seed=1)
    fit = bootstrap_ridge(X, Y, alphas=GRID, chunk_len=10, voxel_batch=1000, device="cpu")
    monkeypatch.setattr(ridge, "_BLOCK_BYTES", 64)     # one alpha per product, nothing folded
    monkeypatch.setattr(ridge, "_GRAM_ROWS", 7)        # Gram accumulated over many row blocks
    small = bootstrap_ridge(X, Y, alphas=GRID, chunk_len=10, voxel_batch=3, device="cpu")
    assert fit.weights.shape == (p, 11) and fit.weights.dtype == np.float32
    assert fit.cv_scores.shape == (10, 11) and fit.cv_scores.dtype == np.float32
    np.testing.assert_array_equal(fit.best_index, np.argmax(fit.cv_scores, 0))
    np.testing.assert_array_equal(fit.alphas, GRID[fit.best_index])
    ref = _closed_form(X, Y, fit.alphas)
    np.testing.assert_allclose(fit.weights, ref, atol=2e-6 * np.abs(ref).max())
    np.testing.assert_allclose(small.cv_scores, fit.cv_scores, atol=1e-6)
    np.testing.assert_allclose(small.weights, fit.weights, atol=2e-6 * np.abs(ref).max())


def test_float64_and_integer_inputs_give_float32_results():
    X, Y = _data(100, 8, 3, seed=9)
    ref = bootstrap_ridge(X, Y, chunk_len=10, device="cpu")
    fit = bootstrap_ridge(X.astype(np.float64), Y.astype(np.float64), chunk_len=10, device="cpu")
    assert fit.weights.dtype == np.float32 and fit.cv_scores.dtype == np.float32
    np.testing.assert_allclose(fit.cv_scores, ref.cv_scores, atol=1e-6)
    counts = np.rint(Y * 3).astype(np.int64)
    W = ridge_svd_weights(X, counts, 20.0, device="cpu")
    np.testing.assert_allclose(W, _closed_form(X, counts, [20.0] * 3), atol=1e-5)


def test_constant_voxel_scores_zero_and_gets_zero_weights():
    X, Y = _data(120, 10, 4, seed=2)
    Y[:, 1] = 0.0
    fit = bootstrap_ridge(X, Y, chunk_len=10, device="cpu")
    assert np.all(fit.cv_scores[:, 1] == 0) and np.all(fit.weights[:, 1] == 0)
    assert np.isfinite(fit.cv_scores).all() and np.isfinite(fit.weights).all()
    assert fit.alphas[1] == DEFAULT_ALPHAS[0]


def test_shell_recovers_signal_and_reports_progress():
    X, Y = _data(420, 15, 6, seed=5, snr=4.0)
    calls = []
    model = BootstrapRidge(chunk_len=20, seed=1, device="cpu").fit(
        X[:300], Y[:300], progress=lambda f, m: calls.append(f))
    pred = model.predict(X[300:])
    np.testing.assert_allclose(pred, X[300:] @ model.coef_, atol=1e-5)
    r = model.score(X[300:], Y[300:])
    assert np.all(r[::2] > 0.6) and np.all(np.abs(r[1::2]) < 0.3)   # even voxels carry the signal
    assert calls == sorted(calls) and calls[-1] == 1.0 and len(calls) >= 4
    assert model.alphas_.shape == (6,) and model.cv_scores_.shape == (15, 6)


# ----------------------------------------------------------------------------- bad inputs


def test_bad_inputs_raise_clear_errors():
    X, Y = _data(100, 6, 3)
    with pytest.raises(DataError, match="rows"):
        bootstrap_ridge(X, Y[:90], device="cpu")
    Xn = X.copy()
    Xn[3, 2] = np.nan
    with pytest.raises(DataError, match="X has non-finite"):
        bootstrap_ridge(Xn, Y, device="cpu")
    Yn = Y.copy()
    Yn[5, 1] = np.inf
    with pytest.raises(DataError, match="Y has non-finite"):
        bootstrap_ridge(X, Yn, device="cpu")
    with pytest.raises(ConfigError, match="chunk"):
        bootstrap_ridge(X[:30], Y[:30], device="cpu")
    with pytest.raises(DataError, match="2-D"):
        bootstrap_ridge(X, Y[:, 0], device="cpu")
    with pytest.raises(ConfigError, match="alphas"):
        bootstrap_ridge(X, Y, alphas=[10.0, 0.0], device="cpu")
    with pytest.raises(ConfigError, match="voxel_batch"):
        bootstrap_ridge(X, Y, voxel_batch=0, device="cpu")
    with pytest.raises(ConfigError, match="device"):
        bootstrap_ridge(X, Y, device="nonsense")
    with pytest.raises(ConfigError, match="splits"):
        ridge_cv_scores(X, Y, [(np.arange(50), np.arange(95, 105))], device="cpu")
    with pytest.raises(ConfigError, match="not fitted"):
        BootstrapRidge().predict(X)
    model = BootstrapRidge(chunk_len=10, device="cpu").fit(X, Y)
    with pytest.raises(DataError, match="features"):
        model.predict(X[:, :4])
