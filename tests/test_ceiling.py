"""Noise ceiling (Schoppe et al. 2016) against closed forms and an independent pairwise route."""

import itertools
import warnings

import numpy as np
import pytest

from core.encoding.ceiling import cc_norm, noise_ceiling, signal_power
from core.errors import ConfigError, DataError


def _repeats(n_rep, n_trs, signal_var, noise_var=1.0, seed=0):
    """Repeats = shared signal (variance signal_var per voxel) + independent noise per repeat."""
    rng = np.random.default_rng(seed)
    signal_var = np.asarray(signal_var, dtype=np.float64)
    s = rng.standard_normal((n_trs, signal_var.size)) * np.sqrt(signal_var)
    noise = rng.standard_normal((n_rep, n_trs, signal_var.size)) * np.sqrt(noise_var)
    return (s[None] + noise).astype(np.float32), s


def test_ceiling_converges_to_closed_form():
    n_rep, sig = 5, np.linspace(0.2, 3.0, 40)
    rep, s = _repeats(n_rep, 20000, sig, seed=1)
    cc = noise_ceiling(rep)
    expected = np.sqrt(sig / (sig + 1.0 / n_rep))
    assert cc.dtype == np.float64 and cc.shape == (40,)
    assert np.max(np.abs(cc - expected)) < 0.01
    assert np.mean(np.abs(cc - expected)) < 0.002
    # and it is what it claims: the correlation of the repeat mean with the true signal
    mean = rep.mean(0).astype(np.float64)
    corr = np.array([np.corrcoef(mean[:, j], s[:, j])[0, 1] for j in range(40)])
    assert np.max(np.abs(cc - corr)) < 0.01


def test_signal_power_is_mean_pairwise_correlation():
    rng = np.random.default_rng(3)
    n_rep, n_trs, n_vox = 4, 50, 30
    rep, _ = _repeats(n_rep, n_trs, rng.uniform(0.0, 2.0, n_vox), seed=3)
    rep = rep * rng.uniform(0.5, 3.0, (n_rep, 1, n_vox)).astype(np.float32) + 7.0   # scale/offset
    rho = np.array([np.mean([np.corrcoef(rep[a, :, j], rep[b, :, j])[0, 1]
                             for a, b in itertools.combinations(range(n_rep), 2)])
                    for j in range(n_vox)])
    np.testing.assert_allclose(signal_power(rep), rho, atol=1e-10)
    expected = np.where(rho > np.finfo(np.float32).eps,
                        np.sqrt(n_rep * np.clip(rho, 0, None) / (1 + (n_rep - 1) * rho)), np.nan)
    np.testing.assert_allclose(noise_ceiling(rep), expected, atol=1e-10, equal_nan=True)
    np.testing.assert_allclose(noise_ceiling(rep, voxel_batch=7), noise_ceiling(rep), rtol=0, atol=0,
                               equal_nan=True)


def test_undefined_ceilings_are_nan():
    rep, _ = _repeats(3, 200, np.zeros(50), seed=4)        # noise only: SP scatters around 0
    rep[:, :, 0] = rep[:, :, 0] + 5.0 * np.arange(200, dtype=np.float32)[None]   # shared trend
    rep[1, :, 1] = 2.0                                      # one repeat constant
    sp = signal_power(rep)
    cc = noise_ceiling(rep)
    assert np.isnan(sp[1]) and np.isnan(cc[1])
    assert cc[0] > 0.99
    neg = np.isfinite(sp) & (sp <= 0)
    assert neg.sum() > 5 and np.all(np.isnan(cc[neg]))
    assert np.all((cc[np.isfinite(cc)] > 0) & (cc[np.isfinite(cc)] <= 1))


def test_bad_repeats():
    rep, _ = _repeats(3, 20, np.ones(4))
    with pytest.raises(DataError, match=">= 2 repeats"):
        noise_ceiling(rep[:1])
    with pytest.raises(DataError, match="n_repeats"):
        noise_ceiling(rep[0])
    bad = rep.copy()
    bad[2, 5, 3] = np.nan
    with pytest.raises(DataError, match="non-finite"):
        noise_ceiling(bad)
    with pytest.raises(DataError, match="TRs"):
        noise_ceiling(rep[:, :1])


def test_cc_norm_divides_only_where_defined():
    r = np.array([0.3, 0.3, 0.5, np.nan, 0.2, -0.1])
    cc_max = np.array([0.6, 0.05, np.nan, 0.5, 1.0, 0.2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = cc_norm(r, cc_max, min_cc_max=0.1)
        layers = cc_norm(np.stack([r, 2 * r]), cc_max, min_cc_max=0.1)
    np.testing.assert_allclose(out, [0.5, np.nan, np.nan, np.nan, 0.2, -0.5], equal_nan=True)
    np.testing.assert_allclose(layers[1], 2 * out, equal_nan=True)
    np.testing.assert_allclose(cc_norm(r, cc_max, min_cc_max=0.01)[1], 6.0)
    with pytest.raises(DataError):
        cc_norm(r[:4], cc_max)
    with pytest.raises(ConfigError):
        cc_norm(r, cc_max, min_cc_max=0.0)
