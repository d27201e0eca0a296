"""FIR delays against explicit shifted copies; no leaks across stories."""

import numpy as np
import pytest

from core.errors import ConfigError, DataError
from core.features.delays import make_delayed


def shifted(x, k):
    """x shifted down by k rows (up for k < 0), zero fill — written out row by row."""
    out = np.zeros_like(x)
    for i in range(len(x)):
        if 0 <= i - k < len(x):
            out[i] = x[i - k]
    return out


def test_make_delayed_equals_explicit_shifted_copies():
    x = np.arange(1, 25, dtype=np.float32).reshape(8, 3)
    got = make_delayed(x)
    assert got.shape == (8, 12) and got.dtype == np.float32
    np.testing.assert_array_equal(got, np.hstack([shifted(x, k) for k in (1, 2, 3, 4)]))
    # row i of block j is x[i - delay]: spot-check by hand
    np.testing.assert_array_equal(got[5, 0:3], x[4])
    np.testing.assert_array_equal(got[5, 9:12], x[1])
    assert not got[:4, 9:12].any()


def test_other_delays_including_zero_negative_and_too_long():
    x = np.random.default_rng(0).standard_normal((6, 2))
    delays = (0, -2, 3, 7)
    np.testing.assert_array_equal(make_delayed(x, delays), np.hstack([shifted(x, k) for k in delays]))
    assert not make_delayed(x, (7,)).any()


def test_delays_per_story_do_not_leak():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((10, 2)), rng.standard_normal((7, 2)) + 5
    per_story = np.vstack([make_delayed(a), make_delayed(b)])
    # the first rows of story b see only zeros, never the end of story a
    assert not per_story[10, :].any()
    np.testing.assert_array_equal(per_story[11, :2], b[0])
    assert not per_story[11, 2:].any()
    # applying to the stacked matrix would leak a's last rows into b's start
    leaked = make_delayed(np.vstack([a, b]))
    np.testing.assert_array_equal(leaked[10, :2], a[-1])


def test_bad_delays_and_shapes():
    x = np.zeros((5, 2))
    for bad in [(), (1, 1), (1.5,), ("a",)]:
        with pytest.raises(ConfigError, match="delays"):
            make_delayed(x, bad)
    with pytest.raises(DataError, match="n_trs, n_features"):
        make_delayed(np.zeros(5))
