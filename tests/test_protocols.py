"""The typed stages and the two evaluation protocols, against explicit references.

- the released design order (trim → z-score → stack → delay) equals a row-by-row reference;
- signed √R² alpha selection and the ddof-1 ceiling equal HuthLab's formulas written in numpy;
- ``fit_encoding`` on arrays equals scikit-learn's Ridge + scipy's pearsonr;
- ``EncodingResult`` round-trips through its folder; ROI groups, story lists and bad inputs.
"""

import json

import numpy as np
import pytest
from scipy.stats import pearsonr
from sklearn.linear_model import Ridge

from core.cli import parse_story_list
from core.data.roi_groups import DEFAULT_ROI_GROUPS, group_masks, read_roi_groups
from core.encoding import EncodeParams, EncodingResult, fit_encoding, repeat_ceiling
from core.encoding.ridge import bootstrap_splits, ridge_cv_scores
from core.errors import ConfigError, DataError
from core.features.design import design_matrix
from core.features.featureset import FeatureSet


def _zs(x):
    return (x - x.mean(0)) / x.std(0)


def _delayed_reference(x, delays):
    """Row by row: block j of row i is x[i - delays[j]] (zero outside)."""
    out = np.zeros((x.shape[0], x.shape[1] * len(delays)))
    for j, d in enumerate(delays):
        for i in range(x.shape[0]):
            if 0 <= i - d < x.shape[0]:
                out[i, j * x.shape[1]:(j + 1) * x.shape[1]] = x[i - d]
    return out


def test_released_order_equals_trim_zscore_delay_reference():
    rng = np.random.default_rng(0)
    feats = {s: rng.standard_normal((n, 3)) * (1 + i) + i for i, (s, n) in enumerate([("a", 40), ("b", 33), ("c", 51)])}
    got = design_matrix(feats, ["a", "b", "c"], (1, 2, 3, 4), order="trim-zscore-delay")
    ref = _delayed_reference(np.vstack([_zs(feats[s][10:-5]) for s in "abc"]), (1, 2, 3, 4))
    np.testing.assert_allclose(got, ref, atol=1e-5)
    # stacked delays: story b's first delayed rows hold story a's last rows (HuthLab), the first rows are 0
    assert not got[0].any()
    np.testing.assert_allclose(got[25, :3], _zs(feats["a"][10:-5])[-1], atol=1e-5)
    # the released test story starts at stamp 50 (response row 40), z-scored on that block
    test = design_matrix({"c": feats["c"]}, ["c"], (1, 2), order="trim-zscore-delay", trim_start=50 - 10 - 4)
    np.testing.assert_allclose(test, _delayed_reference(_zs(feats["c"][36:-5]), (1, 2)), atol=1e-5)
    # the project order differs: per-story delays on the untrimmed rows, so row 0 is not zero
    project = design_matrix(feats, ["a", "b", "c"], (1, 2, 3, 4))
    assert project.shape == got.shape and project[0].any()
    with pytest.raises(ConfigError, match="design order"):
        design_matrix(feats, ["a"], order="sideways")


def test_sqrt_r2_selection_equals_huthlab_formula():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((120, 8))
    Y = X @ rng.standard_normal((8, 5)) + 2.0 * rng.standard_normal((120, 5))
    Y[:, 4] = rng.standard_normal(120)  # a noise voxel: negative R² for small alphas
    splits = bootstrap_splits(120, n_boots=2, chunk_len=10, held_frac=0.25, seed=3)
    alphas = np.array([1.0, 10.0, 100.0])
    got = ridge_cv_scores(X, Y, splits, alphas, selection="r2")
    ref = np.zeros((3, 5))
    for train, held in splits:
        for i, a in enumerate(alphas):
            xt = X[train]
            w = np.linalg.solve(xt.T @ xt + a ** 2 * np.eye(8), xt.T @ Y[train])
            pred = X[held] @ w
            r2 = 1 - (Y[held] - pred).var(0) / Y[held].var(0)
            ref[i] += np.sign(r2) * np.sqrt(np.abs(r2)) / len(splits)
    np.testing.assert_allclose(got, ref, atol=2e-4)
    assert (ref[0, 4] < 0) and got[0, 4] < 0  # signed
    with pytest.raises(ConfigError, match="alpha selection"):
        ridge_cv_scores(X, Y, splits, alphas, selection="mse")


def test_released_ceiling_equals_spe_formula():
    rng = np.random.default_rng(2)
    noise = np.r_[0.5, 1, 2, 4, np.full(20, 1e3)]  # 20 pure-noise voxels: about half get SP <= 0
    signal = rng.standard_normal((60, noise.size))
    rep = signal[None] + rng.standard_normal((4, 60, noise.size)) * noise
    rep = _zs(rep.transpose(1, 0, 2).reshape(60, -1)).reshape(60, 4, -1).transpose(1, 0, 2)  # released: z-scored
    rep = np.concatenate([rng.standard_normal((4, 40, noise.size)), rep], axis=1)  # rows 0..39 not scored
    params = EncodeParams.for_protocol("released")
    got = repeat_ceiling(rep, params)
    y = rep[:, 40:].mean(0)
    sp = (4 * y.var(0, ddof=1) - 1) / 3
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = np.nan_to_num(1 / np.sqrt(1 + (1 / 4) * (1 / sp - 1)))
    np.testing.assert_allclose(got, ref, atol=1e-12)
    assert (sp[4:] <= 0).sum() >= 3 and np.all(got[sp <= 0] == 0.0)  # undefined ceiling → 0, as released
    project = repeat_ceiling(rep, EncodeParams())
    assert np.isnan(project[4:]).sum() >= 3 and not np.allclose(project[:3], got[:3])


def test_params_protocols_and_round_trip():
    rel = EncodeParams.for_protocol("released", seed=4)
    assert (rel.selection, rel.order, rel.test_start, rel.ceiling_ddof, rel.min_cc_max) == \
        ("r2", "trim-zscore-delay", 40, 1, None)
    proj = EncodeParams()
    assert proj.alphas == tuple(np.logspace(1, 4, 15)) and proj.delays == (1, 2, 3, 4)
    assert (proj.n_boots, proj.chunk_len, proj.held_frac, proj.min_cc_max) == (3, 20, 0.25, 0.1)
    assert EncodeParams.from_dict(json.loads(json.dumps(rel.to_dict()))) == rel
    for bad in [dict(protocol="paper"), dict(selection="x"), dict(test_start=-1), dict(ceiling_ddof=2),
                dict(min_cc_max=0.0), dict(train_stories=())]:
        with pytest.raises(ConfigError):
            EncodeParams(**bad)
    with pytest.raises(ConfigError, match="unknown encode parameter"):
        EncodeParams.from_dict({"alpha": 3})


def _arrays(seed=0, n_train=150, n_test=60, p=6, v=12):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((p, v))
    x_train, x_test = rng.standard_normal((n_train, p)), rng.standard_normal((n_test, p))
    y_train = x_train @ w + rng.standard_normal((n_train, v))
    reps = (x_test @ w)[None] + 1.5 * rng.standard_normal((3, n_test, v))
    return x_train.astype(np.float32), x_test.astype(np.float32), y_train.astype(np.float32), reps


def test_fit_encoding_equals_sklearn_ridge_and_scipy():
    x_train, x_test, y_train, reps = _arrays()
    valid = np.ones(12, dtype=bool)
    valid[3] = False
    rois = {"cortex": np.ones(12, bool), "A": np.arange(12) < 6, "B": np.arange(12) >= 6}
    groups = group_masks(rois, {"AB": ("A", "B"), "onlyA": ("A",)})
    params = EncodeParams(alphas=(7.0,), n_boots=1)
    res = fit_encoding({"l0": (x_train, x_test)}, y_train, reps, params, valid=valid, rois=rois,
                       roi_groups=groups, keep_weights=True, keep_predictions=True)
    sk = Ridge(alpha=7.0 ** 2, fit_intercept=False).fit(x_train, y_train[:, valid])
    np.testing.assert_allclose(res.layers["l0"].weights, sk.coef_.T, atol=1e-4)
    pred = sk.predict(x_test)
    y_mean = reps.mean(0)[:, valid]
    r_ref = [pearsonr(pred[:, j], y_mean[:, j])[0] for j in range(valid.sum())]
    ls = res.layers["l0"]
    np.testing.assert_allclose(ls.r[valid], r_ref, atol=1e-4)
    assert np.isnan(ls.r[3]) and np.isnan(ls.alpha[3]) and np.all(ls.alpha[valid] == 7.0)
    ccn = ls.r / res.cc_max
    ccn[~(res.cc_max >= 0.1)] = np.nan
    np.testing.assert_allclose(ls.cc_norm, ccn, atol=1e-5)
    table = res.summary["layers"]["l0"]
    fin = np.isfinite(ccn)
    assert table["roi"]["A"]["n_voxels"] == int((fin & rois["A"]).sum())
    assert table["roi_groups"]["AB"]["mean_cc_norm"] == pytest.approx(float(np.nanmean(ccn)), abs=1e-6)
    assert table["roi_groups"]["onlyA"]["mean_r"] == pytest.approx(table["roi"]["A"]["mean_r"])
    assert table["roi_groups"]["AB"]["members"] == ["A", "B"]
    with pytest.raises(DataError, match="training rows"):
        fit_encoding({"l0": (x_train[:-1], x_test)}, y_train, reps)
    with pytest.raises(DataError, match="no voxel"):
        fit_encoding({"l0": (x_train, x_test)}, y_train, reps, valid=np.zeros(12, bool))


def test_encoding_result_round_trip(tmp_path):
    x_train, x_test, y_train, reps = _arrays(1)
    res = fit_encoding({"a": (x_train, x_test), "b": (x_train[:, :3], x_test[:, :3])}, y_train, reps,
                       EncodeParams(alphas=(1.0, 10.0)), valid=np.arange(12) != 5, keep_predictions=True)
    res.summary["provenance"] = {"protocol": "project"}
    res.save(tmp_path / "enc")
    names = sorted(p.name for p in (tmp_path / "enc").iterdir())
    assert {"summary.json", "cc_max.npy", "r_a.npy", "cc_norm_b.npy", "alpha_a.npy", "pred_a.npy"} <= set(names)
    back = EncodingResult.load(tmp_path / "enc")
    assert back.layer_names() == ["a", "b"] and back.summary == json.loads(json.dumps(res.summary))
    np.testing.assert_array_equal(back.layers["b"].r, res.layers["b"].r)
    np.testing.assert_array_equal(back.layers["a"].prediction, res.layers["a"].prediction)
    assert back.layers["a"].weights is None and not back.valid[5] and back.valid.sum() == 11
    with pytest.raises(DataError, match="not an encoding result"):
        EncodingResult.load(tmp_path)


def test_feature_set_from_arrays_and_designs():
    rng = np.random.default_rng(5)
    fs = FeatureSet.from_arrays("custom:resid", {"l": {"s1": rng.standard_normal((40, 2)),
                                                       "s2": rng.standard_normal((60, 2))}})
    d = fs.designs(["s1"], ["s2"], EncodeParams.for_protocol("released"))
    assert d["l"][0].shape == (25, 8) and d["l"][1].shape == (60 - 5 - 50, 8)
    with pytest.raises(DataError, match="one n_features"):
        FeatureSet.from_arrays("bad", {"l": {"s1": np.zeros((40, 2)), "s2": np.zeros((40, 3))}})
    with pytest.raises(ConfigError, match="no layer"):
        fs.designs(["s1"], ["s2"], EncodeParams(), layers=["x"])


def test_roi_groups_files_and_errors(tmp_path):
    rois = {"AC": np.array([1, 0, 0], bool), "Broca": np.array([0, 1, 0], bool), "cortex": np.ones(3, bool)}
    default = group_masks(rois)  # members the subject lacks are left out of the defaults
    assert default["semantic"]["members"] == ["Broca"] and default["auditory"]["members"] == ["AC"]
    assert set(DEFAULT_ROI_GROUPS["semantic"]) == {"Broca", "sPMv", "IPS", "RSC", "FO"}
    f = tmp_path / "g.json"
    f.write_text(json.dumps({"lang": ["AC", "Broca"]}))
    np.testing.assert_array_equal(group_masks(rois, read_roi_groups(f))["lang"]["mask"], [1, 1, 0])
    f.write_text(json.dumps({"lang": ["AC", "V1"]}))
    with pytest.raises(ConfigError, match="V1"):
        group_masks(rois, read_roi_groups(f))
    for text in ["{not json", json.dumps(["AC"]), json.dumps({"x": []}), json.dumps({"x": "AC"})]:
        f.write_text(text)
        with pytest.raises(ConfigError, match="g.json"):
            read_roi_groups(f)
    with pytest.raises(ConfigError, match="does not exist"):
        read_roi_groups(tmp_path / "none.json")
    with pytest.raises(ConfigError, match="name of an ROI"):
        group_masks(rois, {"AC": ("Broca",)})


def test_story_lists(tmp_path):
    assert parse_story_list("a, b,c") == ("a", "b", "c")
    f = tmp_path / "train.txt"
    f.write_text("# training\nsouls\nlegacy  # long one\n\n")
    assert parse_story_list(f"@{f}") == parse_story_list(str(f)) == ("souls", "legacy")
    f.write_text(json.dumps(["x", "y"]))
    assert parse_story_list(f"@{f}") == ("x", "y")
    f.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="JSON list"):
        parse_story_list(f"@{f}")
    with pytest.raises(ConfigError, match="cannot read"):
        parse_story_list(f"@{tmp_path / 'missing.txt'}")
    with pytest.raises(ConfigError, match="no story"):
        parse_story_list(" , ")
