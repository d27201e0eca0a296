"""Finite-impulse-response (FIR) delays: concatenated time-shifted copies of a feature matrix.

The paper (``/work/shared/reference/paper-method.md``, "Evaluation 1") concatenates the features
delayed by 1, 2, 3 and 4 TRs, so the ridge learns a per-voxel hemodynamic response. Column blocks
are ordered by delay (``[X(t-1) | X(t-2) | X(t-3) | X(t-4)]``, HuthLab's ``make_delayed`` order)
and rows shifted in from outside the matrix are zero. Apply delays **per story** (as
:func:`core.features.design.design_matrix` does) so that no story's rows leak into the next one's.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

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


class Delayer(TransformerMixin, BaseEstimator):
    """sklearn transformer adding FIR delays (composable in a ``Pipeline`` before a ridge).

    Parameters
    ----------
    delays : sequence of int, TRs (paper default ``(1, 2, 3, 4)``).

    Notes
    -----
    ``transform`` treats its input as **one** story; for several stories, transform each and stack
    (or use :func:`core.features.design.design_matrix`), so delays never cross a story boundary.
    """

    def __init__(self, delays: Sequence[int] = DEFAULT_DELAYS):
        self.delays = delays

    def fit(self, X, y=None):
        """Record ``n_features_in_`` (``X``: ``(n_trs, n_features)``); nothing is learned."""
        X = np.asarray(X)
        if X.ndim != 2:
            raise DataError(f"Delayer needs (n_trs, n_features), got shape {X.shape}")
        check_delays(self.delays)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        """``(n_trs, n_features)`` → ``(n_trs, n_features * len(delays))`` (see :func:`make_delayed`)."""
        check_is_fitted(self, "n_features_in_")
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise DataError(f"Delayer was fitted on {self.n_features_in_} features, got shape {X.shape}")
        return make_delayed(X, self.delays)

    def get_feature_names_out(self, input_features=None):
        """Names ``<feature>_delay<k>``, delay-major like the output columns."""
        check_is_fitted(self, "n_features_in_")
        if input_features is None:
            input_features = [f"x{i}" for i in range(self.n_features_in_)]
        elif len(input_features) != self.n_features_in_:
            raise ConfigError(f"expected {self.n_features_in_} input feature names, "
                              f"got {len(input_features)}")
        return np.asarray([f"{name}_delay{k}" for k in check_delays(self.delays)
                           for name in input_features], dtype=object)
