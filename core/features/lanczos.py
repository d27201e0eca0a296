"""Lanczos resampling from event or frame times to TR time stamps (HuthLab convention).

The paper (``/work/shared/reference/paper-method.md``, "Evaluation 1") downsamples features to TR
times with a Lanczos filter, window ``a = 3``, cutoff ``= 1/TR``::

    L(t') = a·sin(π t')·sin(π t'/a) / (π² t'²),   L(0) = 1,   L(t') = 0 for |t'| > a,
    t'    = (t_new − t_old) · cutoff,              cutoff = cutoff_mult / mean(diff(new_times))

Each new sample is a weighted **sum** over the old samples (not a weighted mean), exactly as
HuthLab's ``lanczosinterp2D``. Consequences that every caller relies on:

- impulses (ones at word or phone midpoints) become *rates*: a steady ``ρ`` events per TR gives
  ``ρ · ∫L ≈ 0.997 ρ`` per TR stamp (``∫_{-3}^{3} L(u) du ≈ 0.997``);
- a dense signal sampled at ``f`` Hz is scaled by ``f / cutoff`` (e.g. ×20 for 0.1 s model frames
  at TR = 2 s, ×200 for 10 ms spectrogram frames). The scale is removed by the per-story z-score
  of the encoding design (``core.features.design``).

The matrix is built sparse (CSR): a TR stamp only sees old samples within ``± a / cutoff`` seconds
(± 6 s at TR = 2 s), so 10 ms frames over a 10-minute story cost ~1,200 entries per stamp instead
of a dense ``(300, 60,000)`` float64 matrix. Hand-written because scipy has no Lanczos resampler
for irregular sample times.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from core.errors import ConfigError, DataError

LANCZOS_WINDOW = 3  #: paper default ``a = 3`` (HuthLab ``lanczosinterp2D``)


def lanczos_kernel(t: np.ndarray, window: float = LANCZOS_WINDOW) -> np.ndarray:
    """Lanczos kernel at scaled times ``t`` (``t = Δt · cutoff``, unitless).

    Parameters
    ----------
    t : ``(n,)`` scaled time offsets.
    window : ``a``, the kernel's half-width in units of ``1/cutoff`` (paper: 3).

    Returns
    -------
    ``(n,)`` float64: ``a·sin(πt)·sin(πt/a)/(π²t²)``, 1 at ``t = 0``, 0 where ``|t| > a``.
    """
    t = np.asarray(t, dtype=np.float64)
    out = np.zeros_like(t)
    inside = np.abs(t) <= window
    zero = t == 0
    ti = t[inside & ~zero]
    out[inside & ~zero] = window * np.sin(np.pi * ti) * np.sin(np.pi * ti / window) / (np.pi ** 2 * ti ** 2)
    out[zero] = 1.0
    return out


def lanczos_cutoff(new_times: np.ndarray, cutoff_mult: float = 1.0) -> float:
    """Cutoff frequency (Hz): ``cutoff_mult / mean(diff(new_times))`` (paper: 1/TR)."""
    new_times = _check_new_times(new_times)
    return float(cutoff_mult) / float(np.mean(np.diff(new_times)))


def lanczos_matrix(old_times: np.ndarray, new_times: np.ndarray, window: float = LANCZOS_WINDOW,
                   cutoff_mult: float = 1.0) -> sparse.csr_matrix:
    """Sparse Lanczos resampling matrix from ``old_times`` to ``new_times``.

    Parameters
    ----------
    old_times : ``(n_old,)`` seconds of the events/frames (any order; may be empty).
    new_times : ``(n_new,)`` seconds of the TR stamps, strictly increasing, ``n_new >= 2``.
    window : kernel half-width ``a`` (paper default 3).
    cutoff_mult : multiplies the cutoff ``1 / mean(diff(new_times))`` (paper default 1).

    Returns
    -------
    ``(n_new, n_old)`` float64 CSR matrix ``M`` with ``M[i, j] = L((new_i − old_j) · cutoff)``;
    ``M @ values`` is the resampled (summed, not averaged) signal.
    """
    if not (np.isfinite(window) and window > 0):
        raise ConfigError(f"Lanczos window must be a positive number, got {window!r}")
    if not (np.isfinite(cutoff_mult) and cutoff_mult > 0):
        raise ConfigError(f"Lanczos cutoff_mult must be a positive number, got {cutoff_mult!r}")
    new_times = _check_new_times(new_times)
    old_times = np.asarray(old_times, dtype=np.float64)
    if old_times.ndim != 1:
        raise DataError(f"old_times must be 1-D seconds, got shape {old_times.shape}")
    if not np.all(np.isfinite(old_times)):
        raise DataError("old_times contain NaN or inf; fix the event/frame times of the source")
    cutoff = lanczos_cutoff(new_times, cutoff_mult)
    n_new, n_old = len(new_times), len(old_times)

    order = np.argsort(old_times, kind="stable")
    sorted_t = old_times[order]
    reach = window / cutoff  # seconds on either side of a stamp with a non-zero weight
    lo = np.searchsorted(sorted_t, new_times - reach, side="left")
    hi = np.searchsorted(sorted_t, new_times + reach, side="right")
    counts = hi - lo
    rows = np.repeat(np.arange(n_new), counts)
    starts = np.repeat(lo - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    pos = starts + np.arange(int(counts.sum()))  # index into sorted_t
    weights = lanczos_kernel((new_times[rows] - sorted_t[pos]) * cutoff, window)
    return sparse.csr_matrix((weights, (rows, order[pos])), shape=(n_new, n_old))


def lanczos_resample(values: np.ndarray, old_times: np.ndarray, new_times: np.ndarray,
                     window: float = LANCZOS_WINDOW, cutoff_mult: float = 1.0) -> np.ndarray:
    """Resample ``values`` at ``old_times`` onto ``new_times`` with the Lanczos filter.

    Parameters
    ----------
    values : ``(n_old, n_features)`` (or ``(n_old,)``) features at ``old_times``.
    old_times : ``(n_old,)`` seconds.
    new_times : ``(n_new,)`` seconds, strictly increasing (TR stamps).
    window, cutoff_mult : see :func:`lanczos_matrix` (paper: 3 and 1).

    Returns
    -------
    ``(n_new, n_features)`` (or ``(n_new,)``), accumulated in float64 and returned as float64 for
    float64 input, float32 otherwise. A weighted sum over events (impulses → rates per TR).
    """
    values = np.asarray(values)
    if values.ndim not in (1, 2) or values.shape[0] != np.asarray(old_times).shape[0]:
        raise DataError(f"values {values.shape} do not match old_times "
                        f"{np.asarray(old_times).shape}: need (n_old, n_features)")
    if not np.all(np.isfinite(values)):
        raise DataError("features contain NaN or inf; cannot resample them to TR stamps")
    mat = lanczos_matrix(old_times, new_times, window, cutoff_mult)
    out = mat @ values.astype(np.float64, copy=False)
    return np.asarray(out).astype(np.result_type(values.dtype, np.float32), copy=False)


def _check_new_times(new_times: np.ndarray) -> np.ndarray:
    new_times = np.asarray(new_times, dtype=np.float64)
    if new_times.ndim != 1 or len(new_times) < 2:
        raise DataError(f"new_times must be 1-D with at least 2 TR stamps, got shape {new_times.shape}")
    if not np.all(np.isfinite(new_times)) or np.any(np.diff(new_times) <= 0):
        raise DataError("new_times (TR stamps) must be finite and strictly increasing")
    return new_times
