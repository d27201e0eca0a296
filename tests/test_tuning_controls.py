"""Ridge head initialisation and representation controls of brain-tuning (tiny models, few rows).

- ``core.tuning.heads.ridge_head``: after the init the model's outputs on the training samples equal
  an independent scikit-learn ridge (alpha² convention, intercept, standardised pooled features)
  with the chosen per-target alphas; the tune pipeline trains from it.
- ``representation:<spec>[#layer]`` controls: targets = another source's TR features, trimmed
  ``[10:-5]`` and z-scored per story, for training and validation stories, the test story unread.
"""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
import torch

from core.errors import ConfigError
from core.tuning import BrainTuningModel, TuningData, zscore_story
from tests.fakes import StoryGuard, make_dataset

N_VOX = 3


def _fresh_dataset(**kw):
    """make_dataset with a unique spec, so the TR-feature cache cannot answer for it."""
    ds = make_dataset(**kw)
    ds.spec = f"memory-{uuid.uuid4().hex[:8]}"
    return ds


# --------------------------------------------------------------------------- ridge head
def test_chunk_len_for():
    from core.tuning.heads import chunk_len_for

    assert chunk_len_for([100, 90]) == 20  # the paper's chunks when there are enough rows
    assert chunk_len_for([12, 13]) == 6  # largest length giving 4 chunks (2 + 2)
    assert chunk_len_for([4]) == 2  # fewer than 4 possible: 2 chunks will do
    with pytest.raises(ConfigError, match="ridge head"):
        chunk_len_for([3])


@pytest.fixture(scope="module")
def ridge_setup():
    from core.tuning.heads import ridge_head, set_head

    ds = make_dataset(n_stories=4, n_trs_run=32, n_voxels=N_VOX, seed=5)  # train rows 12 + 13
    data = TuningData.build(ds, "S01", np.arange(N_VOX))
    model = BrainTuningModel.from_spec("random:wav2vec2-tiny", N_VOX, device="cpu")
    # targets 0, 1: a linear read-out of the pooled features plus noise (ridge finds them); 2: noise
    waves, _ = data.train.arrays()
    model.eval()
    with torch.no_grad():
        pooled = model.pooled(torch.from_numpy(waves)).numpy().astype(np.float64)
    rng = np.random.default_rng(0)
    pz = (pooled - pooled.mean(0)) / pooled.std(0)
    sig = pz @ rng.standard_normal((pz.shape[1], N_VOX)) / np.sqrt(pz.shape[1])
    y = sig * np.array([1.0, 1.0, 0.0]) + rng.standard_normal(sig.shape) * np.array([0.1, 0.3, 1.0])
    start = 0
    for st in data.train._stories:
        st.targets = zscore_story(y[start:start + len(st.targets)])
        start += len(st.targets)
    model.train()
    w, b, rep = ridge_head(model, data.train, full=True)
    assert model.training  # mode restored
    set_head(model, w, b)
    return data, model, w, b, rep


def test_ridge_head_equals_sklearn_ridge(ridge_setup):
    from sklearn.linear_model import Ridge

    from core.encoding.ridge import DEFAULT_ALPHAS

    data, model, w, b, rep = ridge_setup
    waves, y = data.train.arrays()
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(waves)).numpy()
        pooled = model.pooled(torch.from_numpy(waves)).numpy().astype(np.float64)
    sd = pooled.std(0)
    X = (pooled - pooled.mean(0)) / np.where(sd > 0, sd, 1.0)
    alphas = np.asarray(rep["alphas"])
    assert alphas.shape == (N_VOX,) and np.all(np.isin(alphas, DEFAULT_ALPHAS))
    ref = Ridge(alpha=alphas ** 2, fit_intercept=True).fit(X, y.astype(np.float64)).predict(X)
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)
    assert np.all(np.abs(ref[:, :2]).max(0) > 0.1)  # signal targets: a real (non-zero) prediction
    assert rep["alphas"][0] < rep["alphas"][2]  # the noise target gets the stronger penalty
    assert w.shape == (32, N_VOX) and b.shape == (N_VOX,) and w.dtype == np.float32
    assert rep["chunk_len"] == 6 and rep["segments"] == [12, 13] and rep["n_samples"] == 25
    assert sum(rep["alpha_counts"].values()) == N_VOX and rep["hidden"] == 32
    json.dumps(rep)


def test_ridge_head_trains(tmp_path, ridge_setup):
    from core.tuning import TuneParams
    from core.tuning.trainer import train

    data, model, w, b, rep = ridge_setup
    head0 = model.head.weight.detach().clone()
    p = TuneParams(epochs=1, batch_size=8, micro_batch=4, schedule="constant", patience=0,
                   head_lr=1e-2, backbone_lr=1e-4, head_init="ridge")
    out = train(tmp_path, model, data, p)
    assert out["epochs_run"] == 1 and np.isfinite(out["best_val"])
    assert not torch.allclose(model.head.weight, head0)


def test_ridge_head_bad_input():
    from core.tuning.heads import pooled_features, set_head

    ds = make_dataset(n_stories=4, n_trs_run=24, n_voxels=N_VOX)
    data = TuningData.build(ds, "S01", np.arange(N_VOX))
    model = BrainTuningModel.from_spec("random:wav2vec2-tiny", N_VOX, device="cpu")
    with pytest.raises(ConfigError, match="batch"):
        pooled_features(model, data.train, batch=0)
    with pytest.raises(ConfigError, match=r"\(32, 3\)"):
        set_head(model, np.zeros((3, 32), np.float32))


# --------------------------------------------------------------------------- representation
@pytest.mark.parametrize("spec, layer, n_feat", [("lowlevel:powspec", "powspec", 32),
                                                 ("lowlevel:wordrate#wordrate", "wordrate", 1)])
def test_representation_targets_match_trimmed_zscored_features(spec, layer, n_feat):
    from core.data import timing
    from core.features import get_source, tr_features
    from core.tuning.controls import apply_control

    ds = _fresh_dataset(n_stories=4, n_trs_run=32, n_voxels=N_VOX, seed=7)
    guarded = StoryGuard(ds)
    data = TuningData.build(guarded, "S01", np.arange(N_VOX))
    guarded.read.clear()
    rep = apply_control(data, f"representation:{spec}", seed=0, dataset=guarded)
    stories = data.train.stories + data.val.stories
    assert guarded.read == set(stories) and ds.test_story not in stories  # computed, not cached
    assert rep["source"] == spec.split("#")[0] and rep["layer"] == layer and rep["n_features"] == n_feat
    assert data.report["n_voxels"] == n_feat
    ref = tr_features(ds, get_source(spec.split("#")[0]), [layer], stories)[layer]
    for split in (data.train, data.val):
        for st in split._stories:
            x = ref[st.name].astype(np.float64)
            assert x.shape == (ds.n_trs_run(st.name) - 5, n_feat)
            x = x[10:-5]
            sd = x.std(0)
            want = np.where(sd > 0, (x - x.mean(0)) / np.where(sd > 0, sd, 1), 0.0)
            assert st.targets.shape == (timing.n_response_rows(ds.n_trs_run(st.name)), n_feat)
            assert st.targets.dtype == np.float32
            np.testing.assert_allclose(st.targets, want, atol=1e-5)
    w, y = data.train[0]
    assert y.shape == (n_feat,)
    _, yv = data.val.arrays()
    assert yv.shape[1] == n_feat


@pytest.mark.parametrize("control, match", [
    ("representation:", "feature spec"),
    ("representation:lowlevel:powspec#", "layer"),
    ("representation:lowlevel:nosuchspace", "nosuchspace"),
    ("representation:nosuch:thing", "unknown feature spec"),
    ("representation:lowlevel:powspec#layer_3", "no layer 'layer_3'"),
    ("stimulus", "stimulus"),
    ("random", "unknown control"),
])
def test_representation_bad_specs_one_line(control, match):
    from core.tuning.controls import apply_control

    ds = make_dataset(n_stories=4, n_trs_run=24, n_voxels=N_VOX)
    data = TuningData.build(ds, "S01", np.arange(N_VOX))
    with pytest.raises(ConfigError, match=match) as err:
        apply_control(data, control, dataset=ds)
    assert "\n" not in str(err.value)


def test_parse_control():
    from core.tuning.controls import parse_control

    assert parse_control(None) is None
    assert parse_control("chunk-shuffle") == {"kind": "chunk-shuffle"}
    assert parse_control("representation:bundled:whisper-base#layer_6") == \
        {"kind": "representation", "spec": "bundled:whisper-base", "layer": "layer_6"}
    assert parse_control("representation:semantic:minilm") == \
        {"kind": "representation", "spec": "semantic:minilm", "layer": None}


# --------------------------------------------------------------------------- pipeline / CLI
@pytest.fixture(scope="module")
def ds_root(tmp_path_factory):
    from tests.ds_fixture import make_ds003020_fixture

    root = tmp_path_factory.mktemp("ds003020") / "ds"
    make_ds003020_fixture(root, n_stories=4, duration_range=(40.0, 44.0))
    return root


def test_tune_representation_control_with_ridge_head(tmp_path, ds_root):
    from core.pipelines.tune import tune

    params = dict(epochs=1, micro_batch=4, batch_size=8, targets="ceiling>0.4", head_init="ridge")
    s = tune(f"ds003020:{ds_root}", "UTS01", "random:wav2vec2-tiny", tmp_path / "run", params,
             control="representation:lowlevel:powspec", device="cpu")
    assert s["n_targets"] == 32 and s["epochs_run"] == 1 and s["export"]
    assert s["control_report"]["layer"] == "powspec" and s["control_report"]["n_features"] == 32
    hr = s["head_report"]
    assert hr["head_init"] == "ridge" and hr["n_targets"] == 32 and hr["n_samples"] == s["n_train"]
    info = json.loads((tmp_path / "run" / "export" / "tuning.json").read_text())
    assert info["n_voxels"] == 32 and info["head_report"]["chunk_len"] == hr["chunk_len"]
    assert json.loads((tmp_path / "run" / "status.json").read_text())["state"] == "done"


def test_cli_control_and_head_init(tmp_path, capsys):
    from core.cli import build_parser, main

    args = build_parser().parse_args(["tune", "--data", "demo", "--subject", "S1", "--model", "m",
                                      "--out", "o", "--head-init", "ridge", "--control",
                                      "representation:semantic:minilm"])
    assert args.head_init == "ridge" and args.control == "representation:semantic:minilm"
    base = ["-q", "tune", "--data", "demo", "--subject", "S1", "--model", "random:wav2vec2-tiny",
            "--out", str(tmp_path / "x")]
    for extra, match in ((["--control", "representation:nosuch:x"], "unknown feature spec"),
                         (["--control", "stimulus-x"], "stimulus-x"),
                         (["--control", "stimulus", "--head-init", "ridge"], "no")):
        code = main([*base, *extra])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.startswith("error:") and match in err and "\n" not in err
        assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["tune", "--data", "d", "--subject", "s", "--model", "m", "--out", "o",
                                   "--head-init", "xavier"])
