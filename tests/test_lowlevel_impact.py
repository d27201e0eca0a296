"""Low-level impact: cross-validated residualisation, percent drop, and the CLI end to end."""

import json

import numpy as np
import pytest

from core.analysis.lowlevel_impact import (cv_folds, cv_predict, percent_drop, region_drop,
                                           residualize)
from core.cli import main
from core.errors import ConfigError, DataError
from tests.ds_fixture import make_ds003020_fixture


def synthetic(n_stories=4, rows=60, q=5, seed=0):
    rng = np.random.default_rng(seed)
    names = [f"s{i}" for i in range(n_stories)]
    x = {s: rng.standard_normal((rows + i, q)) * [1, 10, 0.1, 1, 3] for i, s in enumerate(names)}
    b = rng.standard_normal((q, 2))
    y = {s: np.column_stack([x[s] @ b + 0.01 * rng.standard_normal((len(x[s]), 2)),
                             rng.standard_normal(len(x[s]))]) for s in names}
    return names, x, y


def test_linear_part_is_removed_and_the_rest_kept():
    names, x, y = synthetic()
    res = residualize(y, x, names)
    yy, rr = np.concatenate([y[s] for s in names]), np.concatenate([res[s] for s in names])
    ratio = rr.var(0) / yy.var(0)
    assert np.all(ratio[:2] < 0.05)  # a linear function of the low-level space: removed
    assert ratio[2] > 0.8  # independent of it: kept
    assert all(res[s].dtype == np.float32 and res[s].shape == y[s].shape for s in names)


def test_exactly_explained_feature_becomes_zero():
    names, x, _ = synthetic()
    y = {s: x[s][:, :1] * 3.0 - 2.0 for s in names}
    res = residualize(y, x, names)
    assert all(np.all(res[s] == 0) for s in names)


def test_equals_an_explicit_fold_loop_with_sklearn_ridge():
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    names, x, y = synthetic()
    pred, info = cv_predict(y, x, names, n_folds=10)
    assert info["fold_stories"] == [[s] for s in names]  # 4 stories < 10 folds: one story per fold
    X, Y = np.concatenate([x[s] for s in names]), np.concatenate([y[s] for s in names])
    want = np.empty_like(Y)
    starts = np.cumsum([0] + [len(x[s]) for s in names])
    for k, s in enumerate(names):
        test = np.arange(starts[k], starts[k + 1])
        np.testing.assert_array_equal(info["folds"][k], test)
        train = np.setdiff1d(np.arange(len(X)), test)
        for j in range(Y.shape[1]):
            m = make_pipeline(StandardScaler(), Ridge(alpha=info["alphas"][k, j]))
            want[test, j] = m.fit(X[train], Y[train, j]).predict(X[test])
    np.testing.assert_allclose(np.concatenate([pred[s] for s in names]), want, rtol=1e-6, atol=1e-8)
    assert np.all(info["alphas"][:, 2] > info["alphas"][:, 0])  # noise column: more shrinkage
    res = residualize(y, x, names)
    np.testing.assert_allclose(res["s1"][:, 2], (y["s1"] - pred["s1"])[:, 2], rtol=1e-5, atol=1e-6)


def test_folds():
    f = cv_folds([10, 11, 12, 13, 14], n_folds=2)  # by story: stories {0,1,2}, {3,4}
    assert [g for _, g in f] == [[0, 1, 2], [3, 4]]
    np.testing.assert_array_equal(np.concatenate([t for t, _ in f]), np.arange(60))
    f = cv_folds([40, 30], n_folds=10)  # 2 stories: 10 contiguous row blocks
    assert len(f) == 10 and all(g == [] for _, g in f)
    np.testing.assert_array_equal(np.concatenate([t for t, _ in f]), np.arange(70))
    with pytest.raises(ConfigError):
        cv_folds([10, 10, 10], n_folds=1)


def test_percent_drop_closed_form():
    full = np.array([0.5, 0.2, 0.0, -0.1, np.nan, 0.4, 0.3])
    resid = np.array([0.25, 0.3, 0.1, 0.0, 0.2, np.nan, 0.0])
    d = percent_drop(full, resid)
    np.testing.assert_allclose(d[[0, 1, 6]], [50.0, -50.0, 100.0])
    assert np.all(np.isnan(d[[2, 3, 4, 5]]))
    masks = {"a": np.array([1, 1, 0, 0, 0, 0, 1], bool), "b": np.array([0, 0, 0, 0, 1, 1, 0], bool)}
    t = region_drop(full, resid, masks)  # drop of the means over voxels scored in both
    assert t["a"]["n_voxels"] == 3
    np.testing.assert_allclose([t["a"]["full"], t["a"]["resid"]], [1.0 / 3, 0.55 / 3])
    np.testing.assert_allclose(t["a"]["drop_percent"], (1.0 - 0.55) / 1.0 * 100)
    assert t["b"]["n_voxels"] == 0 and np.isnan(t["b"]["drop_percent"])


def test_residualize_bad_inputs():
    names, x, y = synthetic()
    other = {f"other{i}": v for i, v in enumerate(x.values())}
    with pytest.raises(DataError, match="same stories") as e:
        residualize(y, other, names)
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="same rows"):
        residualize(y, {s: v[:-1] for s, v in x.items()}, names)
    with pytest.raises(ConfigError):
        residualize(y, x, [])


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return make_ds003020_fixture(tmp_path_factory.mktemp("ds") / "ds003020", n_stories=5,
                                 duration_range=(56.0, 60.0))


def run(capsys, *argv):
    code = main(["-q", "lowlevel-impact", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_end_to_end(fixture, capsys, tmp_path):
    data = f"ds003020:{fixture['root']}"
    plant = fixture["planted"]["UTS01"]["wordrate"]
    drops = {}
    for rem in ("lowlevel:wordrate", "lowlevel:powspec"):
        out = tmp_path / rem.split(":")[1]
        code, printed, err = run(capsys, "--data", data, "--subject", "UTS01", "--features",
                                 "lowlevel:wordrate", "--remove", rem, "--out", str(out))
        assert code == 0, err
        assert json.loads(printed)["remove"] == [rem]
        summary = json.loads((out / "summary.json").read_text())
        assert summary["subject"] == "UTS01" and summary["model"] == "lowlevel:wordrate"
        assert summary["remove"] == [rem] and set(summary["layers"]) == {"wordrate"}
        row = summary["layers"]["wordrate"]["roi"]["cortex"]
        assert set(row) == {"full", "resid", "drop_percent", "n_voxels"}
        assert "provenance" in summary and "roi_groups" in summary["layers"]["wordrate"]
        full, resid = np.load(out / "full_wordrate.npy"), np.load(out / "resid_wordrate.npy")
        drop = np.load(out / "drop_wordrate.npy")
        assert drop.dtype == np.float32 and drop.shape == full.shape == resid.shape
        np.testing.assert_allclose(drop, percent_drop(full, resid), rtol=1e-5, equal_nan=True)
        assert np.nanmean(full[plant]) > 0.5  # the full model predicts the word-rate voxels
        drops[rem] = np.nanmedian(drop[plant])
    assert drops["lowlevel:wordrate"] > 95
    assert drops["lowlevel:powspec"] < 30
    # cached: the same call again reuses the cache folder (same arrays)
    code, _, _ = run(capsys, "--data", data, "--subject", "UTS01", "--features", "lowlevel:wordrate",
                     "--remove", "lowlevel:powspec", "--out", str(tmp_path / "again"))
    assert code == 0
    np.testing.assert_array_equal(np.load(tmp_path / "again" / "drop_wordrate.npy"),
                                  np.load(tmp_path / "powspec" / "drop_wordrate.npy"))


@pytest.mark.parametrize("remove,needle", [
    ("lowlevel:nope", "unknown feature space lowlevel:nope"),
    (",", "--remove needs at least one feature space"),
    ("bundled:whisper-tiny.en", "--remove takes feature spaces"),
])
def test_cli_bad_input(fixture, capsys, tmp_path, remove, needle):
    code, _, err = run(capsys, "--data", f"ds003020:{fixture['root']}", "--subject", "UTS01",
                       "--features", "lowlevel:wordrate", "--remove", remove, "--out", str(tmp_path / "o"))
    assert code == 2 and needle in err and err.strip().count("\n") == 0
    assert not (tmp_path / "o").exists()
