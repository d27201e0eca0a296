"""Variance partitioning: planted voxels, closed forms, himalaya vs sklearn, CLI end to end, bad input."""

import json

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.metrics import roc_auc_score

from core.analysis.partition import fit_banded, partition_arrays, partition_scores, r2_columns
from core.cli import main
from core.errors import ConfigError


def _planted(seed=0, n_train=300, n_test=100, pa=5, pb=4, per_type=15, noise=1.0):
    """Voxels driven by A only, B only, both, none (codes 1, 2, 3, 0)."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    xa = rng.standard_normal((n, pa)).astype(np.float32)
    xb = rng.standard_normal((n, pb)).astype(np.float32)
    types = np.repeat([0, 1, 2, 3], per_type)
    wa = rng.standard_normal((pa, types.size)) * np.isin(types, [1, 3])
    wb = rng.standard_normal((pb, types.size)) * np.isin(types, [2, 3])
    sig = xa @ wa + xb @ wb
    sig /= np.where(sig.std(0) > 0, sig.std(0), 1.0)
    y = (sig + noise * rng.standard_normal(sig.shape)).astype(np.float32)
    designs = {"A": (xa[:n_train], xa[n_train:]), "B": (xb[:n_train], xb[n_train:])}
    return designs, y[:n_train], y[n_train:], types


def test_planted_voxels_partitioned():
    designs, ytr, yte, types = _planted()
    res = partition_arrays(designs, ytr, yte)
    pref = res["preference"]
    assert pref.shape == types.shape and np.all(np.abs(pref) <= 1)
    a_only, b_only = types == 1, types == 2
    labels = np.r_[np.ones(a_only.sum()), np.zeros(b_only.sum())]
    assert roc_auc_score(labels, np.r_[pref[a_only], pref[b_only]]) > 0.9
    assert np.mean(res["unique_a"][a_only]) > 0.2 and abs(np.mean(res["unique_b"][a_only])) < 0.05
    assert np.mean(res["unique_b"][b_only]) > 0.2 and abs(np.mean(res["unique_a"][b_only])) < 0.05
    both = types == 3
    assert np.mean(res["unique_a"][both]) > 0.05 and np.mean(res["unique_b"][both]) > 0.05
    assert np.mean(res["r2_joint"][types == 0]) < 0.05
    # the identity of the partition
    np.testing.assert_allclose(res["unique_a"] + res["unique_b"] + res["shared"], res["r2_joint"], atol=1e-5)


def test_closed_form_noiseless():
    """A = [C, A'], B = [C, B'] with C shared; y = C w_c + A' w_a + B' w_b, no noise, training columns
    orthonormal: each single-space fit recovers its own part exactly, so on the test story
    R²_A = 1 − Σ(b')²/SS, R²_B = 1 − Σ(a')²/SS, R²_AB = 1, shared = 1 − (Σ a'² + Σ b'²)/SS."""
    rng = np.random.default_rng(3)
    n_train, n_test = 200, 60
    q, _ = np.linalg.qr(rng.standard_normal((n_train, 6)))
    train = q * np.sqrt(n_train)
    test = rng.standard_normal((n_test, 6))
    c, a1, b1 = slice(0, 2), slice(2, 4), slice(4, 6)
    w = rng.standard_normal((6, 5))
    designs = {"A": (np.c_[train[:, c], train[:, a1]], np.c_[test[:, c], test[:, a1]]),
               "B": (np.c_[train[:, c], train[:, b1]], np.c_[test[:, c], test[:, b1]])}
    ytr, yte = train @ w, test @ w
    res = partition_arrays(designs, ytr, yte, alphas=np.logspace(-8, -4, 3))  # noiseless: (near) no shrinkage
    part_a, part_b = test[:, a1] @ w[a1], test[:, b1] @ w[b1]
    ss = ((yte - yte.mean(0)) ** 2).sum(0)
    r2_a = 1 - (part_b ** 2).sum(0) / ss  # the A model misses exactly B's own part
    r2_b = 1 - (part_a ** 2).sum(0) / ss
    np.testing.assert_allclose(res["r2_joint"], 1.0, atol=1e-4)
    np.testing.assert_allclose(res["r2_a"], r2_a, atol=1e-4)
    np.testing.assert_allclose(res["r2_b"], r2_b, atol=1e-4)
    np.testing.assert_allclose(res["unique_a"], 1 - r2_b, atol=1e-4)
    np.testing.assert_allclose(res["unique_b"], 1 - r2_a, atol=1e-4)
    np.testing.assert_allclose(res["shared"], r2_a + r2_b - 1, atol=1e-4)


def test_scores_formulae():
    s = partition_scores(np.array([0.3, 0.0]), np.array([0.1, 0.0]), np.array([0.35, 0.0]))
    np.testing.assert_allclose(s["unique_a"], [0.25, 0.0])
    np.testing.assert_allclose(s["unique_b"], [0.05, 0.0])
    np.testing.assert_allclose(s["shared"], [0.05, 0.0])
    np.testing.assert_allclose(s["preference"], [0.2 / (0.3 + 1e-6), 0.0])
    y = np.array([[1.0], [2.0], [3.0]])
    np.testing.assert_allclose(r2_columns(np.array([[1.0], [2.0], [2.0]]), y), [1 - 1 / 2])


def test_himalaya_banded_equals_sklearn_ridge_with_equal_band_alphas():
    """With the band weights fixed at (0.5, 0.5) and one alpha, the banded model is ridge on [A, B]
    with penalty alpha / 0.5 (himalaya: Z_i = exp(δ_i/2) X_i, δ_i = log(γ_i / α))."""
    rng = np.random.default_rng(1)
    xa, xb = rng.standard_normal((80, 4)), rng.standard_normal((80, 3))
    y = rng.standard_normal((80, 6))
    ta, tb = rng.standard_normal((20, 4)), rng.standard_normal((20, 3))
    alpha = 7.0
    out = fit_banded([xa, xb], y, [ta, tb], alphas=[alpha], gammas=np.array([[0.5, 0.5]]), splits=3)
    ref = Ridge(alpha=alpha / 0.5, fit_intercept=False).fit(np.c_[xa, xb], y).predict(np.c_[ta, tb])
    np.testing.assert_allclose(out["prediction"], ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["alphas"], alpha / 1.0 * 0.5 / 0.5, rtol=1e-5)


@pytest.mark.parametrize("names", [["A"], ["A", "B", "C"]])
def test_arrays_need_two_spaces(names):
    x = np.zeros((50, 2), np.float32)
    with pytest.raises(ConfigError, match="exactly two"):
        partition_arrays({n: (x, x[:10]) for n in names}, np.zeros((50, 3)), np.zeros((10, 3)))


# --- CLI end to end on the ds003020 fixture ------------------------------------------------------

@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    from tests.ds_fixture import make_ds003020_fixture

    return make_ds003020_fixture(tmp_path_factory.mktemp("ds-part") / "root", n_stories=5,
                                 n_voxels=120, duration_range=(56.0, 60.0))


def _run(capsys, *argv):
    code = main(["-q", *argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_cli_partition_acoustic_voxels_lean_to_powspec(fixture, capsys, tmp_path):
    out = tmp_path / "part"
    code, printed, err = _run(capsys, "partition", "--data", f"ds003020:{fixture['root']}", "--subject",
                              "UTS01", "--spaces", "lowlevel:wordrate,lowlevel:powspec", "--out", str(out))
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["spaces"] == ["lowlevel:wordrate", "lowlevel:powspec"]
    assert json.loads(printed)["roi"] == summary["roi"]
    n_vox = fixture["subjects"]["UTS01"]["n_voxels"]
    for name in ("preference", "unique_lowlevel_wordrate", "unique_lowlevel_powspec", "shared", "r2_joint"):
        assert np.load(out / f"{name}.npy").shape == (n_vox,)
    pref = np.load(out / "preference.npy")
    plant = fixture["planted"]["UTS01"]
    assert np.isnan(pref[plant["nan"]]).all() and np.isnan(pref[plant["constant"]]).all()
    # acoustic voxels lean to powspec (< 0); word-rate voxels to wordrate (> 0)
    assert np.nanmean(pref[plant["acoustic"]]) < 0
    labels = np.r_[np.ones(len(plant["wordrate"])), np.zeros(len(plant["acoustic"]))]
    assert roc_auc_score(labels, np.r_[pref[plant["wordrate"]], pref[plant["acoustic"]]]) > 0.8
    assert summary["roi"]["cortex"]["n_voxels"] == n_vox - 2
    assert set(summary["roi"]["cortex"]) >= {"preference", "unique_lowlevel_wordrate", "unique_lowlevel_powspec",
                                              "shared", "n_voxels"}
    assert summary["provenance"]["code_version"] and "cache_dir" not in summary
    # a second run is served from the cache (same numbers)
    out2 = tmp_path / "part2"
    assert _run(capsys, "partition", "--data", f"ds003020:{fixture['root']}", "--subject", "UTS01",
                "--spaces", "lowlevel:wordrate,lowlevel:powspec", "--out", str(out2))[0] == 0
    np.testing.assert_array_equal(np.load(out2 / "preference.npy"), pref)


@pytest.mark.parametrize("spaces, needle", [
    ("lowlevel:powspec", "exactly two"),
    ("lowlevel:powspec,lowlevel:wordrate,lowlevel:phonemes", "exactly two"),
    ("lowlevel:powspec,lowlevel:nope", "nope"),
    ("lowlevel:powspec,lowlevel:powspec", "twice"),
])
def test_cli_bad_spaces(fixture, capsys, tmp_path, spaces, needle):
    code, _, err = _run(capsys, "partition", "--data", f"ds003020:{fixture['root']}", "--subject", "UTS01",
                        "--spaces", spaces, "--out", str(tmp_path / "x"))
    assert code == 2
    lines = [x for x in err.strip().splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0]
    assert not (tmp_path / "x").exists()
