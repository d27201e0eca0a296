"""Low-level impact (paper Evaluation 2): how much of a model's brain alignment rests on low-level
features. ``/work/shared/reference/paper-method.md``, "Evaluation 2" and the released-code facts.

1. :func:`residualize` — cross-validated ridge predicting the model's features from the low-level
   features; keep ``features − prediction`` (the part the low-level spaces cannot linearly explain).
2. Refit the encoding model on the residual (``core.pipelines.lowlevel_impact``).
3. :func:`percent_drop` ``(a_full − a_resid) / a_full · 100`` per voxel, and :func:`region_drop`
   per ROI / ROI group (the drop of the region means, as the paper reports per ROI).

Cross-validation (released code: 10-fold CV ridge, λ from 1e-6 to 1e9):

- **outer folds**: by story when there are at least :data:`MIN_STORY_FOLDS` (3) stories —
  ``min(n_folds, n_stories)`` folds of consecutive stories (``np.array_split`` of the story list in
  the given order), so no fold's prediction is fit on rows of its own story (TR rows are
  autocorrelated); with fewer stories, ``n_folds`` contiguous blocks of the concatenated rows;
- **per fold**: the low-level columns are standardised with the training rows' mean and standard
  deviation (``StandardScaler``; spaces with different units then share one penalty), and
  ``sklearn.linear_model.RidgeCV(alphas, alpha_per_target=True)`` (with intercept) picks one alpha
  **per model feature** by efficient leave-one-out (generalised) CV on the training rows, refits on
  all of them and predicts the held-out rows. RidgeCV is the well-kept library for exactly this
  (closed-form LOO over the whole grid from one SVD) — no hand-written ridge. Every row is
  predicted once, by a model that never saw it.

Numerically explained features: where, in a story, a residual column's variance is at most
``tol`` (1e-6) times the feature's own variance, the low-level spaces explain it to rounding
precision and the column is set to 0 for that story. Otherwise the encoding design's per-story
z-scoring would scale the rounding-level leftover (the ridge's shrinkage leaves ``ε · feature``)
back up to a copy of the feature — a feature that IS a linear function of the removed spaces would
then seem to survive its removal.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from core.errors import ConfigError, DataError

DEFAULT_ALPHAS = np.logspace(-6, 9, 16)  #: released code: λ 1e-6 … 1e9
N_FOLDS = 10  #: released code: 10-fold
MIN_STORY_FOLDS = 3  #: fewer stories than this → contiguous row folds
TOL = 1e-6  #: relative residual variance treated as fully explained (module docstring)


def cv_folds(n_rows: Sequence[int], n_folds: int = N_FOLDS) -> list:
    """Held-out row indices of each outer fold over stories of ``n_rows`` rows each (module docstring).

    Returns
    -------
    list of ``(test_rows (k,) int64, story_indices list)``; ``story_indices`` is empty for row folds.
    """
    n_rows = [int(n) for n in n_rows]
    if int(n_folds) != n_folds or n_folds < 2:
        raise ConfigError(f"residualisation needs n_folds >= 2, got {n_folds!r}")
    starts = np.concatenate([[0], np.cumsum(n_rows)])
    total = int(starts[-1])
    if len(n_rows) >= MIN_STORY_FOLDS:
        groups = np.array_split(np.arange(len(n_rows)), min(int(n_folds), len(n_rows)))
        return [(np.concatenate([np.arange(starts[i], starts[i + 1]) for i in g]).astype(np.int64),
                 [int(i) for i in g]) for g in groups]
    if total < 2 * n_folds:
        raise DataError(f"{total} feature rows are too few for {n_folds} contiguous folds; give more "
                        f"stories or fewer folds")
    return [(rows.astype(np.int64), []) for rows in np.array_split(np.arange(total), int(n_folds))]


def _check(model_feats: Mapping, lowlevel_feats: Mapping, stories: Sequence[str]) -> tuple:
    if not stories:
        raise ConfigError("residualise needs at least one story")
    lack_m = [s for s in stories if s not in model_feats]
    lack_l = [s for s in stories if s not in lowlevel_feats]
    if lack_m or lack_l:
        raise DataError(f"features to residualise and low-level features must cover the same stories: "
                        f"model features lack {lack_m}, low-level features lack {lack_l}")
    xs, ys = [], []
    for s in stories:
        y = np.asarray(model_feats[s], dtype=np.float64)
        x = np.asarray(lowlevel_feats[s], dtype=np.float64)
        if y.ndim != 2 or x.ndim != 2 or len(x) != len(y):
            raise DataError(f"story {s!r}: model features {y.shape} and low-level features {x.shape} "
                            f"must be 2-D with the same rows (features of the same TR stamps)")
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise DataError(f"story {s!r}: features to residualise contain NaN or inf")
        xs.append(x)
        ys.append(y)
    if len({y.shape[1] for y in ys}) > 1 or len({x.shape[1] for x in xs}) > 1:
        raise DataError("every story must have the same number of model and of low-level features")
    return xs, ys


def cv_predict(model_feats: Mapping[str, np.ndarray], lowlevel_feats: Mapping[str, np.ndarray],
               stories: Sequence[str], alphas=DEFAULT_ALPHAS, n_folds: int = N_FOLDS) -> tuple:
    """Cross-validated ridge prediction of the model features from the low-level features.

    Returns
    -------
    ``(prediction {story: (n, p) float64}, info)`` with ``info = {"folds": [test rows], "fold_stories":
    [[story, ...]], "alphas": (n_folds, p) chosen alphas}``.
    """
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    stories = list(stories)
    grid = np.asarray(alphas, dtype=np.float64).ravel()
    if grid.size == 0 or not np.all(np.isfinite(grid) & (grid > 0)):
        raise ConfigError(f"ridge alphas must be positive and finite, got {grid.tolist()}")
    xs, ys = _check(model_feats, lowlevel_feats, stories)
    x, y = np.concatenate(xs), np.concatenate(ys)
    folds = cv_folds([len(a) for a in xs], n_folds)
    pred = np.empty_like(y)
    chosen = []
    for test, _ in folds:
        train = np.setdiff1d(np.arange(len(x)), test, assume_unique=True)
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=grid, alpha_per_target=True))
        model.fit(x[train], y[train])
        pred[test] = model.predict(x[test]).reshape(len(test), -1)
        chosen.append(np.broadcast_to(model[-1].alpha_, (y.shape[1],)).astype(np.float64))
    starts = np.concatenate([[0], np.cumsum([len(a) for a in xs])])
    out = {s: pred[starts[i]:starts[i + 1]] for i, s in enumerate(stories)}
    info = {"folds": [t for t, _ in folds], "fold_stories": [[stories[i] for i in g] for _, g in folds],
            "alphas": np.stack(chosen)}
    return out, info


def residualize(model_feats: Mapping[str, np.ndarray], lowlevel_feats: Mapping[str, np.ndarray],
                stories: Optional[Sequence[str]] = None, alphas=DEFAULT_ALPHAS,
                n_folds: int = N_FOLDS, tol: float = TOL) -> dict:
    """Model features minus their cross-validated ridge prediction from the low-level features.

    Parameters
    ----------
    model_feats : story → ``(n_stamps, p)`` features of one layer (at TR stamps).
    lowlevel_feats : story → ``(n_stamps, q)`` low-level features at the same stamps (several
        spaces concatenated along columns).
    stories : the stories to use (default: those of ``model_feats``), all folded together.
    alphas : ridge grid (default ``logspace(-6, 9, 16)``, the released range).
    n_folds : outer folds (default 10; by story when there are ≥ 3 stories — module docstring).
    tol : per story, residual columns with ``var ≤ tol · var(feature)`` become 0 (module docstring).

    Returns
    -------
    ``{story: (n_stamps, p) float32}`` residuals.
    """
    stories = list(model_feats) if stories is None else list(stories)
    pred, _ = cv_predict(model_feats, lowlevel_feats, stories, alphas, n_folds)
    out = {}
    for s in stories:
        y = np.asarray(model_feats[s], dtype=np.float64)
        r = y - pred[s]
        r[:, r.var(axis=0) <= tol * y.var(axis=0)] = 0.0
        out[s] = r.astype(np.float32)
    return out


def percent_drop(a_full, a_resid) -> np.ndarray:
    """``(a_full − a_resid) / a_full · 100`` element-wise, float64.

    NaN where ``a_full`` is not finite or ``≤ 0`` (a drop relative to no alignment is undefined) or
    ``a_resid`` is not finite. 100 % = the residual features predict nothing; negative = the
    residual predicts better than the full features.
    """
    full = np.asarray(a_full, dtype=np.float64)
    resid = np.asarray(a_resid, dtype=np.float64)
    if full.shape != resid.shape:
        raise DataError(f"percent_drop needs scores of the same voxels, got {full.shape} and {resid.shape}")
    ok = np.isfinite(full) & np.isfinite(resid) & (full > 0)
    out = np.full(full.shape, np.nan)
    out[ok] = (full[ok] - resid[ok]) / full[ok] * 100.0
    return out


def region_drop(a_full, a_resid, masks: Mapping[str, np.ndarray]) -> dict:
    """Per region: ``{"full", "resid", "drop_percent", "n_voxels"}``.

    ``full`` / ``resid`` are the means of the per-voxel scores over the region's voxels scored in
    both (finite), and ``drop_percent`` is :func:`percent_drop` **of those means** (not the mean of
    per-voxel drops, which explodes on voxels with a tiny ``a_full``). NaN when no voxel is scored.
    """
    full = np.asarray(a_full, dtype=np.float64)
    resid = np.asarray(a_resid, dtype=np.float64)
    both = np.isfinite(full) & np.isfinite(resid)
    out = {}
    for name, mask in masks.items():
        sel = both & np.asarray(mask, dtype=bool)
        n = int(sel.sum())
        mf = float(full[sel].mean()) if n else float("nan")
        mr = float(resid[sel].mean()) if n else float("nan")
        out[name] = {"full": mf, "resid": mr, "drop_percent": float(percent_drop(mf, mr)), "n_voxels": n}
    return out
