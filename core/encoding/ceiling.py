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

Without repeats (Narratives: most participants heard a story once), the ceiling comes from
leave-one-subject-out intersubject correlation (:func:`isc`, :func:`isc_ceiling`,
:func:`subject_isc`): the ISC gives the shared-signal fraction ``ρ`` (:func:`isc_to_signal_power`)
and ``cc_max = 1/sqrt(1 + (1/ρ − 1)/n)`` (:func:`ceiling_from_signal_power`) — derivation in the
comment above :func:`isc`.
"""

from __future__ import annotations

import warnings

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


# -- ceilings without repeats: leave-one-subject-out intersubject correlation (ISC) -------------
#
# Model (per voxel): each participant's z-scored response to the story is y_s = √ρ·S + √(1−ρ)·e_s,
# a shared stimulus-driven signal S (unit variance) plus independent noise, ρ the same for all.
# The Narratives authors' ISC is leave-one-out: r_s = corr(y_s, m_s) with m_s the mean of the k
# other participants. Then Cov(y_s, m_s) = ρ and Var(m_s) = ρ + (1 − ρ)/k, so
#     r² = ρ² / (ρ + (1 − ρ)/k)   ⇔   ρ² − r²(1 − 1/k)·ρ − r²/k = 0,
#     ρ = ½·[r²(1 − 1/k) + √(r⁴(1 − 1/k)² + 4r²/k)]     (k → ∞: ρ = r²; k = 1: ρ = r).
# An encoding model can at best predict S, and is scored against the subject's own response (one
# presentation, or the mean of n of its runs), so its ceiling is corr(S, ȳ_s) =
#     cc_max = 1 / √(1 + (1/ρ − 1)/n)                        (n = 1: √ρ),
# the same expression as Schoppe's with SP = ρ. It is undefined (NaN) where r ≤ 0 or ρ is below
# MIN_SIGNAL_POWER. Assumption: equal ρ across participants (where it differs, the estimate mixes
# the subject's and the others' reliability). Checked against simulations in tests/test_narratives.py.

def _zscore_time(y: np.ndarray) -> tuple:
    """Z-score ``(n_trs, n_voxels)`` over time in float64; returns ``(z, usable)`` where ``usable``
    ``(n_voxels,)`` is False for columns with a non-finite value or zero variance (z = 0 there)."""
    y = np.asarray(y, dtype=np.float64)
    usable = np.isfinite(y).all(axis=0)
    y = np.where(usable[None], y, 0.0)
    sd = y.std(axis=0)
    usable &= sd > 0
    z = (y - y.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    z[:, ~usable] = 0.0
    return z, usable


def isc_to_signal_power(r: np.ndarray, n_others) -> np.ndarray:
    """Shared-signal fraction ``ρ`` from a leave-one-out ISC ``r`` with ``n_others`` others (module
    comment above; NaN where ``r`` ≤ 0 or is NaN, or ``n_others`` < 1). Float64, broadcast."""
    r = np.asarray(r, dtype=np.float64)
    k = np.asarray(n_others, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = r * r
        b = r2 * (1.0 - 1.0 / k)
        rho = 0.5 * (b + np.sqrt(b * b + 4.0 * r2 / k))
    return np.where((r > 0) & (k >= 1), rho, np.nan)


def ceiling_from_signal_power(rho: np.ndarray, n_repeats: int = 1,
                              min_signal_power: float = MIN_SIGNAL_POWER,
                              undefined: float = np.nan) -> np.ndarray:
    """``cc_max = 1/√(1 + (1/ρ − 1)/n)`` for responses averaged over ``n_repeats`` presentations;
    ``undefined`` where ``ρ`` is NaN or ≤ ``min_signal_power``. Float64."""
    rho = np.asarray(rho, dtype=np.float64)
    ok = np.isfinite(rho) & (rho > float(min_signal_power))
    out = np.full(rho.shape, float(undefined))
    out[ok] = 1.0 / np.sqrt(1.0 + (1.0 / np.minimum(rho[ok], 1.0) - 1.0) / int(n_repeats))
    return out


def subject_isc(own: np.ndarray, others) -> tuple:
    """Leave-one-out ISC of one participant, streamed over the others.

    Parameters
    ----------
    own : ``(n_trs, n_voxels)`` the participant's response (any scale; z-scored here).
    others : iterable of ``(n_trs, n_voxels)`` arrays, the other participants' responses to the
        same story on the same columns (NaN columns = the participant lacks that voxel). One array
        is held at a time.

    Returns
    -------
    ``(r, k)``: ``r`` ``(n_voxels,)`` float64 Pearson correlation of ``own`` with the mean of the
    z-scored others (NaN where ``own`` is unusable or no other has the voxel); ``k`` ``(n_voxels,)``
    int64, the number of others averaged per voxel.
    """
    z, ok = _zscore_time(own)
    total = np.zeros_like(z)
    k = np.zeros(z.shape[1], dtype=np.int64)
    for y in others:
        y = np.asarray(y)
        if y.shape != z.shape:
            raise DataError(f"another participant's response has shape {y.shape}, expected {z.shape}")
        zo, oko = _zscore_time(y)
        total += zo
        k += oko
    mean, mean_ok = _zscore_time(total / np.maximum(k, 1))
    r = (z * mean).mean(axis=0)
    r[~(ok & mean_ok & (k >= 1))] = np.nan
    return r, k


def isc(responses: np.ndarray) -> np.ndarray:
    """Leave-one-subject-out ISC ``(n_subjects, n_voxels)`` float64 of ``responses``
    ``(n_subjects, n_trs, n_voxels)`` (brainiak ``isc(pairwise=False)``; NaN-aware as in
    :func:`subject_isc`)."""
    resp = np.asarray(responses)
    if resp.ndim != 3 or resp.shape[0] < 2:
        raise DataError(f"ISC needs (n_subjects >= 2, n_trs, n_voxels) responses, got shape {resp.shape}")
    return np.stack([subject_isc(resp[s], (resp[o] for o in range(resp.shape[0]) if o != s))[0]
                     for s in range(resp.shape[0])])


def isc_ceiling(responses: np.ndarray, n_repeats: int = 1) -> np.ndarray:
    """Per-participant noise ceilings ``(n_subjects, n_voxels)`` float64 from leave-one-out ISC.

    Parameters
    ----------
    responses : ``(n_subjects, n_trs, n_voxels)`` responses to one story (one presentation each).
    n_repeats : presentations averaged in the response the model is scored against (1).

    Returns
    -------
    ``cc_max`` = ``ceiling_from_signal_power(isc_to_signal_power(r, n_subjects − 1), n_repeats)``
    (module comment above); NaN where undefined.
    """
    resp = np.asarray(responses)
    r = isc(resp)
    k = np.stack([np.isfinite(resp[[o for o in range(resp.shape[0]) if o != s]]).all(axis=1).sum(0)
                  for s in range(resp.shape[0])])
    return ceiling_from_signal_power(isc_to_signal_power(r, k), n_repeats)


def fisher_mean(r: np.ndarray, axis: int = 0) -> np.ndarray:
    """Average correlations through Fisher's z (``tanh(mean(arctanh r))``), ignoring NaN; used to
    pool ISCs over stories or condition groups."""
    r = np.clip(np.asarray(r, dtype=np.float64), -0.999999, 0.999999)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.tanh(np.nanmean(np.arctanh(r), axis=axis))
