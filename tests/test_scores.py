"""Per-voxel Pearson r (vs scipy) and ROI summaries."""

import math

import numpy as np
import pytest
from scipy.stats import pearsonr

from core.encoding import scores
from core.encoding.scores import pearson_columns, roi_summary
from core.errors import DataError


def test_pearson_matches_scipy(monkeypatch):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((40, 9)).astype(np.float32)
    b = (0.5 * a + rng.standard_normal((40, 9))).astype(np.float32) * 3 + 2
    b[:, 4] = -a[:, 4]
    monkeypatch.setattr(scores, "COLUMN_BATCH", 4)              # several column batches
    r = pearson_columns(a, b)
    ref = [pearsonr(a[:, j].astype(np.float64), b[:, j].astype(np.float64))[0] for j in range(9)]
    assert r.dtype == np.float64 and r.shape == (9,)
    np.testing.assert_allclose(r, ref, atol=1e-12)
    assert r[4] == pytest.approx(-1.0)


def test_pearson_constant_or_bad_columns():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((20, 3))
    b = rng.standard_normal((20, 3))
    b[:, 1] = 4.0
    a[3, 2] = np.nan
    r = pearson_columns(a, b)
    assert np.isfinite(r[0]) and np.isnan(r[1]) and np.isnan(r[2])
    with pytest.raises(DataError, match="same shape"):
        pearson_columns(a, b[:10])
    with pytest.raises(DataError, match="2 rows"):
        pearson_columns(a[:1], b[:1])


def test_roi_summary_ignores_nan_and_invalid():
    values = np.array([0.1, 0.2, np.nan, 0.4, 0.5, 0.9])
    rois = {"A": np.array([1, 1, 1, 0, 0, 0], bool), "B": np.array([0, 0, 0, 1, 1, 1], bool),
            "empty": np.zeros(6, bool)}
    out = roi_summary(values, rois)
    assert out["A"] == {"mean": pytest.approx(0.15), "median": pytest.approx(0.15), "n_voxels": 2}
    assert out["B"]["mean"] == pytest.approx(0.6) and out["B"]["n_voxels"] == 3
    assert out["empty"]["n_voxels"] == 0 and math.isnan(out["empty"]["mean"])
    valid = np.array([1, 1, 1, 1, 1, 0], bool)
    out = roi_summary(values, rois, valid=valid)
    assert out["B"] == {"mean": pytest.approx(0.45), "median": pytest.approx(0.45), "n_voxels": 2}


def test_roi_summary_bad_masks():
    values = np.zeros(4)
    with pytest.raises(DataError, match="ROI 'X'"):
        roi_summary(values, {"X": np.ones(3, bool)})
    with pytest.raises(DataError, match="ROI 'X'"):
        roi_summary(values, {"X": np.ones(4, int)})
    with pytest.raises(DataError, match="valid"):
        roi_summary(values, {"X": np.ones(4, bool)}, valid=np.ones(5, bool))
    with pytest.raises(DataError, match="n_voxels"):
        roi_summary(np.zeros((2, 2)), {})
