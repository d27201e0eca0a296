"""Statistics: block-permutation p-values, BH-FDR, Wilcoxon across subjects, significance CLI."""

import json

import numpy as np
import pytest
from scipy.stats import kstest, wilcoxon

from core.analysis.stats import (across_subjects, block_permutations, compare_regions, fdr,
                                 permutation_pvalues, significance_arrays)
from core.cli import main
from core.errors import ConfigError


def _ar1(rng, n, v, phi=0.5):
    e = rng.standard_normal((n, v))
    x = np.empty_like(e)
    x[0] = e[0]
    for t in range(1, n):
        x[t] = phi * x[t - 1] + e[t]
    return x


def _synthetic(seed, n=200, n_planted=40, n_null=400, snr=0.6):
    """Predictions for planted voxels share signal with the response; null voxels do not (both
    autocorrelated, as fMRI)."""
    rng = np.random.default_rng(seed)
    sig = _ar1(rng, n, n_planted)
    pred = np.c_[sig, _ar1(rng, n, n_null)]
    y = np.c_[snr * sig + _ar1(rng, n, n_planted), _ar1(rng, n, n_null)]
    return pred, y, np.r_[np.ones(n_planted, bool), np.zeros(n_null, bool)]


def test_planted_power_and_null_calibration():
    fdps, null_p = [], []
    for seed in range(3):
        pred, y, planted = _synthetic(seed)
        res = significance_arrays(pred, y, n_perm=500, block_trs=10, seed=seed)
        assert res["significant"][planted].mean() > 0.9  # power
        disc = res["significant"]
        fdps.append((disc & ~planted).sum() / max(disc.sum(), 1))
        null_p.append(res["p"][~planted])
        assert np.all((res["p"] > 0) & (res["p"] <= 1))
        assert np.all(res["q"] >= res["p"] - 1e-12)
    assert np.mean(fdps) <= 0.05
    p = np.concatenate(null_p)
    assert abs((p < 0.05).mean() - 0.05) < 0.025  # uncorrected: nominal rate
    assert kstest(p, "uniform").pvalue > 0.001


def test_pvalues_equal_explicit_loop():
    rng = np.random.default_rng(5)
    pred, y = rng.standard_normal((23, 4)), rng.standard_normal((23, 4))
    n_perm, block = 30, 5
    res = permutation_pvalues(pred, y, n_perm=n_perm, block_trs=block, seed=2, perm_batch=7, voxel_batch=3)
    # the same draws, by hand
    gen = np.random.default_rng(2)
    blocks = [np.arange(s, min(s + block, 23)) for s in range(0, 23, block)]
    assert [len(b) for b in blocks] == [5, 5, 5, 5, 3]
    for v in range(4):
        r = np.corrcoef(pred[:, v], y[:, v])[0, 1]
        assert res["r"][v] == pytest.approx(r, abs=1e-12)
    orders = [np.concatenate([blocks[i] for i in gen.permutation(len(blocks))]) for _ in range(n_perm)]
    np.testing.assert_array_equal(block_permutations(23, n_perm, block, seed=2), np.stack(orders))
    for v in range(4):
        r = np.corrcoef(pred[:, v], y[:, v])[0, 1]
        count = sum(np.corrcoef(pred[:, v], y[o, v])[0, 1] >= r - 1e-12 for o in orders)
        assert res["p"][v] == pytest.approx((1 + count) / (1 + n_perm))


def test_fdr_matches_scipy_and_handles_nan():
    from scipy.stats import false_discovery_control

    p = np.array([0.001, 0.2, np.nan, 0.01, 0.04])
    out = fdr(p, 0.05)
    np.testing.assert_allclose(out["q"][[0, 1, 3, 4]], false_discovery_control(p[[0, 1, 3, 4]]))
    assert np.isnan(out["q"][2]) and not out["significant"][2]
    np.testing.assert_array_equal(out["significant"], out["q"] <= 0.05)
    with pytest.raises(ConfigError):
        fdr(p, 1.5)


def test_block_permutation_bad_input():
    with pytest.raises(ConfigError, match="one block"):
        block_permutations(8, 10, block_trs=10)
    with pytest.raises(ConfigError):
        block_permutations(50, 0)


def test_across_subjects_against_scipy():
    a = {"S1": 0.10, "S2": 0.12, "S3": 0.08, "S4": 0.11, "S5": 0.09, "S6": 0.10, "S7": 0.13}
    b = {"S1": 0.14, "S2": 0.13, "S3": 0.12, "S4": 0.10, "S5": 0.15, "S6": 0.16, "S7": 0.18}
    out = across_subjects(a, b)
    d = np.array([b[s] - a[s] for s in a])
    ref = wilcoxon(d, zero_method="wilcox", alternative="two-sided")
    assert out["wilcoxon_p"] == pytest.approx(ref.pvalue) and out["wilcoxon_stat"] == pytest.approx(ref.statistic)
    assert out["n_subjects"] == 7 and out["min_possible_p"] == pytest.approx(2 / 2 ** 7)
    assert out["n_improved"] == 6 and out["note"] == ""
    few = across_subjects({"S1": 0.1, "S2": 0.2, "S3": 0.1}, {"S1": 0.2, "S2": 0.3, "S3": 0.3})
    assert few["min_possible_p"] == pytest.approx(0.25) and "cannot reach" in few["note"]
    assert few["wilcoxon_p"] == pytest.approx(0.25)
    one = across_subjects({"S1": 0.1}, {"S1": 0.2})
    assert np.isnan(one["wilcoxon_p"]) and "at least 2" in one["note"]


def test_compare_regions_reuses_paired_stats():
    from core.analysis.compare import paired_stats

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(50), rng.standard_normal(50) + 0.5
    mask = np.arange(50) < 30
    out = compare_regions(a, b, {"roi": mask})
    ref = paired_stats(a[mask], b[mask])
    assert out["roi"]["wilcoxon_p"] == pytest.approx(ref["wilcoxon_p"]) and out["roi"]["n_voxels"] == 30


# --- CLI on the ds003020 fixture -------------------------------------------------------------------

@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    from tests.ds_fixture import make_ds003020_fixture

    # a test story of ~50 TRs (the default fixture's ~20 give too few block permutations for FDR)
    return make_ds003020_fixture(tmp_path_factory.mktemp("ds-sig") / "root", n_stories=4, n_voxels=120,
                                 duration_range=(116.0, 120.0))


def test_cli_significance(fixture, capsys, tmp_path):
    out = tmp_path / "sig"
    code = main(["-q", "significance", "--data", f"ds003020:{fixture['root']}", "--subject", "UTS01",
                 "--features", "lowlevel:powspec", "--out", str(out), "--n-perm", "300", "--block-trs", "4"])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    summary = json.loads((out / "summary.json").read_text())
    (layer,) = summary["layers"]
    assert json.loads(cap.out)["layers"][layer]["n_significant"] == summary["layers"][layer]["n_significant"]
    p, q = np.load(out / f"p_{layer}.npy"), np.load(out / f"q_{layer}.npy")
    sig = np.load(out / f"significant_{layer}.npy")
    plant = fixture["planted"]["UTS01"]
    assert p.shape == q.shape == sig.shape == (fixture["subjects"]["UTS01"]["n_voxels"],)
    assert np.isnan(p[plant["nan"]]).all() and not sig[plant["constant"]].any()
    assert sig[plant["acoustic"]].mean() > 0.6
    assert sig[plant["noise"]].mean() < 0.1
    cortex = summary["layers"][layer]["roi"]["cortex"]
    assert cortex["n_significant"] == int(sig.sum()) and cortex["n_tested"] == int(np.isfinite(p).sum())


def test_cli_significance_bad_input(fixture, capsys, tmp_path):
    code = main(["-q", "significance", "--data", f"ds003020:{fixture['root']}", "--subject", "UTS01",
                 "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "--features" in err and not (tmp_path / "x").exists()
    code = main(["-q", "significance", "--result", str(tmp_path), "--out", str(tmp_path / "y")])
    err = capsys.readouterr().err
    assert code == 2 and "not an encoding result" in err


def test_from_result_with_saved_predictions_matches_reencode(fixture, tmp_path):
    """An encode folder holding pred_<layer>.npy is tested without refitting, to the same numbers."""
    from core.data import load_dataset
    from core.data.roi_groups import group_masks
    from core.encoding.fit import fit_encoding
    from core.encoding.params import EncodeParams
    from core.features import source_for
    from core.features.design import response_matrix
    from core.pipelines.encode import choose_stories, feature_set
    from core.pipelines.significance import significance, significance_from_result

    spec = f"ds003020:{fixture['root']}"
    ds, params = load_dataset(spec), EncodeParams()
    source = source_for("lowlevel:powspec", spec)
    ch = choose_stories(ds, "UTS01", params)
    feats = feature_set(ds, source, source.layers(), ch["train"], ch["test"], ch["skipped"])
    rois = ds.rois("UTS01")
    res = fit_encoding(feats.designs(ch["train"], ch["test"], params, None, ds),
                       response_matrix(ds, "UTS01", ch["train"]), ds.repeats("UTS01"), params,
                       valid=ds.voxel_report("UTS01").valid, rois=rois, roi_groups=group_masks(rois),
                       subject="UTS01", features=source.spec, keep_predictions=True)
    res.summary["provenance"] = {"data": spec, "params": params.to_dict()}
    res.save(tmp_path / "enc")
    a = significance_from_result(tmp_path / "enc", tmp_path / "sig_a", n_perm=100, block_trs=4, seed=1)
    b = significance(ds, "UTS01", source, None, tmp_path / "sig_b", params, n_perm=100, block_trs=4, seed=1)
    (layer,) = a["layers"]
    np.testing.assert_array_equal(np.load(tmp_path / "sig_a" / f"p_{layer}.npy"),
                                  np.load(tmp_path / "sig_b" / f"p_{layer}.npy"))
    assert a["layers"][layer]["roi"] == b["layers"][layer]["roi"]


def test_normal_method_resolves_what_fdr_needs_and_matches_the_counts_elsewhere():
    # 200 permutations over ~5,000 voxels: the empirical p never drops below 1/201, so BH finds
    # nothing; the per-voxel normal fit of the same permutation null does, at the nominal FDR
    pred, y, planted = _synthetic(7, n=200, n_planted=50, n_null=5000, snr=1.0)
    emp = significance_arrays(pred, y, n_perm=200, block_trs=10, seed=1, method="empirical")
    nor = significance_arrays(pred, y, n_perm=200, block_trs=10, seed=1)
    assert emp["p"].min() >= 1 / 201 and not emp["significant"].any()
    assert nor["significant"][planted].mean() > 0.9
    disc = nor["significant"]
    assert (disc & ~planted).sum() / max(disc.sum(), 1) <= 0.1
    mid = (emp["p"] > 0.05) & (emp["p"] < 0.5)
    assert np.abs(nor["p"][mid] - emp["p"][mid]).mean() < 0.03  # the same null where counts resolve
    np.testing.assert_array_equal(nor["p_empirical"], emp["p"])
    with pytest.raises(ConfigError, match="p-value method"):
        significance_arrays(pred[:, :3], y[:, :3], n_perm=10, method="bonferroni")
