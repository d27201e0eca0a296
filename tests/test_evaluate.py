"""Comparing encoding results (against scipy's Wilcoxon and plain numpy), ``ckpt:`` specs of tuning
runs, ``evaluate-run`` and ``compare`` end to end on a ds003020 fixture."""

import json

import numpy as np
import pytest
from scipy.stats import wilcoxon

from core.analysis.compare import compare_maps, compare_results, paired_stats
from core.cli import main
from core.encoding import EncodingResult
from core.errors import ConfigError, DataError, ModelError
from core.models import load_model, model_info
from tests.ds_fixture import make_ds003020_fixture


def test_paired_stats_against_scipy_and_numpy():
    rng = np.random.default_rng(0)
    a = rng.standard_normal(200)
    b = a + 0.2 + 0.5 * rng.standard_normal(200)
    a[:5] = np.nan
    b[5:9] = np.nan
    s = paired_stats(a, b)
    both = np.isfinite(a) & np.isfinite(b)
    d = b[both] - a[both]
    assert s["n_voxels"] == 191 and s["mean_delta"] == pytest.approx(d.mean())
    assert s["share_improved"] == pytest.approx((d > 0).mean())
    assert s["wilcoxon_p"] == pytest.approx(wilcoxon(d).pvalue) and s["wilcoxon_p"] < 1e-3
    assert np.isnan(paired_stats(np.ones(3), np.ones(3))["wilcoxon_p"])  # all differences 0
    res = compare_maps(a, b, {"first": np.arange(200) < 100, "all": np.ones(200, bool)})
    np.testing.assert_allclose(res["delta"][both], d, atol=1e-6)
    assert res["regions"]["first"]["n_voxels"] == int(both[:100].sum())
    with pytest.raises(DataError, match="same subject"):
        compare_maps(a, b[:10], {})


def _result(subject, n, seed):
    from core.encoding.result import LayerScores

    rng = np.random.default_rng(seed)
    layers = {f"layer_{i}": LayerScores(r=rng.random(n).astype(np.float32), cc_norm=rng.random(n).astype(np.float32),
                                        alpha=np.ones(n, np.float32)) for i in range(3)}
    summary = {"layers": {k: {"mean_cc_norm": float(v.cc_norm.mean()), "mean_r": float(v.r.mean())}
                          for k, v in layers.items()}}
    return EncodingResult(subject=subject, features="x", cc_max=np.ones(n), layers=layers,
                          valid=np.ones(n, bool), summary=summary)


def test_compare_results_layers_best_and_bad_inputs():
    a, b = _result("S1", 50, 1), _result("S1", 50, 2)
    out = compare_results(a, b, {"cortex": np.ones(50, bool)})
    assert list(out["layers"]) == ["layer_0", "layer_1", "layer_2", "best"]
    best_b = max(b.summary["layers"], key=lambda k: b.summary["layers"][k]["mean_cc_norm"])
    assert out["layers"]["best"]["layer_other"] == best_b
    np.testing.assert_allclose(out["deltas"]["layer_1"], b.layers["layer_1"].cc_norm - a.layers["layer_1"].cc_norm)
    with pytest.raises(DataError, match="different subjects"):
        compare_results(a, _result("S2", 50, 3), {})
    with pytest.raises(DataError, match="voxel sets"):
        compare_results(a, _result("S1", 40, 3), {})
    with pytest.raises(ConfigError, match="metric"):
        compare_results(a, b, {}, metric="mse")


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory):
    from core.pipelines.tune import tune

    root = tmp_path_factory.mktemp("ds003020_eval") / "ds"
    make_ds003020_fixture(root, n_stories=5, duration_range=(56.0, 60.0))  # enough rows for the ridge CV
    out = tmp_path_factory.mktemp("run") / "run"
    tune(f"ds003020:{root}", "UTS01", "random:whisper-tiny", out,
         {"epochs": 1, "micro_batch": 4, "targets": "ceiling>0.4"})
    return root, out


def test_ckpt_spec_loads_the_export(tuned_run, tmp_path):
    root, run = tuned_run
    info = model_info(f"ckpt:{run}")
    assert info.family == "whisper" and info.n_layers == model_info("random:whisper-tiny").n_layers
    assert info.fingerprint != model_info("random:whisper-tiny").fingerprint  # tuned weights differ
    m = load_model(f"ckpt:{run / 'export'}")
    assert m.family == "whisper"
    with pytest.raises(ModelError, match="neither a tuning run"):
        model_info(f"ckpt:{tmp_path}")
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(ModelError, match="no export yet"):
        model_info(f"ckpt:{tmp_path}")


@pytest.mark.slow
def test_evaluate_run_and_compare_cli(tuned_run, tmp_path, capsys):
    root, run = tuned_run
    code = main(["-q", "evaluate-run", str(run), "--mode", "fast"])
    out = capsys.readouterr()
    assert code == 0, out.err
    s = json.loads(out.out)
    assert s["subject"] == "UTS01" and s["tuned"] == f"ckpt:{run.resolve()}" and s["protocol"] == "project"
    assert (run / "evaluation" / "summary.json").exists()
    base, tuned = EncodingResult.load(s["pretrained_result"]), EncodingResult.load(s["tuned_result"])
    for layer in base.layer_names():
        delta = np.load(run / "evaluation" / f"delta_{layer}.npy")
        np.testing.assert_allclose(delta, tuned.layers[layer].cc_norm - base.layers[layer].cc_norm, atol=1e-6)
        row = s["layers"][layer]["regions"]["cortex"]
        both = np.isfinite(base.layers[layer].cc_norm) & np.isfinite(tuned.layers[layer].cc_norm)
        assert row["n_voxels"] == int(both.sum())
    # compare: the same two results through the generic command
    code = main(["-q", "compare", s["pretrained_result"], s["tuned_result"], "--out", str(tmp_path / "cmp")])
    out = capsys.readouterr()
    assert code == 0, out.err
    c = json.loads(out.out)
    assert c["others"][s["tuned_result"]]["best"] == s["layers"]["best"]
    # not a run / a single result: one-line errors
    code = main(["-q", "evaluate-run", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "not a tuning run folder" in err
    code = main(["-q", "compare", s["pretrained_result"], "--out", str(tmp_path / "c2")])
    assert code == 2 and "baseline" in capsys.readouterr().err


def test_compare_subjects_wilcoxon_over_subjects(tmp_path, capsys, monkeypatch):
    from core.data import load_dataset
    from core.features import resolve_source
    from core.pipelines.encode import cached_encode

    monkeypatch.setenv("BTS_CACHE_DIR", str(tmp_path / "cache"))
    fx = make_ds003020_fixture(tmp_path / "ds", n_stories=5, seed=4)
    ds = load_dataset(f"ds003020:{fx['root']}")
    pairs = {s: [cached_encode(ds, s, resolve_source(f)) for f in ("lowlevel:wordrate", "lowlevel:powspec")]
             for s in ("UTS01", "UTS02")}
    args = [f"{a}:{b}" for a, b in pairs.values()]
    code = main(["-q", "compare-subjects", *args, "--out", str(tmp_path / "cs"), "--layer", "best"])
    out = capsys.readouterr()
    assert code == 0, out.err
    s = json.loads(out.out)
    cortex = s["regions"]["cortex"]
    assert s["subjects"] == ["UTS01", "UTS02"] and cortex["n_subjects"] == 2
    for subj, (a, b) in pairs.items():
        ra, rb = EncodingResult.load(a), EncodingResult.load(b)
        both = np.isfinite(ra.layers["wordrate"].cc_norm) & np.isfinite(rb.layers["powspec"].cc_norm)
        assert cortex["per_subject"][subj] == pytest.approx(
            [float(ra.layers["wordrate"].cc_norm[both].mean()), float(rb.layers["powspec"].cc_norm[both].mean())])
    assert cortex["min_possible_p"] == 0.5 and "cannot reach significance" in cortex["note"]
    code = main(["-q", "compare-subjects", args[0], args[0], "--out", str(tmp_path / "c2")])
    assert code == 2 and "two pairs" in capsys.readouterr().err
    code = main(["-q", "compare-subjects", "nocolon", "--out", str(tmp_path / "c3")])
    assert code == 2 and "BASE_DIR:OTHER_DIR" in capsys.readouterr().err
