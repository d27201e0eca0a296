"""Ridge regression with one alpha per voxel, chosen by bootstrapped chunked cross-validation.

The paper's encoding model (Moussa et al. 2025, Evaluation 1, after HuthLab's ``bootstrap_ridge``;
``/work/shared/reference/paper-method.md``): alphas ``logspace(1, 4, 15)``, 3 bootstraps, each
holding out 25 % of the 20-TR chunks, alpha chosen per voxel by the mean held-out Pearson r, then
weights refit on all rows.

Alpha convention (HuthLab's, kept on purpose): alpha is on the scale of the singular values,
``W = V diag(s / (s² + α²)) Uᵀ Y`` for ``X = U diag(s) Vᵀ``, i.e. ``W = (XᵀX + α² I)⁻¹ XᵀY``.
(himalaya and scikit-learn put ``α`` where this puts ``α²``.) No intercept: X and Y are z-scored.

The SVD is obtained from the eigendecomposition (float64) of the smaller Gram matrix — ``X Xᵀ = U
diag(s²) Uᵀ`` when ``n ≤ p`` (then ``V diag(s) = Xᵀ U``), ``XᵀX = V diag(s²) Vᵀ`` otherwise — which
gives the same ``U, s, V`` far faster on CPU (2250 × 3072: 1.8 s vs 25 s for torch's float32
SVD). Hand-written rather than himalaya's ``solve_ridge_cv_svd`` because that forms
``(n_alphas, p, n)`` resolution matrices and, at refit, solves every alpha for every voxel;
``bench/encoding.py`` measures the difference. The voxel dimension is batched (``voxel_batch``) so
memory stays bounded; the heavy products run in float32 on ``get_settings().device``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from core.errors import ConfigError, DataError
from core.progress import ProgressFn, report, sub_progress

#: paper defaults (Evaluation 1): ridge grid, bootstraps, chunk length (TRs), held-out fraction
DEFAULT_ALPHAS = np.logspace(1, 4, 15)
N_BOOTS = 3
CHUNK_LEN = 20
HELD_FRAC = 0.25
#: voxels per batch: bounds memory (~ n_alphas × n_held × voxel_batch float32 per CV step), not results
VOXEL_BATCH = 4096
#: largest float32 block (bytes) of held-out predictions per product: memory bound, not a result
_BLOCK_BYTES = 1 << 29
_GRAM_ROWS = 4096  #: rows per float64 Gram accumulation step
#: torch intra-op threads for the CPU eigendecomposition (None: leave torch's setting). LAPACK's
#: syevd barely scales with threads and collapses under CPU contention: a 2250² float64 eigh took
#: 34 s with 2 threads vs 2.0 s with 1 on a loaded 2-core box (1.5 s with 2 threads when idle).
EIGH_THREADS: Optional[int] = 1

Split = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class RidgeFit:
    """Result of :func:`bootstrap_ridge`.

    Attributes
    ----------
    alphas : ``(n_voxels,)`` float64, the alpha chosen for each voxel (a value of ``alpha_grid``).
    weights : ``(n_features, n_voxels)`` float32, ridge weights refit on all rows at those alphas.
    cv_scores : ``(n_alphas, n_voxels)`` float32, held-out Pearson r averaged over the bootstraps.
    alpha_grid : ``(n_alphas,)`` float64, the alphas tried.
    best_index : ``(n_voxels,)`` int64, index of the chosen alpha in ``alpha_grid``.
    """

    alphas: np.ndarray
    weights: np.ndarray
    cv_scores: np.ndarray
    alpha_grid: np.ndarray
    best_index: np.ndarray


def _matrix(name: str, a, n_rows: Optional[int] = None) -> np.ndarray:
    """``a`` as a 2-D float array (float32/float64 kept), with finite values and ``n_rows`` rows."""
    a = np.asarray(a)
    if a.ndim != 2:
        raise DataError(f"{name} must be a 2-D (n_trs, n_columns) array, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise DataError(f"{name} must hold real numbers, got dtype {a.dtype}")
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float32)
    if n_rows is not None and a.shape[0] != n_rows:
        raise DataError(f"X has {n_rows} rows but {name} has {a.shape[0]}; features and responses "
                        f"must cover the same TRs")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise DataError(f"{name} is empty (shape {a.shape})")
    for start in range(0, a.shape[1], VOXEL_BATCH):  # column blocks: no full-size boolean temp
        block = a[:, start:start + VOXEL_BATCH]
        if not np.isfinite(block).all():
            bad = int((~np.isfinite(a)).any(0).sum())
            raise DataError(f"{name} has non-finite values (NaN/inf) in {bad} column(s); "
                            f"drop or impute them before fitting")
    return a


def _alpha_grid(alphas) -> np.ndarray:
    grid = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
    if grid.ndim != 1 or grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(grid <= 0):
        raise ConfigError(f"alphas must be a non-empty 1-D list of positive finite numbers, "
                          f"got {alphas!r}")
    return grid


def _device(device) -> torch.device:
    if device is None:
        from core.settings import get_settings

        device = get_settings().device
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown torch device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for but no CUDA GPU is visible; use device='cpu'")
    return dev


def _check_batch(voxel_batch) -> int:
    if not float(voxel_batch).is_integer() or int(voxel_batch) < 1:
        raise ConfigError(f"voxel_batch must be a positive integer, got {voxel_batch!r}")
    return int(voxel_batch)


def bootstrap_splits(n_rows: int, n_boots: int = N_BOOTS, chunk_len: int = CHUNK_LEN,
                     held_frac: float = HELD_FRAC, seed: int = 0,
                     segments: Optional[Sequence[int]] = None) -> list[Split]:
    """Train / held-out row indices for chunked bootstrap cross-validation.

    The rows are cut into consecutive chunks of ``chunk_len`` rows (within each segment, so no
    chunk straddles a story boundary); a segment's trailing rows that do not fill a chunk are always
    kept for training (as in HuthLab). Each bootstrap holds out ``max(1, round(held_frac ·
    n_chunks))`` chunks drawn without replacement.

    Parameters
    ----------
    n_rows : number of rows (TRs) of the stacked training data.
    n_boots : number of bootstraps (paper: 3).
    chunk_len : chunk length in rows / TRs (paper: 20).
    held_frac : fraction of chunks held out per bootstrap (paper: 0.25).
    seed : seed of the chunk draws (``numpy.random.default_rng``).
    segments : lengths of consecutive segments (e.g. stories) summing to ``n_rows``; default one.

    Returns
    -------
    list of ``n_boots`` pairs ``(train, held)``, sorted int64 row indices, disjoint, covering all rows.
    """
    n_rows, chunk_len, n_boots = int(n_rows), int(chunk_len), int(n_boots)
    if n_boots < 1:
        raise ConfigError(f"n_boots must be >= 1, got {n_boots}")
    if chunk_len < 2:
        raise ConfigError(f"chunk_len must be >= 2 rows (a correlation needs variance), got {chunk_len}")
    if not 0.0 < float(held_frac) < 1.0:
        raise ConfigError(f"held_frac must be in (0, 1), got {held_frac}")
    lengths = [n_rows] if segments is None else [int(s) for s in segments]
    if any(s < 0 for s in lengths) or sum(lengths) != n_rows:
        raise DataError(f"segments {list(lengths)} must be non-negative and sum to the {n_rows} rows")
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int)
    starts = [s for o, n in zip(offsets, lengths)
              for s in range(o, o + n // chunk_len * chunk_len, chunk_len)]
    n_chunks = len(starts)
    n_held = max(1, int(round(float(held_frac) * n_chunks)))
    if n_chunks < 2 or n_held >= n_chunks:
        raise ConfigError(f"{n_rows} rows give {n_chunks} full chunk(s) of chunk_len={chunk_len}; "
                          f"cross-validation needs >= 2 with some left for training — use more TRs "
                          f"or a smaller chunk_len")
    rng, starts = np.random.default_rng(seed), np.asarray(starts, dtype=np.int64)
    splits = []
    for _ in range(n_boots):
        chosen = np.sort(starts[rng.permutation(n_chunks)[:n_held]])
        held = (chosen[:, None] + np.arange(chunk_len)[None, :]).ravel()
        is_held = np.zeros(n_rows, dtype=bool)
        is_held[held] = True
        splits.append((np.flatnonzero(~is_held), np.flatnonzero(is_held)))
    return splits


def _eigh(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.linalg.eigh`` run with :data:`EIGH_THREADS` intra-op threads on CPU."""
    before = torch.get_num_threads()
    if a.device.type != "cpu" or EIGH_THREADS is None or before <= EIGH_THREADS:
        return torch.linalg.eigh(a)
    torch.set_num_threads(EIGH_THREADS)
    try:
        return torch.linalg.eigh(a)
    finally:
        torch.set_num_threads(before)


def _ridge_factors(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Factors with ``(XᵀX + a I)⁻¹ Xᵀ = left · diag(1 / (lam + a)) · right`` for every ``a > 0``.

    ``x`` is ``(n, p)``; returns float32 ``left (p, k)``, float64 ``lam (k,)`` (= s², clipped at 0)
    and float32 ``right (k, n)`` with ``k = min(n, p)``: ``(XᵀU, s², Uᵀ)`` if ``n ≤ p`` else
    ``(V, s², VᵀXᵀ)``. The Gram matrix and its eigendecomposition are float64.
    """
    n, p = x.shape
    if n <= p:
        xd = x.to(torch.float64)
        lam, u = _eigh(xd @ xd.T)
        left, right = (xd.T @ u).to(torch.float32), u.T.to(torch.float32)
    else:
        gram = torch.zeros((p, p), dtype=torch.float64, device=x.device)
        for start in range(0, n, _GRAM_ROWS):                   # no full float64 copy of x
            xc = x[start:start + _GRAM_ROWS].to(torch.float64)
            gram += xc.T @ xc
        lam, v = _eigh(gram)
        left = v.to(torch.float32)
        right = (x.to(torch.float32) @ left).T
    return left, lam.clamp_min(0.0), right


def ridge_cv_scores(X: np.ndarray, Y: np.ndarray, splits: Sequence[Split],
                    alphas=DEFAULT_ALPHAS, voxel_batch: int = VOXEL_BATCH, device=None,
                    progress: ProgressFn = None, selection: str = "corr") -> np.ndarray:
    """Held-out score of ridge predictions for every alpha and voxel, averaged over ``splits``.

    For each split the model is fit on the train rows and predicts the held-out rows. ``selection``
    ``"corr"`` (paper text, default): each voxel's prediction is correlated with its held-out
    response (r = 0 where either is constant). ``"r2"`` (released code, HuthLab ``use_corr=False``):
    ``R² = 1 − Var(y − ŷ)/Var(y)`` and the score is ``sign(R²)·√|R²|`` (0 where ``Var(y) = 0``).

    Parameters
    ----------
    X : ``(n_trs, n_features)`` float, z-scored features.
    Y : ``(n_trs, n_voxels)`` float, z-scored responses.
    splits : ``(train, held)`` row-index pairs (:func:`bootstrap_splits`).
    alphas : ``(n_alphas,)`` ridge alphas, HuthLab scale (``α²`` in the normal equations).
    voxel_batch : voxels per batch (memory bound). device : torch device (default settings').

    Returns
    -------
    ``(n_alphas, n_voxels)`` float32 mean held-out correlation.
    """
    X = _matrix("X", X)
    Y = _matrix("Y", Y, n_rows=X.shape[0])
    splits = [(np.asarray(tr), np.asarray(te)) for tr, te in splits]
    if not splits or any(i.ndim != 1 or i.size < 2 or i.min() < 0 or i.max() >= X.shape[0]
                         for split in splits for i in split):
        raise ConfigError(f"splits must be (train, held) pairs of >= 2 row indices in "
                          f"[0, {X.shape[0]}); build them with bootstrap_splits")
    return _cv_scores(X, Y, splits, _alpha_grid(alphas), _check_batch(voxel_batch), _device(device),
                      progress, _check_selection(selection))


def _check_selection(selection: str):
    """The held-out scorer of ``selection`` (``"corr"`` or ``"r2"``)."""
    scorers = {"corr": _held_out_r, "r2": _held_out_sqrt_r2}
    if selection not in scorers:
        raise ConfigError(f"unknown alpha selection {selection!r}; expected 'corr' (held-out r) or "
                          f"'r2' (signed sqrt R², HuthLab use_corr=False)")
    return scorers[selection]


def _cv_scores(X: np.ndarray, Y: np.ndarray, splits: Sequence[Split], grid: np.ndarray, batch: int,
               dev: torch.device, progress: ProgressFn, scorer=None) -> np.ndarray:
    """:func:`ridge_cv_scores` on validated inputs (``scorer``: held-out score, default r)."""
    scorer = scorer or _held_out_r
    n_alphas, n_vox = grid.size, Y.shape[1]
    xt = torch.as_tensor(X, device=dev)
    total = np.zeros((n_alphas, n_vox), dtype=np.float64)
    n_steps, step = len(splits) * -(-n_vox // batch), 0
    for train, held in splits:
        train_t = torch.as_tensor(train, device=dev)
        held_t = torch.as_tensor(held, device=dev)
        left, lam, right = _ridge_factors(xt[train_t])
        m = xt[held_t].to(torch.float32) @ left                               # (n_te, k)
        g = (1.0 / (lam[None, :] + torch.as_tensor(grid, device=dev)[:, None] ** 2)).to(torch.float32)
        n_tr, k, n_te = len(train), lam.numel(), len(held)
        # prediction for alpha i: (m · diag(g_i)) @ (right @ Ytrain). Fold ``right`` into the
        # left factor once per split when that costs fewer flops and fits the memory bound.
        one_step = (n_alphas * n_te * n_tr * (k + n_vox) < k * n_vox * (n_tr + n_alphas * n_te)
                    and n_alphas * n_te * n_tr * 4 <= _BLOCK_BYTES)
        if one_step:
            folded = (m[None, :, :] * g[:, None, :]).reshape(n_alphas * n_te, k) @ right
        del left
        group = max(1, _BLOCK_BYTES // (4 * n_te * min(batch, n_vox)))    # alphas per product
        for start in range(0, n_vox, batch):
            yb = torch.as_tensor(np.ascontiguousarray(Y[:, start:start + batch]), device=dev)
            yb = yb.to(torch.float32)
            y_tr, y_te = yb[train_t], yb[held_t]
            rhs = y_tr if one_step else right @ y_tr
            for a0 in range(0, n_alphas, group):
                a1 = min(n_alphas, a0 + group)
                lhs = (folded[a0 * n_te:a1 * n_te] if one_step
                       else (m[None, :, :] * g[a0:a1, None, :]).reshape((a1 - a0) * n_te, k))
                pred = (lhs @ rhs).reshape(a1 - a0, n_te, -1)
                total[a0:a1, start:start + yb.shape[1]] += scorer(pred, y_te)
            step += 1
            report(progress, step / n_steps, f"cross-validation {step}/{n_steps}")
    return (total / len(splits)).astype(np.float32)


def _held_out_r(pred: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Pearson r of ``pred (A, n, v)`` (overwritten) with ``y (n, v)``; 0 where undefined."""
    yc = y.to(torch.float64)
    yc = yc - yc.mean(0)
    yn = torch.linalg.vector_norm(yc, dim=0)
    yz = (yc / torch.where(yn > 0, yn, 1.0)).to(pred.dtype)
    pred.sub_(pred.mean(1, keepdim=True))
    pn = torch.linalg.vector_norm(pred, dim=1).to(torch.float64)  # (A, v)
    num = pred.mul_(yz).sum(1).to(torch.float64)
    ok = (pn > 0) & (yn > 0)[None, :]
    r = torch.where(ok, num / torch.where(ok, pn, 1.0), 0.0)
    return r.cpu().numpy()


def _held_out_sqrt_r2(pred: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Signed √R² of ``pred (A, n, v)`` (overwritten) against ``y (n, v)``: HuthLab's
    ``use_corr=False`` score ``sign(R²)·√|R²|`` with ``R² = 1 − Var(y − ŷ)/Var(y)`` (ddof 0);
    0 where ``Var(y) = 0``."""
    yd = y.to(torch.float64)
    var_y = yd.var(0, unbiased=False)                                # (v,)
    res = pred.neg_().add_(y.to(pred.dtype)[None])                   # y − ŷ, in place
    var_res = res.to(torch.float64).var(1, unbiased=False)          # (A, v)
    ok = (var_y > 0)[None, :]
    r2 = torch.where(ok, 1.0 - var_res / torch.where(ok, var_y[None, :], 1.0), 0.0)
    return (torch.sign(r2) * torch.sqrt(torch.abs(r2))).cpu().numpy()


def ridge_svd_weights(X: np.ndarray, Y: np.ndarray, alphas_per_voxel, voxel_batch: int = VOXEL_BATCH,
                      device=None, progress: ProgressFn = None) -> np.ndarray:
    """Ridge weights with a (possibly different) alpha per voxel.

    ``W[:, v] = V diag(s / (s² + α_v²)) Uᵀ Y[:, v] = (XᵀX + α_v² I)⁻¹ Xᵀ Y[:, v]`` for
    ``X = U diag(s) Vᵀ`` (HuthLab alpha scale; no intercept).

    Parameters
    ----------
    X : ``(n_trs, n_features)`` float. Y : ``(n_trs, n_voxels)`` float.
    alphas_per_voxel : scalar or ``(n_voxels,)`` positive alphas.
    voxel_batch : voxels per batch (memory bound). device : torch device (default settings').

    Returns
    -------
    ``(n_features, n_voxels)`` float32 weights.
    """
    X = _matrix("X", X)
    Y = _matrix("Y", Y, n_rows=X.shape[0])
    a = np.asarray(alphas_per_voxel, dtype=np.float64)
    a = np.full(Y.shape[1], float(a)) if a.ndim == 0 else a
    if a.shape != (Y.shape[1],):
        raise ConfigError(f"alphas_per_voxel has shape {a.shape}; expected a scalar or ({Y.shape[1]},)")
    return _weights(X, Y, _alpha_grid(a), _check_batch(voxel_batch), _device(device), progress)


def _weights(X: np.ndarray, Y: np.ndarray, a: np.ndarray, batch: int, dev: torch.device,
             progress: ProgressFn) -> np.ndarray:
    """:func:`ridge_svd_weights` on validated inputs (``a``: ``(n_voxels,)`` alphas)."""
    left, lam, right = _ridge_factors(torch.as_tensor(X, device=dev))
    weights = np.empty((X.shape[1], Y.shape[1]), dtype=np.float32)
    n_vox = Y.shape[1]
    for start in range(0, n_vox, batch):
        yb = torch.as_tensor(np.ascontiguousarray(Y[:, start:start + batch]), device=dev)
        ab = torch.as_tensor(a[start:start + batch], device=dev)
        g = (1.0 / (lam[:, None] + ab[None, :] ** 2)).to(torch.float32)   # (k, vb)
        weights[:, start:start + yb.shape[1]] = (left @ (g * (right @ yb.to(torch.float32)))).cpu().numpy()
        report(progress, min(start + batch, n_vox) / n_vox, "refit")
    return weights


def bootstrap_ridge(X: np.ndarray, Y: np.ndarray, alphas=DEFAULT_ALPHAS, n_boots: int = N_BOOTS,
                    chunk_len: int = CHUNK_LEN, held_frac: float = HELD_FRAC, seed: int = 0,
                    segments: Optional[Sequence[int]] = None, voxel_batch: int = VOXEL_BATCH,
                    device=None, progress: ProgressFn = None, selection: str = "corr") -> RidgeFit:
    """Ridge with one alpha per voxel chosen by chunked bootstrap CV, then refit on all rows.

    Defaults are the paper's (Moussa et al. 2025, Evaluation 1): ``alphas = logspace(1, 4, 15)``,
    3 bootstraps, 20-TR chunks, 25 % held out, selection by mean held-out Pearson r (ties → the
    earlier alpha of the grid).

    Parameters
    ----------
    X : ``(n_trs, n_features)`` z-scored (delayed) features.
    Y : ``(n_trs, n_voxels)`` z-scored responses.
    alphas, n_boots, chunk_len, held_frac, seed, segments : see :func:`bootstrap_splits`;
        ``segments`` (story lengths in rows) keeps chunks inside stories.
    voxel_batch : voxels per batch (memory bound). device : torch device (default settings').
    progress : optional ``progress(fraction, message)``.
    selection : held-out score that picks alpha: ``"corr"`` (paper text) or ``"r2"`` (signed √R²,
        the released code); see :func:`ridge_cv_scores`.

    Returns
    -------
    :class:`RidgeFit` (chosen alphas, weights, CV score table).
    """
    X = _matrix("X", X)
    Y = _matrix("Y", Y, n_rows=X.shape[0])
    grid, batch, dev = _alpha_grid(alphas), _check_batch(voxel_batch), _device(device)
    scorer = _check_selection(selection)
    splits = bootstrap_splits(X.shape[0], n_boots, chunk_len, held_frac, seed, segments)
    cv_part = 0.8  # share of the progress bar for the CV (the refit is ~1 bootstrap's work)
    scores = _cv_scores(X, Y, splits, grid, batch, dev, sub_progress(progress, 0.0, cv_part), scorer)
    best = np.argmax(scores, axis=0).astype(np.int64)
    chosen = grid[best]
    weights = _weights(X, Y, chosen, batch, dev, sub_progress(progress, cv_part, 1.0))
    return RidgeFit(alphas=chosen, weights=weights, cv_scores=scores, alpha_grid=grid, best_index=best)


class BootstrapRidge:
    """scikit-learn style shell over :func:`bootstrap_ridge` (same parameters and defaults).

    After :meth:`fit`: ``coef_ (n_features, n_voxels)`` float32, ``alphas_ (n_voxels,)``,
    ``cv_scores_ (n_alphas, n_voxels)``, ``best_index_ (n_voxels,)``.
    """

    def __init__(self, alphas=DEFAULT_ALPHAS, n_boots: int = N_BOOTS, chunk_len: int = CHUNK_LEN,
                 held_frac: float = HELD_FRAC, seed: int = 0, voxel_batch: int = VOXEL_BATCH,
                 device=None, selection: str = "corr"):
        self.alphas, self.n_boots, self.chunk_len, self.held_frac = alphas, n_boots, chunk_len, held_frac
        self.seed, self.voxel_batch, self.device, self.selection = seed, voxel_batch, device, selection

    def fit(self, X: np.ndarray, Y: np.ndarray, segments: Optional[Sequence[int]] = None,
            progress: ProgressFn = None) -> "BootstrapRidge":
        """Fit on ``X (n_trs, n_features)``, ``Y (n_trs, n_voxels)``; returns ``self``."""
        fit = bootstrap_ridge(X, Y, self.alphas, self.n_boots, self.chunk_len, self.held_frac,
                              self.seed, segments, self.voxel_batch, self.device, progress,
                              self.selection)
        self.coef_, self.alphas_ = fit.weights, fit.alphas
        self.cv_scores_, self.best_index_ = fit.cv_scores, fit.best_index
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """``(n_trs, n_voxels)`` float32 predictions ``X @ coef_``."""
        if not hasattr(self, "coef_"):
            raise ConfigError("BootstrapRidge is not fitted yet; call fit(X, Y) first")
        X = _matrix("X", X)
        if X.shape[1] != self.coef_.shape[0]:
            raise DataError(f"X has {X.shape[1]} features but the model was fit on "
                            f"{self.coef_.shape[0]}")
        return X.astype(np.float32, copy=False) @ self.coef_

    def score(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """``(n_voxels,)`` Pearson r between :meth:`predict` ``(X)`` and ``Y`` (NaN if constant)."""
        from core.encoding.scores import pearson_columns

        return pearson_columns(self.predict(X), Y)
