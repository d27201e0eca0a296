"""Finite-impulse-response (FIR) delays: concatenated time-shifted copies of a feature matrix.

The paper (``/work/shared/reference/paper-method.md``, "Evaluation 1") concatenates the features
delayed by 1, 2, 3 and 4 TRs, so the ridge learns a per-voxel hemodynamic response. Column blocks
are ordered by delay (``[X(t-1) | X(t-2) | X(t-3) | X(t-4)]``, HuthLab's ``make_delayed`` order)
and rows shifted in from outside the matrix are zero. The project protocol applies delays **per story**
(:func:`core.features.design.design_matrix`) so that no story's rows leak into the next one's; the
released protocol delays the stacked matrix, as HuthLab's code does. This is the one delay
implementation (no sklearn transformer: in a Pipeline it would delay across story boundaries).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from core.errors import ConfigError, DataError

DEFAULT_DELAYS = (1, 2, 3, 4)  #: TRs (paper; HuthLab ``ndelays=4``)


def check_delays(delays: Sequence[int]) -> tuple:
    """Validate ``delays`` (non-empty, distinct integers, in TRs) and return them as a tuple."""
    try:
        out = tuple(int(d) for d in delays)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"delays must be integers (TRs), got {delays!r}") from err
    if not out or any(o != d for o, d in zip(out, delays)) or len(set(out)) != len(out):
        raise ConfigError(f"delays must be a non-empty list of distinct integers (TRs), got {delays!r}")
    return out


def make_delayed(X: np.ndarray, delays: Sequence[int] = DEFAULT_DELAYS) -> np.ndarray:
    """Concatenate delayed copies of ``X`` with zero fill.

    Parameters
    ----------
    X : ``(n_trs, n_features)`` features of one story.
    delays : TR shifts (paper default 1, 2, 3, 4). Block ``j`` row ``i`` is ``X[i - delays[j]]``
        (zero where ``i - delays[j]`` is outside ``[0, n_trs)``); negative delays shift forward.

    Returns
    -------
    ``(n_trs, n_features * len(delays))``, same dtype as ``X``, blocks in the order of ``delays``.
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise DataError(f"make_delayed needs (n_trs, n_features), got shape {X.shape}")
    delays = check_delays(delays)
    n, d = X.shape
    out = np.zeros((n, d * len(delays)), dtype=X.dtype)
    for j, k in enumerate(delays):
        block = out[:, j * d:(j + 1) * d]
        if k >= 0:
            if k < n:
                block[k:] = X[:n - k]
        elif -k < n:
            block[:n + k] = X[-k:]
    return out
