"""Ridge initialisation of the brain-tuning head (issue 9 §1, an option; the paper uses zeros).

:func:`ridge_head` fits, on the **pretrained** backbone, the linear map the head will start from:

1. pooled features ``P (n_samples, hidden)`` of every training sample (``model.pooled``, eval mode:
   no SpecAugment / dropout, no gradients, fp32), in the split's order;
2. standardised with the column mean ``μ`` and std ``σ`` (ddof 0; a constant column gets σ = 1) of
   ``P``: ``X = (P − μ) / σ``;
3. targets ``Y`` = the split's targets (z-scored per story), centred by their column mean ``ȳ``
   (0 for z-scored stories; not exactly 0 under the random-story control's padding);
4. :func:`core.encoding.ridge.bootstrap_ridge` with its defaults (alphas ``logspace(1, 4, 15)``,
   3 bootstraps, 25 % of chunks held out, alpha per target by held-out r; HuthLab's alpha scale,
   ``W = (XᵀX + α² I)⁻¹ XᵀY``), with chunks kept inside stories (``segments``). The paper's 20-row
   chunks need enough rows: when the training stories give fewer than :data:`MIN_CHUNKS` chunks of
   20, the chunk length is the largest one in ``CHUNK_LEN − 1 … 2`` that gives ``MIN_CHUNKS``
   (or, failing that, at least 2) chunks; fewer than 2 chunks of 2 rows → :class:`ConfigError`.
   The report records the chunk length used;
5. mapped back to the raw pooled scale so that ``head(P) = X Wz + ȳ`` (the ridge prediction):
   ``weights = Wz / σ[:, None]``, ``bias = ȳ − (μ / σ) Wz``.

This is the same as scikit-learn's ``Ridge(alpha=α², fit_intercept=True)`` on ``X`` (centred) and
``Y`` with the chosen alphas, which the tests check.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from core.encoding.ridge import CHUNK_LEN, DEFAULT_ALPHAS, HELD_FRAC, bootstrap_ridge
from core.errors import ConfigError
from core.progress import ProgressFn, report, sub_progress

MIN_CHUNKS = 4  #: chunks wanted before the paper's 20-row chunk length is shortened


def pooled_features(model, split, batch: int = 8, progress: ProgressFn = None) -> np.ndarray:
    """``(len(split), hidden)`` float32 pooled features of ``split``'s samples (eval, no grad)."""
    if int(batch) < 1:
        raise ConfigError(f"batch={batch!r} must be ≥ 1")
    n = len(split)
    if n < 1:
        raise ConfigError("the ridge head needs training samples; the split is empty")
    was = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for start in range(0, n, int(batch)):
                idx = range(start, min(start + int(batch), n))
                x = torch.from_numpy(np.stack([split.waveform(j) for j in idx]))
                out.append(model.pooled(x).float().cpu().numpy())
                report(progress, idx.stop / n, f"pooled features {idx.stop}/{n}")
    finally:
        model.train(was)
    return np.concatenate(out).astype(np.float32)


def chunk_len_for(segments, chunk_len: int = CHUNK_LEN, min_chunks: int = MIN_CHUNKS) -> int:
    """The paper's ``chunk_len`` when ``segments`` (rows per story) give ≥ ``min_chunks`` chunks of
    it, else the largest shorter length that does (then one that gives ≥ 2); see the module."""
    segs = [int(s) for s in segments]
    count = lambda c: sum(s // c for s in segs)  # noqa: E731
    if count(chunk_len) >= min_chunks:
        return int(chunk_len)
    for need in (min_chunks, 2):
        for c in range(int(chunk_len) - 1, 1, -1):
            if count(c) >= need:
                return c
    raise ConfigError(f"the ridge head needs ≥ 2 chunks of ≥ 2 training rows for its cross-validation; "
                      f"the training stories have {sum(segs)} rows ({segs}); use head_init zeros or random")


def ridge_head(model, split, alphas=None, batch: int = 8, progress: ProgressFn = None, seed: int = 0,
               full: bool = False):
    """Ridge weights for ``model``'s head from its pretrained pooled features on ``split``.

    Parameters
    ----------
    model : :class:`core.tuning.model.BrainTuningModel` (pretrained backbone; the head is unused).
    split : :class:`core.tuning.samples.TuningSplit` (the training samples; targets as trained on).
    alphas : ridge grid (default ``bootstrap_ridge``'s, the paper's ``logspace(1, 4, 15)``).
    batch : samples per forward pass (memory only). seed : bootstrap seed.
    full : also put the per-target alphas (``"alphas"``, a list) in the report (off by default: one
        number per voxel would bloat ``summary.json``).

    Returns
    -------
    ``(weights (hidden, n_targets) float32, bias (n_targets,) float32, report)`` with ``head(pooled)
    = pooled @ weights + bias`` equal to the ridge prediction; ``report`` (JSON-able): ``n_samples``,
    ``hidden``, ``n_targets``, ``chunk_len``, ``alpha_grid``, ``alpha_median``, ``alpha_counts``
    (alpha → number of targets), ``cv_r_mean`` (mean over targets of the chosen alpha's held-out r),
    ``train_r_mean`` (mean in-sample r).
    """
    P = pooled_features(model, split, batch, sub_progress(progress, 0.0, 0.8)).astype(np.float64)
    Y = np.concatenate([st.targets for st in split._stories]).astype(np.float64)
    segments = [len(st.targets) for st in split._stories]
    mu, sd = P.mean(0), P.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    X = (P - mu) / sd
    ybar = Y.mean(0)
    c = chunk_len_for(segments)
    grid = DEFAULT_ALPHAS if alphas is None else alphas
    fit = bootstrap_ridge(X.astype(np.float32), (Y - ybar).astype(np.float32), alphas=grid, chunk_len=c,
                          held_frac=HELD_FRAC, seed=seed, segments=segments,
                          progress=sub_progress(progress, 0.8, 1.0))
    wz = fit.weights.astype(np.float64)
    weights = (wz / sd[:, None]).astype(np.float32)
    bias = (ybar - (mu / sd) @ wz).astype(np.float32)
    pred = X @ wz + ybar
    pc, yc = pred - pred.mean(0), Y - Y.mean(0)
    den = np.sqrt((pc ** 2).sum(0) * (yc ** 2).sum(0))
    r = np.where(den > 0, (pc * yc).sum(0) / np.where(den > 0, den, 1.0), 0.0)
    vals, counts = np.unique(fit.alphas, return_counts=True)
    cv_r = fit.cv_scores[fit.best_index, np.arange(Y.shape[1])]
    rep = {"head_init": "ridge", "n_samples": int(P.shape[0]), "hidden": int(P.shape[1]),
           "n_targets": int(Y.shape[1]), "chunk_len": int(c), "segments": segments,
           "alpha_grid": [float(a) for a in fit.alpha_grid], "alpha_median": float(np.median(fit.alphas)),
           "alpha_counts": {f"{a:g}": int(k) for a, k in zip(vals, counts)},
           "cv_r_mean": float(np.mean(cv_r)), "train_r_mean": float(np.mean(r))}
    if full:
        rep["alphas"] = [float(a) for a in fit.alphas]
    report(progress, 1.0, "ridge head fitted")
    return weights, bias, rep


def init_ridge_head(model, split, alphas=None, batch: int = 8, progress: ProgressFn = None,
                    seed: int = 0) -> dict:
    """Fit :func:`ridge_head` and copy it into ``model.head``; returns the report."""
    weights, bias, rep = ridge_head(model, split, alphas, batch, progress, seed)
    set_head(model, weights, bias)
    return rep


def set_head(model, weights: np.ndarray, bias: Optional[np.ndarray] = None) -> None:
    """Copy ``(hidden, n_targets)`` weights (and bias) into ``model.head`` (shape-checked)."""
    model._init_head("ridge", weights, bias, int(model.head.weight.shape[1]))
