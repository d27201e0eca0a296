"""Variance partitioning per voxel between two feature spaces (banded ridge, himalaya).

Definition (set-theoretic partition, de Heer et al. 2017; Lescroart et al. 2015; this project's
extension of the paper, ``/work/shared/reference/paper-method.md`` has no partitioning):

- Three encoding models per voxel, all fitted on the training stories and scored on the test story:
  the *joint* model of spaces A and B, a banded ridge (``himalaya.ridge.BandedRidgeCV``,
  ``solver="random_search"``) whose per-band regularisation ``alpha / gamma_i`` is chosen per voxel by
  cross-validation over ``gammas`` on the simplex × ``alphas``; and each space *alone*, a plain ridge of
  the same family (``himalaya.ridge.RidgeCV``, one alpha per voxel over the same ``alphas``). The
  cross-validation splits are this project's chunked bootstrap splits
  (:func:`core.encoding.ridge.bootstrap_splits`: ``n_boots`` × held-out 20-TR chunks). Alphas are on
  himalaya's scale (``(XᵀX + α I)``; HuthLab's ``α_H`` corresponds to ``α = α_H²``).
- Score: the coefficient of determination on the test story against the mean of its repeats,
  ``R² = 1 − Σ_t (ȳ_t − ŷ_t)² / Σ_t (ȳ_t − mean_t ȳ)²`` (can be negative).
- Partition: ``unique_A = R²_AB − R²_B``, ``unique_B = R²_AB − R²_A``,
  ``shared = R²_A + R²_B − R²_AB``.
- Preference: ``(unique_A − unique_B) / (|unique_A| + |unique_B| + eps)`` in ``[−1, 1]``:
  > 0 prefers A (e.g. semantic), < 0 prefers B (e.g. acoustic); ``eps`` (1e-6) keeps voxels
  explained by neither near 0.

Exactly two spaces (A, B): the set-theoretic partition of N > 2 spaces has 2^N − 1 parts and is not
what the preference map needs; :func:`partition_arrays` says so in a one-line error.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence, Tuple

import numpy as np

from core.errors import ConfigError, DataError
from core.progress import ProgressFn, report

#: himalaya-scale ridge grid (``(XᵀX + α I)``): covers HuthLab's logspace(1, 4)² = 1e2..1e8 and below
PARTITION_ALPHAS = tuple(np.logspace(-2, 8, 21).tolist())
#: band weights on the simplex tried by the joint fit: 0 / 1-ish corners, the middle and in between
N_GAMMAS = 11
EPS = 1e-6  #: preference denominator guard
VOXEL_BATCH = 2048  #: voxels per himalaya call (memory bound, not a result)


def band_gammas(n_gammas: int = N_GAMMAS) -> np.ndarray:
    """``(n_gammas, 2)`` band weights ``(w, 1 − w)`` with ``w`` evenly spaced in ``[0.01, 0.99]``
    (so one band can be all but switched off, and ``(0.5, 0.5)`` is included when n is odd)."""
    if int(n_gammas) < 1:
        raise ConfigError(f"n_gammas must be >= 1, got {n_gammas}")
    w = np.linspace(0.01, 0.99, int(n_gammas)) if n_gammas > 1 else np.array([0.5])
    return np.stack([w, 1.0 - w], axis=1)


def r2_columns(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-column ``R² = 1 − SS_res / SS_tot`` (``SS_tot`` about the column mean), float64;
    NaN where the column of ``y`` is constant."""
    pred, y = np.asarray(pred, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if pred.shape != y.shape or y.ndim != 2:
        raise DataError(f"r2_columns needs two (n_trs, n_voxels) arrays of one shape, got {pred.shape} "
                        f"and {y.shape}")
    ss_res = ((y - pred) ** 2).sum(0)
    ss_tot = ((y - y.mean(0)) ** 2).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0), np.nan)


def partition_scores(r2_a: np.ndarray, r2_b: np.ndarray, r2_ab: np.ndarray, eps: float = EPS) -> dict:
    """The set-theoretic partition and preference index from the three R² maps (module docstring)."""
    r2_a, r2_b, r2_ab = (np.asarray(x, dtype=np.float64) for x in (r2_a, r2_b, r2_ab))
    ua, ub = r2_ab - r2_b, r2_ab - r2_a
    shared = r2_a + r2_b - r2_ab
    pref = (ua - ub) / (np.abs(ua) + np.abs(ub) + eps)
    return {"unique_a": ua, "unique_b": ub, "shared": shared, "preference": pref}


def _to_numpy(a) -> np.ndarray:
    from himalaya.backend import get_backend

    return np.asarray(get_backend().to_numpy(a))


def fit_banded(xs_train: Sequence[np.ndarray], y_train: np.ndarray, xs_test: Sequence[np.ndarray],
               alphas=PARTITION_ALPHAS, gammas: Optional[np.ndarray] = None, splits=None) -> dict:
    """Banded ridge of several spaces (``himalaya.ridge.BandedRidgeCV``, random search over the given
    ``gammas`` × ``alphas``) → ``{"prediction" (n_test, n_voxels), "deltas" (n_spaces, n_voxels),
    "alphas" (n_voxels,)}`` (``alphas = 1 / Σ exp(deltas)``: the overall penalty)."""
    from himalaya.ridge import BandedRidgeCV

    gammas = band_gammas() if gammas is None else np.asarray(gammas, dtype=np.float64)
    model = BandedRidgeCV(groups="input", solver="random_search", cv=splits if splits is not None else 5,
                          solver_params=dict(n_iter=gammas, alphas=np.asarray(alphas, dtype=np.float64),
                                             progress_bar=False, warn=False))
    model.fit([np.asarray(x) for x in xs_train], np.asarray(y_train))
    pred = _to_numpy(model.predict([np.asarray(x) for x in xs_test]))
    return {"prediction": pred.reshape(pred.shape[0], -1), "deltas": _to_numpy(model.deltas_).reshape(len(xs_train), -1),
            "alphas": _to_numpy(model.best_alphas_).ravel()}


def fit_single(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, alphas=PARTITION_ALPHAS,
               splits=None) -> dict:
    """Ridge of one space with one alpha per voxel by CV (``himalaya.ridge.RidgeCV``) →
    ``{"prediction", "alphas"}``."""
    from himalaya.ridge import RidgeCV

    model = RidgeCV(alphas=np.asarray(alphas, dtype=np.float64), cv=splits if splits is not None else 5,
                    solver_params=dict(warn=False))
    model.fit(np.asarray(x_train), np.asarray(y_train))
    pred = _to_numpy(model.predict(np.asarray(x_test)))
    return {"prediction": pred.reshape(pred.shape[0], -1), "alphas": _to_numpy(model.best_alphas_).ravel()}


def partition_arrays(designs: Mapping[str, Tuple[np.ndarray, np.ndarray]], y_train: np.ndarray,
                     y_test: np.ndarray, valid: Optional[np.ndarray] = None, alphas=PARTITION_ALPHAS,
                     gammas: Optional[np.ndarray] = None, n_boots: int = 3, chunk_len: int = 20,
                     held_frac: float = 0.25, seed: int = 0, voxel_batch: int = VOXEL_BATCH,
                     progress: ProgressFn = None) -> dict:
    """Variance partitioning of two spaces on arrays.

    Parameters
    ----------
    designs : ``{space_a: (x_train, x_test), space_b: (x_train, x_test)}`` in that order (A first:
        the preference is > 0 for A), delayed z-scored designs.
    y_train : ``(n_train, n_voxels)`` z-scored training responses.
    y_test : ``(n_test, n_voxels)`` the test target (mean of the test repeats).
    valid : ``(n_voxels,)`` bool, voxels to fit (others NaN).
    alphas, gammas : himalaya-scale ridge grid and ``(n, 2)`` band weights (:func:`band_gammas`).
    n_boots, chunk_len, held_frac, seed : the CV splits (:func:`core.encoding.ridge.bootstrap_splits`).

    Returns
    -------
    ``{"r2_a", "r2_b", "r2_joint", "unique_a", "unique_b", "shared", "preference", "alpha_a",
    "alpha_b", "alpha_joint", "gamma_a"}`` each ``(n_voxels,)`` float32 (NaN outside ``valid``);
    ``gamma_a`` is A's share of the joint model's band weights ``exp(δ_A) / Σ exp(δ)``.
    """
    from core.encoding.ridge import bootstrap_splits

    names = list(designs)
    if len(names) != 2:
        raise ConfigError(f"variance partitioning takes exactly two feature spaces (A,B), got {len(names)}: "
                          f"{', '.join(names) or 'none'}")
    y_train, y_test = np.asarray(y_train, dtype=np.float32), np.asarray(y_test, dtype=np.float32)
    if y_train.ndim != 2 or y_test.ndim != 2 or y_train.shape[1] != y_test.shape[1]:
        raise DataError(f"y_train {y_train.shape} and y_test {y_test.shape} must be (n_trs, n_voxels) with "
                        f"the same voxels")
    n_vox = y_train.shape[1]
    valid = np.ones(n_vox, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    if valid.shape != (n_vox,) or not valid.any():
        raise DataError(f"valid must be a ({n_vox},) mask with at least one voxel")
    xs_tr, xs_te = [], []
    for name in names:
        x_tr, x_te = (np.asarray(x, dtype=np.float32) for x in designs[name])
        if x_tr.shape[0] != y_train.shape[0] or x_te.shape[0] != y_test.shape[0] or x_tr.shape[1] != x_te.shape[1]:
            raise DataError(f"space {name}: designs {x_tr.shape}/{x_te.shape} do not match responses "
                            f"{y_train.shape}/{y_test.shape}")
        xs_tr.append(x_tr)
        xs_te.append(x_te)
    splits = bootstrap_splits(y_train.shape[0], n_boots, chunk_len, held_frac, seed)
    idx = np.flatnonzero(valid)
    keys = ("r2_a", "r2_b", "r2_joint", "alpha_a", "alpha_b", "alpha_joint", "gamma_a")
    out = {k: np.full(n_vox, np.nan) for k in keys}
    batches = [idx[i:i + voxel_batch] for i in range(0, len(idx), max(1, int(voxel_batch)))]
    for b, sel in enumerate(batches):
        report(progress, b / len(batches), f"banded ridge, voxels {sel[0]}–{sel[-1]}")
        ytr, yte = y_train[:, sel], y_test[:, sel]
        for k, i in (("a", 0), ("b", 1)):
            fit = fit_single(xs_tr[i], ytr, xs_te[i], alphas, splits)
            out[f"r2_{k}"][sel] = r2_columns(fit["prediction"], yte)
            out[f"alpha_{k}"][sel] = fit["alphas"]
        joint = fit_banded(xs_tr, ytr, xs_te, alphas, gammas, splits)
        out["r2_joint"][sel] = r2_columns(joint["prediction"], yte)
        out["alpha_joint"][sel] = joint["alphas"]
        w = np.exp(joint["deltas"].astype(np.float64))
        out["gamma_a"][sel] = w[0] / w.sum(0)
    report(progress, 1.0, "partitioned")
    out.update(partition_scores(out["r2_a"], out["r2_b"], out["r2_joint"]))
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}
