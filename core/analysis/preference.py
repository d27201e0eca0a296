"""Semantic-vs-phonetic preference of a speech model's layers (paper evaluation 4).

Moussa, Klakow & Toneva (ICLR 2025) report that brain-tuned layers "prefer semantic over phonetic
information"; the released code does not contain this analysis (``paper-method.md``, Evaluation 4),
so it is defined here.

Definition (per layer ``L``)
----------------------------
Inputs, per story, at TR resolution (the TR pipeline: Lanczos-resampled to the story's TR stamps,
kept only at stamps inside the story's audio, ``0 ≤ t ≤ duration``):

- ``X``: the layer's features ``(n_trs, hidden)``;
- semantic targets ``S``: word-embedding features (``semantic:minilm``: the sum of the MiniLM
  vectors of the words around each TR, Lanczos-weighted) ``(n_trs, 384)``;
- phonetic targets ``P``: phone-identity rates (``lowlevel:phonemes``: the Lanczos-weighted count
  of each of the 39 ARPAbet phones around each TR) ``(n_trs, 39)``.

Every array is z-scored per story and column (as encoding designs and responses are). For each
held-out story (leave-one-story-out folds, so nothing of a story is seen when it is predicted), a
ridge regression ``X → S`` (and ``X → P``) is fitted on the other stories, with one alpha per target
column chosen by the project's chunked bootstrap CV (:func:`core.encoding.ridge.bootstrap_ridge`:
20-TR chunks kept inside the training stories, 3 bootstraps, selection by held-out r). That is the
encoding model's own estimator — why it and not ``sklearn.linear_model.RidgeCV``: RidgeCV's
efficient leave-one-*row*-out criterion picks too small an alpha on autocorrelated TR series, and a
single estimator for encodings and this analysis keeps the two comparable. The held-out story is
predicted, the out-of-fold predictions of all stories are pooled, and per target column the Pearson
r between prediction and target over all pooled TRs is computed:

    semantic_r(L) = mean over semantic columns of r,    phonetic_r(L) = same for phonetic columns,
    preference(L) = semantic_r(L) − phonetic_r(L)       (> 0: the layer prefers semantics).

Columns constant over the pooled TRs (e.g. a phone that never occurs) have no r and are left out
of the mean (they are counted in ``n_targets_used``).

Confidence interval: a paired bootstrap of the pooled out-of-fold predictions — ``n_boot`` (1000)
resamples with replacement of contiguous blocks of ``block_len`` (20) TRs cut inside stories
(``ci_unit="block"``, the default), or of whole stories (``ci_unit="story"``; coarse with few
stories). Each resample recomputes both mean r's from the same rows and their difference; the CI is
the 2.5–97.5 percentile interval of that difference. Seeded (``seed``): the same call gives the same
interval. Blocks (not single TRs) keep the within-block autocorrelation; the fitted models are not
refitted per resample (the CI is over the evaluation data, not over training-set variability).
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

from core.errors import ConfigError, DataError

DEFAULT_ALPHAS = np.logspace(-1, 5, 13)  #: feature→feature ridge needs a wider grid than encodings
CI_UNITS = ("block", "story")
CODE_TAG = "preference-v1"  #: bump when the definition changes


def zscore(a: np.ndarray) -> np.ndarray:
    """Columns of ``a`` z-scored (constant columns → 0), float32."""
    a = np.asarray(a, dtype=np.float64)
    sd = a.std(axis=0)
    return ((a - a.mean(axis=0)) / np.where(sd > 0, sd, 1.0)).astype(np.float32)


def _check(name: str, blocks: Sequence[np.ndarray], lengths: Optional[list] = None) -> list:
    out = [np.asarray(b, dtype=np.float32) for b in blocks]
    if not out:
        raise DataError(f"{name}: no stories given; preference needs at least 2 stories")
    for i, b in enumerate(out):
        if b.ndim != 2 or not np.all(np.isfinite(b)):
            raise DataError(f"{name}: story {i} has shape {b.shape} or non-finite values; need a finite "
                            "(n_trs, n_features) array per story")
        if lengths is not None and b.shape[0] != lengths[i]:
            raise DataError(f"{name}: story {i} has {b.shape[0]} rows but the features have {lengths[i]}; "
                            "every target must be at the same TRs as the features")
    return out


def out_of_fold_predictions(X: Sequence[np.ndarray], Y: Sequence[np.ndarray], alphas=DEFAULT_ALPHAS,
                            seed: int = 0, device=None, ridge=None) -> list:
    """Leave-one-story-out ridge predictions of ``Y`` from ``X``.

    ``X``, ``Y``: per story ``(n_i, p)`` and ``(n_i, q)``, already z-scored. ``ridge(Xtr, Ytr,
    segments)`` → weights ``(p, q)`` may replace the default (:func:`bootstrap_ridge` with
    ``alphas``; one alpha per target column). Returns per story the ``(n_i, q)`` predictions of the
    model fitted on the other stories.
    """
    from core.encoding.ridge import bootstrap_ridge

    if len(X) < 2:
        raise DataError(f"preference needs at least 2 stories for held-out folds, got {len(X)}")
    if ridge is None:
        def ridge(xt, yt, segments):
            return bootstrap_ridge(xt, yt, alphas=alphas, seed=seed, segments=segments,
                                   device=device).weights
    preds = []
    for i in range(len(X)):
        train = [j for j in range(len(X)) if j != i]
        xt = np.concatenate([X[j] for j in train])
        yt = np.concatenate([Y[j] for j in train])
        w = ridge(xt, yt, [X[j].shape[0] for j in train])
        preds.append((X[i] @ w).astype(np.float32))
    return preds


def column_r(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r per column ``(q,)`` float64; NaN where either column is constant."""
    p = np.asarray(pred, np.float64) - np.mean(pred, axis=0)
    t = np.asarray(y, np.float64) - np.mean(y, axis=0)
    den = np.sqrt((p * p).sum(0) * (t * t).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-12, (p * t).sum(0) / np.where(den > 0, den, 1.0), np.nan)


def _mean_r(pred: np.ndarray, y: np.ndarray) -> float:
    r = column_r(pred, y)
    return float(np.nanmean(r)) if np.any(np.isfinite(r)) else float("nan")


def _resample_units(lengths: Sequence[int], unit: str, block_len: int) -> list:
    """Row-index arrays of the resampling units (blocks inside stories, or stories)."""
    units, start = [], 0
    for n in lengths:
        if unit == "story":
            units.append(np.arange(start, start + n))
        else:
            for b in range(0, n, block_len):
                units.append(np.arange(start + b, start + min(b + block_len, n)))
        start += n
    return units


def bootstrap_ci(sem_pred, sem_y, phon_pred, phon_y, lengths: Sequence[int], unit: str = "block",
                 block_len: int = 20, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple:
    """Percentile CI of ``mean r(sem) − mean r(phon)`` under a paired resampling of units of rows
    (pooled arrays; ``lengths`` = rows per story). Returns ``(lo, hi, boot)``."""
    if unit not in CI_UNITS:
        raise ConfigError(f"ci_unit {unit!r} is not one of {', '.join(CI_UNITS)}")
    if int(block_len) < 2 or int(n_boot) < 10:
        raise ConfigError(f"block_len={block_len} (≥ 2) or n_boot={n_boot} (≥ 10) is too small")
    units = _resample_units(lengths, unit, int(block_len))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 4]))
    boot = np.empty(int(n_boot))
    for b in range(int(n_boot)):
        rows = np.concatenate([units[k] for k in rng.integers(len(units), size=len(units))])
        boot[b] = _mean_r(sem_pred[rows], sem_y[rows]) - _mean_r(phon_pred[rows], phon_y[rows])
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.nanpercentile(boot, [tail, 100.0 - tail])
    return float(lo), float(hi), boot


def layer_preference(X: Sequence[np.ndarray], semantic: Sequence[np.ndarray],
                     phonetic: Sequence[np.ndarray], alphas=DEFAULT_ALPHAS, ci_unit: str = "block",
                     block_len: int = 20, n_boot: int = 1000, seed: int = 0, device=None,
                     ridge=None, return_boot: bool = False) -> Dict[str, object]:
    """Preference of one layer from per-story arrays (see the module docstring).

    Parameters
    ----------
    X : per story ``(n_i, hidden)`` layer features at TR resolution.
    semantic, phonetic : per story ``(n_i, q_sem)`` / ``(n_i, q_phon)`` targets at the same TRs.
    alphas : ridge alpha grid (one alpha per target column, chunked bootstrap CV).
    ci_unit, block_len, n_boot, seed : bootstrap CI (blocks of ``block_len`` TRs, or stories).
    ridge : optional ``ridge(X, Y, segments) → (p, q)`` weights replacing the default estimator.
    return_boot : also return the bootstrap distribution under ``"boot"`` ``(n_boot,)``.

    Returns
    -------
    ``{"semantic_r", "phonetic_r", "preference", "ci": [lo, hi], "n_trs", "n_stories",
    "n_targets_used": {"semantic", "phonetic"}}``.
    """
    X = _check("features", X)
    lengths = [x.shape[0] for x in X]
    S = _check("semantic targets", semantic, lengths)
    P = _check("phonetic targets", phonetic, lengths)
    X, S, P = [zscore(x) for x in X], [zscore(s) for s in S], [zscore(p) for p in P]
    sem_pred = np.concatenate(out_of_fold_predictions(X, S, alphas, seed, device, ridge))
    phon_pred = np.concatenate(out_of_fold_predictions(X, P, alphas, seed, device, ridge))
    s_all, p_all = np.concatenate(S), np.concatenate(P)
    r_sem, r_phon = column_r(sem_pred, s_all), column_r(phon_pred, p_all)
    if not np.any(np.isfinite(r_sem)) or not np.any(np.isfinite(r_phon)):
        raise DataError("semantic or phonetic targets are constant over all TRs: no correlation to "
                        "compute; check the dataset's word and phone timings")
    sem_r, phon_r = float(np.nanmean(r_sem)), float(np.nanmean(r_phon))
    lo, hi, boot = bootstrap_ci(sem_pred, s_all, phon_pred, p_all, lengths, ci_unit, block_len, n_boot, seed)
    out = {"semantic_r": sem_r, "phonetic_r": phon_r, "preference": sem_r - phon_r, "ci": [lo, hi],
            "n_trs": int(sum(lengths)), "n_stories": len(lengths),
            "n_targets_used": {"semantic": int(np.isfinite(r_sem).sum()),
                               "phonetic": int(np.isfinite(r_phon).sum())}}
    if return_boot:
        out["boot"] = boot
    return out
