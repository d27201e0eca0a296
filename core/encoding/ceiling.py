"""Noise ceiling from repeated presentations (Schoppe et al. 2016) and normalised correlation.

From N repeats ``y_1..y_N`` of the same stimulus, each z-scored over time (ddof = 0), with
``ȳ`` their mean (paper: Moussa et al. 2025, Evaluation 1; ``/work/shared/reference/paper-method.md``)::

    TP = 1                                  (total power of a z-scored repeat)
    SP = (N · Var(ȳ) − TP) / (N − 1)        (signal power)
    cc_max = 1 / sqrt(1 + (TP / SP − 1) / N)
    cc_norm = r(ŷ, ȳ) / cc_max

For z-scored repeats ``N·Var(ȳ) = 1 + (N − 1)·ρ̄`` with ``ρ̄`` the mean pairwise correlation of the
repeats, so ``SP = ρ̄`` and ``cc_max = sqrt(N ρ̄ / (1 + (N − 1) ρ̄))``: the correlation of ``ȳ`` with
the true signal when each repeat is signal + independent noise. ``cc_max`` is undefined (NaN) where
``SP`` is not positive (no reliable signal) or a repeat is constant; :func:`cc_norm` excludes those
and small ceilings instead of dividing by (nearly) zero.
"""

from __future__ import annotations

import numpy as np

from core.errors import ConfigError, DataError

#: SP at or below this is treated as undefined: float32 responses cannot resolve a smaller power
MIN_SIGNAL_POWER = float(np.finfo(np.float32).eps)
#: default exclusion threshold of cc_norm (project choice, not from the paper: below 0.1 the ratio
#: is dominated by noise in r and in the ceiling)
MIN_CC_MAX = 0.1
#: voxels processed at a time (memory bound, not a result)
VOXEL_BATCH = 4096


def signal_power(repeats: np.ndarray, voxel_batch: int = VOXEL_BATCH, ddof: int = 0,
                 zscore: bool = True) -> np.ndarray:
    """Schoppe signal power ``SP = (N·Var(ȳ) − 1)/(N − 1)`` of z-scored repeats, per voxel.

    Parameters
    ----------
    repeats : ``(n_repeats, n_trs, n_voxels)`` responses to the same stimulus (N ≥ 2, n_trs ≥ 2).
    voxel_batch : voxels processed at a time.
    ddof : delta degrees of freedom of ``Var(ȳ)`` (0: this project; 1: the released code).
    zscore : z-score each repeat over time first (default). False takes the repeats as they are and
        assumes TP = 1 (the released code's ``data_norm=True``, for repeats released z-scored).

    Returns
    -------
    ``(n_voxels,)`` float64 SP (as a fraction of the total power 1); NaN where a repeat is constant.
    """
    rep = np.asarray(repeats)
    if rep.ndim != 3:
        raise DataError(f"repeats must be (n_repeats, n_trs, n_voxels), got shape {rep.shape}")
    n_rep, n_trs, n_vox = rep.shape
    if n_rep < 2:
        raise DataError(f"a noise ceiling needs >= 2 repeats of the test story, got {n_rep}")
    if n_trs < 2:
        raise DataError(f"a noise ceiling needs >= 2 TRs per repeat, got {n_trs}")
    if not np.issubdtype(rep.dtype, np.number) or np.iscomplexobj(rep):
        raise DataError(f"repeats must hold real numbers, got dtype {rep.dtype}")
    if int(voxel_batch) < 1:
        raise ConfigError(f"voxel_batch must be a positive integer, got {voxel_batch!r}")
    sp = np.empty(n_vox, dtype=np.float64)
    for start in range(0, n_vox, int(voxel_batch)):
        block = rep[:, :, start:start + int(voxel_batch)].astype(np.float64)
        if not np.isfinite(block).all():
            raise DataError(f"repeats have non-finite values (NaN/inf) in voxels "
                            f"{start}..{start + block.shape[2] - 1}; drop those voxels first")
        std = block.std(axis=1, keepdims=True)
        constant = (std == 0).any(axis=0)[0]                        # (batch,)
        if zscore:
            block -= block.mean(axis=1, keepdims=True)
            block /= np.where(std > 0, std, 1.0)
        var_mean = block.mean(axis=0).var(axis=0, ddof=ddof)        # Var(ȳ)
        out = (n_rep * var_mean - 1.0) / (n_rep - 1)
        out[constant] = np.nan
        sp[start:start + block.shape[2]] = out
    return sp


def noise_ceiling(repeats: np.ndarray, min_signal_power: float = MIN_SIGNAL_POWER,
                  voxel_batch: int = VOXEL_BATCH, ddof: int = 0, zscore: bool = True,
                  undefined: float = np.nan) -> np.ndarray:
    """Maximum achievable correlation ``cc_max`` with the repeat mean (Schoppe et al. 2016).

    Parameters
    ----------
    repeats : ``(n_repeats, n_trs, n_voxels)`` responses to the test story (z-scored here per repeat
        and voxel over time).
    min_signal_power : SP at or below this gives NaN (undefined ceiling); default float32 eps.
    voxel_batch : voxels processed at a time.
    ddof, zscore : see :func:`signal_power` (released protocol: ddof 1, no re-z-scoring).
    undefined : value where the ceiling is undefined (NaN; the released code uses 0).

    Returns
    -------
    ``(n_voxels,)`` float64 in (0, 1]; ``undefined`` where undefined.
    """
    if ddof not in (0, 1):
        raise ConfigError(f"ddof must be 0 or 1, got {ddof!r}")
    sp = signal_power(repeats, voxel_batch, ddof=ddof, zscore=zscore)
    n_rep = np.asarray(repeats).shape[0]
    ok = np.isfinite(sp) & (sp > float(min_signal_power))
    cc = np.full(sp.shape, float(undefined))
    cc[ok] = 1.0 / np.sqrt(1.0 + (1.0 / sp[ok] - 1.0) / n_rep)
    return cc


def cc_norm(r: np.ndarray, cc_max: np.ndarray, min_cc_max: float | None = MIN_CC_MAX) -> np.ndarray:
    """Normalised correlation ``r / cc_max``; NaN where ``cc_max`` is undefined or below ``min_cc_max``.

    Parameters
    ----------
    r : per-voxel correlation with the repeat mean, shape ``(..., n_voxels)``.
    cc_max : ``(n_voxels,)`` noise ceiling from :func:`noise_ceiling`.
    min_cc_max : voxels with a smaller (or NaN) ceiling are excluded (NaN), never divided by ~0.
        None: no threshold, only ceilings that are NaN or ≤ 0 are excluded (released protocol).

    Returns
    -------
    float64 array shaped like ``r``; NaN where excluded or where ``r`` is NaN.
    """
    r = np.asarray(r, dtype=np.float64)
    cc_max = np.asarray(cc_max, dtype=np.float64)
    if cc_max.ndim != 1 or r.shape[-1:] != cc_max.shape:
        raise DataError(f"r {r.shape} and cc_max {cc_max.shape} must share the voxel axis (last)")
    if min_cc_max is not None and (not np.isfinite(min_cc_max) or min_cc_max <= 0):
        raise ConfigError(f"min_cc_max must be a positive number or None, got {min_cc_max!r}")
    keep = np.isfinite(cc_max) & (cc_max > 0)
    if min_cc_max is not None:
        keep &= cc_max >= min_cc_max
    out = np.full(r.shape, np.nan)
    out[..., keep] = r[..., keep] / cc_max[keep]
    return out
