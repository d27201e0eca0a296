"""Lanczos resampling against a direct double loop of the paper's formula and closed forms."""

import math

import numpy as np
import pytest
from scipy.integrate import quad

from core.errors import ConfigError, DataError
from core.features.lanczos import lanczos_kernel, lanczos_matrix, lanczos_resample

TR = 2.0


def reference_matrix(old, new, window=3.0, cutoff_mult=1.0):
    """Paper formula, element by element: L(t') = a sin(πt') sin(πt'/a) / (π² t'²)."""
    cutoff = cutoff_mult / ((new[-1] - new[0]) / (len(new) - 1))
    m = np.zeros((len(new), len(old)))
    for i, tn in enumerate(new):
        for j, to in enumerate(old):
            t = (tn - to) * cutoff
            if t == 0:
                m[i, j] = 1.0
            elif abs(t) <= window:
                m[i, j] = window * math.sin(math.pi * t) * math.sin(math.pi * t / window) / (math.pi ** 2 * t ** 2)
    return m


def kernel_integral(freq_scaled=0.0, window=3.0):
    """∫ L(u) cos(2π·freq_scaled·u) du over [-a, a] (numerical quadrature, independent of the code)."""
    def f(u):
        lu = 1.0 if u == 0 else window * math.sin(math.pi * u) * math.sin(math.pi * u / window) / (math.pi ** 2 * u ** 2)
        return lu * math.cos(2 * math.pi * freq_scaled * u)
    return quad(f, -window, window, points=[0.0], limit=400)[0]


@pytest.mark.parametrize("window,cutoff_mult", [(3, 1.0), (2, 0.5), (3, 1.7)])
def test_matrix_matches_direct_double_loop(window, cutoff_mult):
    rng = np.random.default_rng(0)
    old = rng.uniform(-12, 40, 150)  # unsorted, partly outside the stamps' range
    new = TR * (np.arange(20) - 4.5)
    got = lanczos_matrix(old, new, window=window, cutoff_mult=cutoff_mult).toarray()
    want = reference_matrix(old, new, window, cutoff_mult)
    np.testing.assert_allclose(got, want, atol=1e-12)
    vals = rng.standard_normal((150, 4))
    np.testing.assert_allclose(lanczos_resample(vals, old, new, window, cutoff_mult), want @ vals, atol=1e-10)


def test_kernel_closed_form_values():
    # L(0)=1, L(±1)=0, L(0.5)=6/π², L(1.5)=-4/(3π²), zero beyond the window.
    t = np.array([0.0, 1.0, -1.0, 0.5, -0.5, 1.5, 3.2, -4.0])
    want = [1, 0, 0, 6 / np.pi ** 2, 6 / np.pi ** 2, -4 / (3 * np.pi ** 2), 0, 0]
    np.testing.assert_allclose(lanczos_kernel(t), want, atol=1e-12)


def test_single_impulse_gives_the_kernel():
    new = TR * (np.arange(30) - 4.5)
    t0 = 13.3
    out = lanczos_resample(np.array([[1.0]]), np.array([t0]), new)[:, 0]
    t = (new - t0) / TR
    with np.errstate(invalid="ignore", divide="ignore"):
        want = np.where(np.abs(t) <= 3, 3 * np.sin(np.pi * t) * np.sin(np.pi * t / 3) / (np.pi ** 2 * t ** 2), 0)
    np.testing.assert_allclose(out, want, atol=1e-12)
    assert np.count_nonzero(np.abs(out) > 1e-12) == 6  # |Δt| < 6 s ⇒ 6 stamps 2 s apart


@pytest.mark.parametrize("nu", [0.02, 0.05])
def test_dense_slow_sinusoid_scales_by_rate_over_cutoff(nu):
    f = 100.0  # Hz sample rate of the dense signal
    old = np.arange(0, 120, 1 / f)
    x = np.cos(2 * np.pi * nu * old + 0.3)
    new = TR * (np.arange(60) - 4.5)
    out = lanczos_resample(x[:, None], old, new)[:, 0]
    inner = (new - 6 > 0) & (new + 6 < old[-1])  # full kernel support inside the signal
    cutoff = 1 / TR
    exact = f / cutoff * np.cos(2 * np.pi * nu * new + 0.3) * kernel_integral(nu / cutoff)
    np.testing.assert_allclose(out[inner], exact[inner], atol=1e-3 * f / cutoff)
    # and ≈ f/cutoff × the signal at the stamp (∫L ≈ 1 for slow signals)
    np.testing.assert_allclose(out[inner], f / cutoff * np.cos(2 * np.pi * nu * new[inner] + 0.3),
                               atol=0.01 * f / cutoff)


def test_frequency_above_tr_nyquist_is_suppressed():
    f, nu = 100.0, 0.4  # TR Nyquist is 0.25 Hz
    old = np.arange(0, 120, 1 / f)
    new = TR * (np.arange(60) - 4.5)
    out = lanczos_resample(np.sin(2 * np.pi * nu * old)[:, None], old, new)[:, 0]
    inner = (new - 6 > 0) & (new + 6 < old[-1])
    assert np.abs(out[inner]).max() < 0.02 * f * TR
    assert abs(kernel_integral(nu * TR)) < 0.02


def test_impulse_train_gives_rate_per_tr():
    rate = 3  # events per TR, steady
    old = np.arange(0, 200, TR / rate) + 0.1
    new = TR * (np.arange(100) - 4.5)
    out = lanczos_resample(np.ones((len(old), 1)), old, new)[:, 0]
    inner = (new - 6 > old[0]) & (new + 6 < old[-1])
    np.testing.assert_allclose(out[inner], rate * kernel_integral(), rtol=0.02)


def test_sparse_and_bounded_for_10ms_frames_over_10_minutes():
    old = np.arange(0, 600, 0.01)
    new = TR * (np.arange(305) - 4.5)
    m = lanczos_matrix(old, new)
    assert m.shape == (305, len(old))
    assert m.nnz <= 305 * (2 * 3 * TR / 0.01 + 1)  # ± a/cutoff = ± 6 s of 10 ms frames per stamp
    out = lanczos_resample(np.ones((len(old), 2), dtype=np.float32), old, new)
    assert out.dtype == np.float32 and out.shape == (305, 2)
    np.testing.assert_allclose(out[50], 100 * TR * kernel_integral(), rtol=1e-3)


def test_empty_events_give_zeros_and_dtypes():
    new = TR * (np.arange(10) - 4.5)
    out = lanczos_resample(np.zeros((0, 3), dtype=np.float32), np.zeros(0), new)
    assert out.shape == (10, 3) and not out.any() and out.dtype == np.float32
    assert lanczos_resample(np.ones((2, 1)), [0.0, 1.0], new).dtype == np.float64


def test_bad_inputs():
    new = TR * (np.arange(10) - 4.5)
    with pytest.raises(DataError, match="strictly increasing"):
        lanczos_matrix([0.0], new[::-1])
    with pytest.raises(DataError, match="at least 2"):
        lanczos_matrix([0.0], [1.0])
    with pytest.raises(DataError, match="do not match"):
        lanczos_resample(np.ones((3, 2)), [0.0, 1.0], new)
    with pytest.raises(DataError, match="NaN"):
        lanczos_resample(np.array([[np.nan]]), [0.0], new)
    with pytest.raises(DataError, match="NaN"):
        lanczos_matrix([np.nan], new)
    with pytest.raises(ConfigError, match="window"):
        lanczos_matrix([0.0], new, window=0)
    with pytest.raises(ConfigError, match="cutoff_mult"):
        lanczos_matrix([0.0], new, cutoff_mult=-1)
