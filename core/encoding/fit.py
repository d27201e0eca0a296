"""Fit and score encoding models on arrays: design matrices + responses + repeats → EncodingResult.

The one fit every capability uses (``encode``, tuning evaluation, low-level residuals, variance
partitioning): it knows nothing of datasets or feature sources, only arrays. Per layer: ridge with a
per-voxel alpha from bootstrap CV (:func:`core.encoding.ridge.bootstrap_ridge`), prediction of the
test rows, Pearson r against the mean of the test repeats, the Schoppe noise ceiling and cc_norm,
and ROI / ROI-group means.
"""

from __future__ import annotations

from typing import Mapping, Optional, Tuple

import numpy as np

from core.encoding.params import EncodeParams
from core.encoding.result import EncodingResult, LayerScores, region_table
from core.errors import DataError
from core.progress import ProgressFn, report, sub_progress


def repeat_ceiling(repeats: np.ndarray, params: EncodeParams = EncodeParams(),
                 valid: Optional[np.ndarray] = None) -> np.ndarray:
    """The noise ceiling ``cc_max (n_voxels,)`` float64 of ``params``' protocol from the test repeats
    ``(n_repeats, n_test_trs, n_voxels)`` — rows from ``params.test_start`` on; voxels outside
    ``valid`` are NaN (never read). The one ceiling path (encode, the Data page, tuning targets)."""
    from core.encoding.ceiling import noise_ceiling

    rep = np.asarray(repeats)
    if rep.ndim != 3:
        raise DataError(f"repeats must be (n_repeats, n_trs, n_voxels), got shape {rep.shape}")
    valid = np.ones(rep.shape[2], dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    if rep.shape[1] <= params.test_start + 1:
        raise DataError(f"the test story has {rep.shape[1]} response rows; the {params.protocol} "
                        f"protocol scores it from row {params.test_start} and needs more")
    cc = np.full(rep.shape[2], np.nan)
    undefined = 0.0 if params.protocol == "released" else np.nan
    cc[valid] = noise_ceiling(rep[:, params.test_start:, valid], ddof=params.ceiling_ddof,
                              zscore=params.ceiling_zscore, undefined=undefined)
    return cc


def fit_encoding(designs: Mapping[str, Tuple[np.ndarray, np.ndarray]], y_train: np.ndarray,
                 repeats: np.ndarray, params: EncodeParams = EncodeParams(),
                 valid: Optional[np.ndarray] = None, rois: Optional[Mapping[str, np.ndarray]] = None,
                 roi_groups: Optional[Mapping[str, dict]] = None, subject: str = "",
                 features: str = "", keep_weights: bool = False, keep_predictions: bool = False,
                 cc_max: Optional[np.ndarray] = None, progress: ProgressFn = None) -> EncodingResult:
    """Fit one ridge encoding model per layer and score it on the test story.

    Parameters
    ----------
    designs : layer → ``(x_train (n_train, p), x_test (n_test, p))`` delayed, z-scored designs
        (:func:`core.features.design.design_matrix`).
    y_train : ``(n_train, n_voxels)`` z-scored training responses (all voxels).
    repeats : ``(n_repeats, n_test_rows, n_voxels)`` test-story repeats; rows from
        ``params.test_start`` on are scored (so ``n_test = n_test_rows − test_start``).
    params : :class:`EncodeParams` (ridge grid, bootstraps, selection, ceiling options).
    valid : ``(n_voxels,)`` bool, voxels to fit (default all); others get NaN.
    rois : ROI → ``(n_voxels,)`` bool masks for the summary (default: only ``cortex``).
    roi_groups : ``core.data.roi_groups.group_masks`` output, summarised like ROIs.
    subject, features : recorded in the result.
    keep_weights, keep_predictions : keep the ridge weights / test predictions (memory!).
    cc_max : a precomputed ceiling (default: :func:`repeat_ceiling` of ``repeats``).
    progress : ``progress(fraction, message)``.

    Returns
    -------
    :class:`EncodingResult` whose summary holds everything but ``provenance`` (the caller adds it).
    """
    from core.encoding.ceiling import cc_norm as _cc_norm
    from core.encoding.ridge import bootstrap_ridge
    from core.encoding.scores import pearson_columns

    y_train = np.asarray(y_train)
    repeats = np.asarray(repeats)
    if y_train.ndim != 2 or repeats.ndim != 3 or repeats.shape[2] != y_train.shape[1]:
        raise DataError(f"y_train {y_train.shape} must be (n_train, n_voxels) and repeats "
                        f"{repeats.shape} (n_repeats, n_test, n_voxels) with the same voxels")
    n_vox = y_train.shape[1]
    valid = np.ones(n_vox, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    if valid.shape != (n_vox,):
        raise DataError(f"valid has shape {valid.shape}; expected ({n_vox},)")
    if not valid.any():
        raise DataError("no voxel left to fit (all dropped as NaN or constant)")
    if not designs:
        raise DataError("fit_encoding needs at least one layer design")
    cc_max = repeat_ceiling(repeats, params, valid) if cc_max is None else np.asarray(cc_max, np.float64)
    y_test = repeats[:, params.test_start:, :][:, :, valid].mean(axis=0)
    y_fit = y_train[:, valid]
    rois = dict(rois) if rois else {"cortex": np.ones(n_vox, dtype=bool)}
    group_sel = {g: v["mask"] for g, v in (roi_groups or {}).items()}

    layers, table = {}, {}
    for i, (name, (x_train, x_test)) in enumerate(designs.items()):
        lo, hi = i / len(designs), (i + 1) / len(designs)
        if x_train.shape[0] != y_fit.shape[0]:
            raise DataError(f"layer {name}: design has {x_train.shape[0]} training rows but the "
                            f"responses have {y_fit.shape[0]}")
        if x_test.shape[0] != y_test.shape[0] or x_test.shape[1] != x_train.shape[1]:
            raise DataError(f"layer {name}: test design {x_test.shape} does not match {y_test.shape[0]} "
                            f"test rows and {x_train.shape[1]} features")
        report(progress, lo, f"ridge {name}")
        fit = bootstrap_ridge(x_train, y_fit, alphas=np.asarray(params.alphas), n_boots=params.n_boots,
                              chunk_len=params.chunk_len, held_frac=params.held_frac, seed=params.seed,
                              selection=params.selection, progress=sub_progress(progress, lo, hi))
        pred = np.asarray(x_test, dtype=np.float32) @ fit.weights
        r = np.full(n_vox, np.nan, dtype=np.float32)
        r[valid] = pearson_columns(pred, y_test)
        alpha = np.full(n_vox, np.nan, dtype=np.float32)
        alpha[valid] = fit.alphas
        ccn = _cc_norm(r, cc_max, min_cc_max=params.min_cc_max).astype(np.float32)
        layers[name] = LayerScores(r=r, cc_norm=ccn, alpha=alpha,
                                   weights=fit.weights if keep_weights else None,
                                   prediction=pred if keep_predictions else None)
        groups = region_table(r, ccn, group_sel)
        for g, v in groups.items():
            v["members"] = list(roi_groups[g]["members"])
        table[name] = {"mean_r": nanmean(r), "mean_cc_norm": nanmean(ccn),
                       "roi": region_table(r, ccn, rois), "roi_groups": groups}
    report(progress, 1.0, "scored")
    summary = {"subject": subject, "features": features, "n_voxels": int(valid.sum()),
               "n_voxels_total": int(n_vox), "layers": table}
    return EncodingResult(subject=subject, features=features, cc_max=cc_max, layers=layers,
                          valid=valid, summary=summary)


def nanmean(x: np.ndarray) -> float:
    """Mean of the finite entries of ``x`` (float64); NaN when there is none (no warning)."""
    x = np.asarray(x, dtype=np.float64)
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")
