"""Per-voxel scores and ROI summaries.

Column z-scoring lives in :func:`core.features.design.zscore_columns` (one way to do each thing).
"""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

from core.errors import DataError

#: columns processed at a time in :func:`pearson_columns` (memory bound, not a result)
COLUMN_BATCH = 8192


def pearson_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column of ``a`` with the same column of ``b``.

    Used for the paper's score: per-voxel r between the prediction and the mean of the test
    repeats (Moussa et al. 2025, Evaluation 1).

    Parameters
    ----------
    a, b : ``(n_trs, n_voxels)`` real arrays (any float dtype; computed in float64).

    Returns
    -------
    ``(n_voxels,)`` float64; NaN where either column is constant or holds a non-finite value.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 2 or a.shape != b.shape:
        raise DataError(f"pearson_columns needs two (n_trs, n_voxels) arrays of the same shape, "
                        f"got {a.shape} and {b.shape}")
    if a.shape[0] < 2:
        raise DataError(f"a correlation needs at least 2 rows (TRs), got {a.shape[0]}")
    out = np.empty(a.shape[1], dtype=np.float64)
    for start in range(0, a.shape[1], COLUMN_BATCH):
        sl = slice(start, start + COLUMN_BATCH)
        x = a[:, sl].astype(np.float64)
        y = b[:, sl].astype(np.float64)
        x -= x.mean(0)
        y -= y.mean(0)
        den = np.sqrt((x * x).sum(0) * (y * y).sum(0))
        num = (x * y).sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
        out[sl] = np.clip(r, -1.0, 1.0)
    return out


def roi_summary(values: np.ndarray, rois: Mapping[str, np.ndarray],
                valid: Optional[np.ndarray] = None) -> dict:
    """Mean of a per-voxel map inside each ROI, ignoring NaN (excluded) voxels.

    Parameters
    ----------
    values : ``(n_voxels,)`` per-voxel values (r, cc_norm, …); NaN marks an excluded voxel.
    rois : ROI name → ``(n_voxels,)`` boolean mask.
    valid : optional ``(n_voxels,)`` boolean mask of voxels to consider at all.

    Returns
    -------
    ``{roi: {"mean": float, "median": float, "n_voxels": int}}`` with ``n_voxels`` the number of
    finite, valid voxels that entered the mean; ``mean`` and ``median`` are NaN when that is 0.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise DataError(f"roi_summary needs a (n_voxels,) map, got shape {values.shape}")
    use = np.isfinite(values)
    if valid is not None:
        valid = np.asarray(valid)
        if valid.shape != values.shape or valid.dtype != bool:
            raise DataError(f"valid must be a boolean mask of shape {values.shape}, "
                            f"got {valid.dtype} {valid.shape}")
        use &= valid
    out = {}
    for name, mask in rois.items():
        mask = np.asarray(mask)
        if mask.shape != values.shape or mask.dtype != bool:
            raise DataError(f"ROI {name!r} must be a boolean mask of shape {values.shape}, "
                            f"got {mask.dtype} {mask.shape}")
        sel = values[mask & use]
        out[name] = {"mean": float(sel.mean()) if sel.size else float("nan"),
                     "median": float(np.median(sel)) if sel.size else float("nan"),
                     "n_voxels": int(sel.size)}
    return out
