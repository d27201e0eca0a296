"""The encoding design: stimulus features and brain responses as stacked per-story matrices.

Conventions (paper ``/work/shared/reference/paper-method.md`` "Evaluation 1"; timing in
``core.data.timing``):

- Features come at all ``R - 5`` TR stamps of a story. Each column is z-scored per story with the
  mean/std of the rows kept after the ``[10:-5]`` trim (HuthLab z-scores the trimmed block).
- FIR delays (1–4 TRs) are applied per story on the full ``R - 5`` rows and only then trimmed, so the
  delayed copies at the start of the kept block come from the story's real earlier TRs (stimulus
  audio starts at stamp 5, so stamps 6–9 are real audio), and no story leaks into the next. (HuthLab
  delays the already-trimmed, stacked matrix, which fills those rows with zeros or the previous
  story; this is the consistent reading of the same timing.)
- ``order="trim-zscore-delay"`` (the released protocol, HuthLab's order) instead trims each story,
  z-scores the kept block, stacks the stories and delays the stacked matrix: its first rows are
  zero-filled and each later story's first delayed rows hold the previous story's last rows.
- ``trim_start`` moves the first kept stamp (the released protocol scores the test story from
  stamp 50 = response row 40).
- Responses (released already trimmed, ``R - 20`` rows) are z-scored per story per voxel.
- Stories are stacked in the given order; the result is float32.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from core.data import timing
from core.errors import ConfigError, DataError
from core.features.delays import DEFAULT_DELAYS, check_delays, make_delayed

_VOXEL_CHUNK = 8192  #: voxels z-scored at a time in response_matrix (memory bound, not a result)


def zscore_columns(x: np.ndarray, ref: Optional[np.ndarray] = None) -> np.ndarray:
    """Z-score the columns of ``x`` with the mean and std (ddof=0) of ``ref`` (default ``x``).

    NaN entries of ``ref`` are ignored in the statistics and NaN entries of ``x`` become 0 (the
    mean); a column whose std is 0 (constant, or no finite value) becomes all zeros. Float64.
    """
    x = np.asarray(x, dtype=np.float64)
    ref = x if ref is None else np.asarray(ref, dtype=np.float64)
    finite = np.isfinite(ref)
    count = finite.sum(0)
    safe = np.where(finite, ref, 0.0)
    mean = safe.sum(0) / np.maximum(count, 1)
    var = (np.where(finite, ref - mean, 0.0) ** 2).sum(0) / np.maximum(count, 1)
    std = np.sqrt(var)
    scale = np.where(std > 0, std, 1.0)
    out = (x - mean) / scale
    out[:, std <= 0] = 0.0
    out[~np.isfinite(out)] = 0.0
    return out


ORDERS = ("delay-trim", "trim-zscore-delay")  #: project order, released (HuthLab) order


def design_matrix(features: Mapping[str, np.ndarray], stories: Sequence[str],
                  delays: Sequence[int] = DEFAULT_DELAYS, dataset=None, order: str = "delay-trim",
                  trim_start: int = timing.TRIM_START) -> np.ndarray:
    """Stacked, z-scored, delayed and trimmed features of ``stories``.

    Parameters
    ----------
    features : story → ``(R - 5, n_features)`` features at all TR stamps (``tr_features`` output
        for one layer).
    stories : stories to stack, in order.
    delays : FIR delays in TRs (paper default 1, 2, 3, 4).
    dataset : optional :class:`core.data.base.Dataset`; when given, each story's row count is checked
        against ``len(dataset.tr_stamps(story))``.
    order : ``"delay-trim"`` (project: z-score with the kept rows' statistics, delay per story, trim)
        or ``"trim-zscore-delay"`` (released / HuthLab: trim, z-score, stack, delay the stack).
    trim_start : first kept stamp (default 10; the released test story uses 50).

    Returns
    -------
    ``(sum over stories of (R - 5 - trim_start), n_features * len(delays))`` float32;
    delay-major column blocks.
    """
    delays = check_delays(delays)
    if order not in ORDERS:
        raise ConfigError(f"unknown design order {order!r}; expected one of {', '.join(ORDERS)}")
    trim_start = int(trim_start)
    if trim_start < 0:
        raise ConfigError(f"trim_start must be >= 0 stamps, got {trim_start}")
    if not len(stories):
        raise DataError("design_matrix needs at least one story")
    blocks, n_feat = [], None
    for story in stories:
        if story not in features:
            raise DataError(f"no features for story {story!r}; compute them with tr_features first")
        x = np.asarray(features[story])
        if x.ndim != 2:
            raise DataError(f"features of {story!r} must be (n_stamps, n_features), got {x.shape}")
        if n_feat is None:
            n_feat = x.shape[1]
        elif x.shape[1] != n_feat:
            raise DataError(f"features of {story!r} have {x.shape[1]} columns, others {n_feat}")
        if dataset is not None and x.shape[0] != len(dataset.tr_stamps(story)):
            raise DataError(f"features of {story!r} have {x.shape[0]} rows but the story has "
                            f"{len(dataset.tr_stamps(story))} TR stamps; recompute them")
        end = x.shape[0] - timing.TRIM_END
        if end <= trim_start:
            raise DataError(f"features of {story!r} have {x.shape[0]} rows; need more than "
                            f"{trim_start + timing.TRIM_END} TR stamps for the "
                            f"[{trim_start}:-{timing.TRIM_END}] trim")
        if order == "delay-trim":
            z = zscore_columns(x, x[trim_start:end])
            blocks.append(make_delayed(z, delays)[trim_start:end].astype(np.float32))
        else:
            blocks.append(zscore_columns(x[trim_start:end]).astype(np.float32))
    if order == "delay-trim":
        return np.vstack(blocks)
    return make_delayed(np.vstack(blocks), delays)


def response_matrix(dataset, subject: str, stories: Sequence[str]) -> np.ndarray:
    """Stacked responses of ``subject`` for ``stories``, z-scored per story per voxel.

    Parameters
    ----------
    dataset : :class:`core.data.base.Dataset`.
    subject : subject id.
    stories : stories to stack, in order (same order as the design matrix).

    Returns
    -------
    ``(sum over stories of (R - 20), n_voxels)`` float32. Constant voxels are 0; NaN samples are
    set to 0 (the story mean) — ``dataset.voxel_report`` lists those voxels for exclusion.
    """
    if not len(stories):
        raise DataError("response_matrix needs at least one story")
    n_vox = int(dataset.n_voxels(subject))
    rows = [int(dataset.n_trs(s)) for s in stories]
    out = np.empty((sum(rows), n_vox), dtype=np.float32)
    start = 0
    for story, n in zip(stories, rows):
        y = np.asarray(dataset.responses(subject, story))
        if y.ndim != 2 or y.shape != (n, n_vox):
            raise DataError(f"responses of {subject}/{story} have shape {y.shape}, expected "
                            f"({n}, {n_vox}) = (dataset.n_trs, n_voxels); check the response file")
        for c in range(0, n_vox, _VOXEL_CHUNK):  # bounded float64 temporaries
            out[start:start + n, c:c + _VOXEL_CHUNK] = zscore_columns(y[:, c:c + _VOXEL_CHUNK])
        start += n
    return out
