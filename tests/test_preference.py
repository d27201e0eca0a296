"""Semantic-vs-phonetic preference per layer (core.analysis.preference, core.pipelines.preference)."""

import json

import numpy as np
import pytest

from core.analysis.preference import column_r, layer_preference, out_of_fold_predictions, zscore


def _smooth(rng, n, q):
    """AR(1)-smooth columns (TR-like autocorrelation)."""
    e = rng.standard_normal((n, q))
    for t in range(1, n):
        e[t] = 0.7 * e[t - 1] + e[t]
    return e.astype(np.float32)


def _stories(seed=0, n_stories=5, n=120):
    rng = np.random.default_rng(seed)
    S = [_smooth(rng, n, 12) for _ in range(n_stories)]
    P = [_smooth(rng, n, 8) for _ in range(n_stories)]
    return rng, S, P


def test_semantic_features_prefer_semantics_and_phonetic_ones_do_not():
    rng, S, P = _stories()
    A, B = rng.standard_normal((12, 40)), rng.standard_normal((8, 40))
    sem_layer = [s @ A + 0.5 * rng.standard_normal((len(s), 40)) for s in S]
    phon_layer = [p @ B + 0.5 * rng.standard_normal((len(p), 40)) for p in P]
    a = layer_preference(sem_layer, S, P, n_boot=200, seed=1)
    b = layer_preference(phon_layer, S, P, n_boot=200, seed=1)
    assert a["semantic_r"] > 0.8 and abs(a["phonetic_r"]) < 0.2
    assert a["preference"] > 0.5 and a["ci"][0] > 0 and a["ci"][0] <= a["preference"] <= a["ci"][1]
    assert b["preference"] < -0.5 and b["ci"][1] < 0
    assert a["n_stories"] == 5 and a["n_trs"] == 600
    assert a["n_targets_used"] == {"semantic": 12, "phonetic": 8}
    again = layer_preference(sem_layer, S, P, n_boot=200, seed=1)  # seeded: same numbers
    assert again == a
    story_ci = layer_preference(sem_layer, S, P, n_boot=200, seed=1, ci_unit="story")["ci"]
    assert story_ci[0] > 0


def test_cv_r_matches_independent_sklearn_leave_one_story_out():
    """With a one-alpha grid, the held-out r equals sklearn Ridge(alpha=α²) fitted per held-out story
    (bootstrap_ridge's weights are V·diag(s/(s²+α²))·Uᵀ·Y) and numpy's corrcoef."""
    from sklearn.linear_model import Ridge

    rng, S, P = _stories(seed=3, n_stories=4, n=90)
    X = [zscore(s @ rng.standard_normal((12, 20)) + rng.standard_normal((90, 20))) for s in S]
    Y = [zscore(s) for s in S]
    alpha = 7.0
    ours = np.concatenate(out_of_fold_predictions(X, Y, alphas=[alpha]))
    ref = []
    for i in range(4):
        tr = [j for j in range(4) if j != i]
        m = Ridge(alpha=alpha ** 2, fit_intercept=False).fit(np.concatenate([X[j] for j in tr]),
                                                             np.concatenate([Y[j] for j in tr]))
        ref.append(m.predict(X[i]))
    ref = np.concatenate(ref)
    np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-4)
    y = np.concatenate(Y)
    r_ref = np.array([np.corrcoef(ref[:, k], y[:, k])[0, 1] for k in range(y.shape[1])])
    np.testing.assert_allclose(column_r(ours, y), r_ref, atol=1e-4)
    res = layer_preference(X, S, P, alphas=[alpha], n_boot=20)
    assert res["semantic_r"] == pytest.approx(r_ref.mean(), abs=1e-4)


def test_bad_inputs_are_one_line_errors():
    from core.errors import ConfigError, DataError

    rng, S, P = _stories(n_stories=3, n=60)
    X = [rng.standard_normal((60, 5)) for _ in range(3)]
    with pytest.raises(DataError, match="story 1 has 59 rows"):
        layer_preference(X, [S[0], S[1][:59], S[2]], P)
    with pytest.raises(DataError, match="at least 2 stories"):
        layer_preference(X[:1], S[:1], P[:1])
    with pytest.raises(ConfigError, match="ci_unit"):
        layer_preference(X, S, P, ci_unit="voxel")


@pytest.fixture(scope="module")
def tiny_demo():
    from core.data.demo import DemoConfig, open_demo

    return open_demo(DemoConfig.tiny())


@pytest.mark.slow
def test_end_to_end_on_tiny_demo(tiny_demo, tmp_path):
    from core.pipelines.preference import preference

    layers = ["layer_0", "layer_2"]
    out = preference(tiny_demo, "random:wav2vec2-tiny", layers, tmp_path / "pref", n_boot=50, mode="fast")
    assert out["model"] == "random:wav2vec2-tiny" and list(out["layers"]) == layers
    for layer in layers:
        v = out["layers"][layer]
        assert {"semantic_r", "phonetic_r", "preference", "ci"} <= set(v)
        assert np.isfinite([v["semantic_r"], v["phonetic_r"], v["preference"], *v["ci"]]).all()
        assert v["preference"] == pytest.approx(v["semantic_r"] - v["phonetic_r"])
        assert v["ci"][0] <= v["ci"][1] and v["n_stories"] == len(tiny_demo.stories)
        assert np.load(tmp_path / "pref" / f"boot_{layer}.npy").shape == (50,)
    assert json.loads((tmp_path / "pref" / "summary.json").read_text()) == out
    again = preference(tiny_demo, "random:wav2vec2-tiny", layers, tmp_path / "pref2", n_boot=50, mode="fast")
    assert again == out  # cached


def test_cli_registers_preference():
    from core.cli import build_parser

    args = build_parser().parse_args(["preference", "--data", "demo", "--model", "random:whisper-tiny",
                                      "--layers", "1,2", "--out", "x"])
    assert args.layers == "1,2" and args.ci_unit == "block" and callable(args.func)
