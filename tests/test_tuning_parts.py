"""Brain-tuning parts (core/tuning): samples, targets, model, losses, schedules, params.

Each part is checked against an independent reference (hand-computed spans, the released code's
formula written out again, numpy closed forms) and against bad input.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.data import timing
from core.errors import ConfigError, DataError
from core.tuning import (BrainTuningModel, TuneParams, TuningData, build_optimizer, by_ceiling,
                         by_encoding, by_roi, get_loss, preset, select_targets, snippet_bounds,
                         story_samples)
from tests.fakes import InMemoryDataset, StoryGuard, make_dataset, make_story

SR = 16_000


# --------------------------------------------------------------------------- samples
def _clock(seconds: float) -> np.ndarray:
    """Audio whose sample j has value j + 1 (0 marks padding): exact in float32 below 2^24."""
    return np.arange(1, int(round(seconds * SR)) + 1, dtype=np.float32)


def _span(a: float, b: float) -> np.ndarray:
    """Values of _clock over [a, b) seconds."""
    return np.arange(int(a * SR) + 1, int(b * SR) + 1, dtype=np.float32)


def _released(audio, n_trs_run, scanner_tr, row):
    """The released get_inds2tr_map + make_delayed for one row, written out independently."""
    t = scanner_tr * (np.arange(n_trs_run - 5) - 4.5) + 1.0
    parts = []
    for k in range(row + 10 - 4, row + 10 + 1):
        s, e = SR * int(t[k - 1]), SR * int(t[k])
        seg = audio[s:e]
        if seg.shape[0] < 2 * SR:
            seg = np.concatenate([np.zeros(2 * SR - seg.shape[0], np.float32), seg])
        parts.append(seg[-2 * SR:])
    return np.concatenate(parts)


def test_samples_tr2_exact_spans():
    R = 36  # 52 s of audio, 16 response rows
    audio = _clock(2 * R - 20)
    x = story_samples(audio, R, 2.0)
    assert x.shape == (16, 160_000) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0], _span(2, 12))  # row 0: TRs 6..10 = [2i+2, 2i+12) s
    np.testing.assert_array_equal(x[7], _span(16, 26))
    np.testing.assert_array_equal(x[15], _span(32, 42))
    # response row i's own TR (delay 0, the last 2 s) is acquired over [2i+10, 2i+12) (ds003020.md)
    for i in (0, 7, 15):
        np.testing.assert_array_equal(x[i][-2 * SR:], _span(2 * i + 10, 2 * i + 12))


def test_samples_left_padding_and_truncated_end():
    R = 36
    # scanner TR 1.5 s: whole-second cuts give 1 s snippets (left-padded) between 2 s ones
    x = story_samples(_clock(52), R, 1.5, rows=[0])[0]
    z = np.zeros(SR, np.float32)
    want = np.concatenate([_span(1, 3), z, _span(3, 4), _span(4, 6), z, _span(6, 7), _span(7, 9)])
    np.testing.assert_array_equal(x, want)
    # audio ending at 41 s: the last row's own TR [40, 42) keeps [40, 41) s, left-padded
    last = story_samples(_clock(41), R, 2.0, rows=[15])[0]
    np.testing.assert_array_equal(last[:-2 * SR], _span(32, 40))
    np.testing.assert_array_equal(last[-2 * SR:], np.concatenate([z, _span(40, 41)]))


@pytest.mark.parametrize("scanner_tr", [2.0, 2.0045, 2.5, 1.5])
def test_samples_match_released_formula(scanner_tr):
    R = 40
    audio = _clock(2 * R - 20)
    rows = [0, 3, 11, 19]
    x = story_samples(audio, R, scanner_tr, rows=rows)
    for j, r in enumerate(rows):
        np.testing.assert_array_equal(x[j], _released(audio, R, scanner_tr, r))


def test_samples_scanner_tr_drift():
    R = 240  # long enough for 0.0045 s/TR to add up to a whole second
    b = snippet_bounds(R, 2.0045)
    k = 220 + 10
    assert tuple(b[k] // SR) == (451, 453)  # at TR 2.0 s it would be (450, 452)
    assert tuple(snippet_bounds(R, 2.0)[k] // SR) == (450, 452)


class _NoTestStory(StoryGuard):
    """A dataset wrapper that fails the test if the test story's data are read."""

    def voxel_report(self, subject):
        raise AssertionError("voxel_report reads the test story's repeats")


def test_tuning_data_splits_targets_and_never_reads_test_story():
    ds = make_dataset(n_stories=4, n_voxels=5)
    guarded = _NoTestStory(ds)
    vox = np.array([0, 2, 4])
    data = TuningData.build(guarded, "S01", vox)
    assert data.train.stories == ["story0", "story1"] and data.val.stories == ["story2"]
    assert len(data.train) == ds.n_trs("story0") + ds.n_trs("story1")
    w, y = data.train[0]
    assert w.shape == (160_000,) and w.dtype == torch.float32 and y.shape == (3,)
    y0 = ds.responses("S01", "story0")[:, vox]
    np.testing.assert_allclose(y.numpy(), ((y0 - y0.mean(0)) / y0.std(0))[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(w.numpy(), story_samples(ds.audio("story0"), ds.n_trs_run("story0"),
                                                           ds.scanner_tr, rows=[0])[0])
    xv, yv = data.val.arrays()
    assert xv.shape == (ds.n_trs("story2"), 160_000) and yv.shape == (ds.n_trs("story2"), 3)
    np.testing.assert_allclose(yv.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(yv.std(0), 1, atol=1e-4)
    assert data.report["n_train"] == len(data.train) and data.report["n_voxels"] == 3


def test_tuning_data_errors():
    ds = make_dataset(n_stories=4, n_voxels=5)
    with pytest.raises(ConfigError, match="sorted, unique"):
        TuningData.build(ds, "S01", np.array([2, 1]))
    with pytest.raises(ConfigError, match="in 0..4"):
        TuningData.build(ds, "S01", np.array([1, 5]))
    with pytest.raises(ConfigError, match="non-empty"):
        TuningData.build(ds, "S01", np.array([], dtype=np.int64))
    ds.val_story = None
    with pytest.raises(ConfigError, match="no validation story"):
        TuningData.build(ds, "S01", np.array([0]))
    two = make_dataset(n_stories=2, n_voxels=3)
    two.val_story = "story0"
    with pytest.raises(ConfigError, match="no training story"):
        TuningData.build(two, "S01", np.array([0]))
    bad = make_dataset(n_stories=4, n_voxels=5)
    bad._responses["S01"]["story0"] = bad._responses["S01"]["story0"][:-1]
    with pytest.raises(DataError, match="story0"):
        TuningData.build(bad, "S01", np.array([0]))


# --------------------------------------------------------------------------- targets
def _target_dataset(nan_voxel=True):
    """8 voxels: 0–3 carry a shared signal in every repeat (high ceiling), 4–7 pure noise;
    voxel 1 has NaN in a training story (dropped) when ``nan_voxel``."""
    rng = np.random.default_rng(3)
    stories = {f"s{i}": make_story(40, seed=i) for i in range(4)}
    n = {s: timing.n_response_rows(st.n_trs_run) for s, st in stories.items()}
    resp = {s: rng.standard_normal((n[s], 8)).astype(np.float32) for s in ("s0", "s1", "s2")}
    if nan_voxel:
        resp["s0"][3, 1] = np.nan
    sig = rng.standard_normal((n["s3"], 1))
    reps = np.stack([np.concatenate([np.repeat(sig, 4, 1) + 0.3 * rng.standard_normal((n["s3"], 4)),
                                     rng.standard_normal((n["s3"], 4))], 1) for _ in range(4)])
    rois = {"Broca": np.arange(8) < 2, "AC": np.arange(8) == 7}
    return InMemoryDataset(stories, {"S01": resp}, {"S01": reps.astype(np.float32)},
                           test_story="s3", val_story="s2", rois={"S01": rois})


def test_targets_by_ceiling_repeats_and_file(tmp_path):
    from core.pipelines.encode import subject_ceiling

    ds = _target_dataset()
    v, rep = by_ceiling(ds, "S01")
    cc = subject_ceiling(ds, "S01")
    np.testing.assert_array_equal(v, [0, 2, 3])  # 1 is dropped although its ceiling is high
    assert np.all(cc[[0, 2, 3]] > 0.4) and not np.any(cc[4:] > 0.4)  # noise: NaN (undefined) or low
    assert rep["n_selected"] == 3 and rep["criterion"] == "ceiling>0.4" and rep["n_valid"] == 7
    f = tmp_path / "cc.npy"
    np.save(f, np.array([0.1, 0.9, 0.5, 0.41, 0.4, np.nan, 0.8, 0.0]))
    v, rep = select_targets(ds, "S01", f"ceiling>0.4@{f}")
    np.testing.assert_array_equal(v, [2, 3, 6])
    assert rep["ceiling_source"] == str(f)
    np.save(f, np.zeros(7))
    with pytest.raises(DataError, match="cc.npy"):
        by_ceiling(ds, "S01", ceiling=f)
    with pytest.raises(DataError, match="does not exist"):
        by_ceiling(ds, "S01", ceiling=tmp_path / "none.npy")
    with pytest.raises(ConfigError, match="ceiling>0.999"):
        by_ceiling(ds, "S01", threshold=0.999)


def test_targets_by_roi_and_groups():
    ds = _target_dataset()
    v, rep = by_roi(ds, "S01", ["Broca", "AC"])
    np.testing.assert_array_equal(v, [0, 7])  # voxel 1 (in Broca) is dropped
    v, rep = select_targets(ds, "S01", "roi:semantic")  # default group: Broca (+ absent members)
    np.testing.assert_array_equal(v, [0])
    assert rep["rois"] == {"semantic": ["Broca"]}
    with pytest.raises(ConfigError, match="neither an ROI"):
        by_roi(ds, "S01", ["V1"])
    ds._rois["S01"]["empty"] = np.zeros(8, bool)
    with pytest.raises(ConfigError, match="roi:empty"):
        by_roi(ds, "S01", ["empty"])


def test_targets_by_encoding(tmp_path):
    from core.encoding import EncodingResult, LayerScores

    ds = _target_dataset()
    ccn0 = np.array([0.1, 0.9, 0.2, np.nan, 0.3, 0.05, 0.0, 0.15], np.float32)
    ccn1 = np.array([0.5, 0.9, 0.4, 0.3, 0.2, 0.1, np.nan, 0.6], np.float32)
    z = np.zeros(8, np.float32)
    res = EncodingResult("S01", "random:whisper-tiny", np.ones(8),
                         {"layer_0": LayerScores(z, ccn0, z), "layer_1": LayerScores(z, ccn1, z)},
                         np.ones(8, bool), {"subject": "S01", "layers": {"layer_0": {}, "layer_1": {}}})
    res.save(tmp_path / "enc")
    v, rep = by_encoding(ds, "S01", tmp_path / "enc", 2)  # best layer = layer_1; voxel 1 dropped
    np.testing.assert_array_equal(v, [0, 7])
    assert rep["layer"] == "layer_1"
    v, rep = select_targets(ds, "S01", f"top:3:layer_0@{tmp_path / 'enc'}")
    np.testing.assert_array_equal(v, [2, 4, 7])
    v, rep = by_encoding(ds, "S01", res, 100, "layer_0")  # only 6 finite & valid
    assert len(v) == 6
    with pytest.raises(ConfigError, match="layer_9"):
        by_encoding(ds, "S01", res, 2, "layer_9")
    with pytest.raises(ConfigError, match="≥ 1"):
        by_encoding(ds, "S01", res, 0)
    with pytest.raises(ConfigError, match="unknown target spec"):
        select_targets(ds, "S01", "best")


# --------------------------------------------------------------------------- model
@pytest.fixture(scope="module")
def whisper_model():
    return BrainTuningModel.from_spec("random:whisper-tiny", 5, device="cpu")


def test_model_freezing_and_zero_head(whisper_model):
    m = whisper_model
    frozen = {n for n, p in m.backbone.named_parameters() if not p.requires_grad}
    assert frozen == {"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "embed_positions.weight"}
    assert all(p.requires_grad for p in m.head.parameters())
    w = torch.randn(2, 32_000) * 0.1
    out = m(w)
    assert out.shape == (2, 5) and torch.count_nonzero(out) == 0
    w2v = BrainTuningModel.from_spec("random:wav2vec2-tiny", 3, device="cpu")
    for name, p in w2v.backbone.named_parameters():
        assert p.requires_grad == (not name.startswith("feature_extractor.")), name
    assert w2v(torch.randn(2, 16_000)).shape == (2, 3)


def test_model_gradient_reaches_backbone():
    torch.manual_seed(0)
    m = BrainTuningModel.from_spec("random:hubert-tiny", 4, device="cpu", head_init="random", seed=1)
    m.eval()  # no SpecAugment: deterministic
    loss = get_loss("mse")(m(torch.randn(2, 16_000)), torch.randn(2, 4))
    loss.backward()
    g = m.backbone.encoder.layers[0].attention.q_proj.weight.grad
    assert g is not None and torch.count_nonzero(g) > 0
    assert all(p.grad is None for p in m.backbone.feature_extractor.parameters())


@pytest.mark.parametrize("mode, n_frames", [("window", 150), ("pad30", 1500)])
def test_model_whisper_pools_real_frames_only(mode, n_frames):
    from core.features.layers import whisper_hidden_states

    m = BrainTuningModel.from_spec("random:whisper-tiny", 5, device="cpu", whisper_input=mode)
    torch.manual_seed(0)
    w = torch.randn(2, 48_000) * 0.1
    lengths = [48_000, 20_000]
    w[1, 20_000:] = 0
    got = m.pooled(w, lengths)
    feats = m.preprocessor([w[0].numpy(), w[1, :20_000].numpy()], sampling_rate=SR,
                           return_tensors="pt", padding="longest" if mode == "window" else "max_length").input_features
    with torch.no_grad():
        h = whisper_hidden_states(m.backbone, feats, [2])[2]
    n_real = (20_000 // 160 - 1) // 2 + 1  # 62 frames of real audio
    assert h.shape[1] == n_frames
    torch.testing.assert_close(got[0], h[0, :150].mean(0))  # 48000 samples = 150 real frames
    torch.testing.assert_close(got[1], h[1, :n_real].mean(0))
    assert not torch.allclose(got[1], h[1].mean(0), atol=1e-4)


def test_model_head_inits_and_errors():
    sm_spec = "random:wav2vec2-tiny"
    W = np.random.default_rng(0).standard_normal((32, 3)).astype(np.float32)
    b = np.arange(3, dtype=np.float32)
    m = BrainTuningModel.from_spec(sm_spec, 3, device="cpu", head_init="ridge", ridge_weights=W, ridge_bias=b)
    m.eval()
    x = torch.randn(1, 16_000)
    with torch.no_grad():
        np.testing.assert_allclose(m(x).numpy(), m.pooled(x).numpy() @ W + b, rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match=r"\(32, 3\)"):
        BrainTuningModel.from_spec(sm_spec, 3, device="cpu", head_init="ridge", ridge_weights=W.T)
    with pytest.raises(ConfigError, match="head_init"):
        BrainTuningModel.from_spec(sm_spec, 3, device="cpu", head_init="xavier")
    with pytest.raises(ConfigError, match="batch, n_samples"):
        m(torch.randn(16_000))


# --------------------------------------------------------------------------- losses
def test_losses_closed_forms():
    rng = np.random.default_rng(0)
    p, t = rng.standard_normal((4, 50)), rng.standard_normal((4, 50))
    P, T = torch.tensor(p), torch.tensor(t)
    assert np.isclose(get_loss("mse")(P, T).item(), np.mean((p - t) ** 2))
    r = np.array([np.corrcoef(p[i], t[i])[0, 1] for i in range(4)])
    assert np.isclose(get_loss("pearson")(P, T).item(), np.mean(1 - r))
    cos = np.sum(p * t, 1) / np.linalg.norm(p, axis=1) / np.linalg.norm(t, axis=1)
    assert np.isclose(get_loss("cosine_l2")(P, T).item(), np.mean(1 - cos) + np.mean((p - t) ** 2))
    assert np.isclose(get_loss("cosine_l2", weight=0.5)(P, T).item(), np.mean(1 - cos) + 0.5 * np.mean((p - t) ** 2))
    e = np.abs(p - t)
    huber = np.where(e < 0.6, 0.5 * e ** 2, 0.6 * (e - 0.3)).mean()
    assert np.isclose(get_loss("cosine_l2", huber_delta=0.6)(P, T).item(), np.mean(1 - cos) + huber)
    a, c = torch.tensor([[2.0], [0.5], [3.0], [7.0]], dtype=torch.float64), torch.randn(4, 1, dtype=torch.float64)
    assert np.isclose(get_loss("pearson")(a * P + c, T).item(), get_loss("pearson")(P, T).item())
    with pytest.raises(ConfigError, match="huber"):
        get_loss("huber")
    with pytest.raises(ConfigError, match="same shape"):
        get_loss("mse")(P, T[:, :3])


# --------------------------------------------------------------------------- schedule
def _lrs(opt):
    return [g["lr"] for g in opt.param_groups]


def test_paper_schedule_closed_form():
    params = TuneParams(epochs=10, warmup_epochs=5)
    bb, hd = [torch.nn.Parameter(torch.zeros(2))], [torch.nn.Parameter(torch.zeros(2))]
    opt, sch = build_optimizer(bb, hd, params, steps_per_epoch=4)
    assert isinstance(opt, torch.optim.Adam) and not isinstance(opt, torch.optim.AdamW)
    seen = {}
    for step in range(40):
        seen[step] = _lrs(opt)
        opt.step()
        sch.step()
    W, T = 20, 40
    for s in (0, 1, 10, 19, 20, 21, 30, 39):
        bb_want = 5e-5 * (s / W if s < W else (T - s) / (T - W))
        hd_want = 1e-4 * max(0.8 ** (s // 4), 0.1)
        assert np.isclose(seen[s][0], bb_want) and np.isclose(seen[s][1], hd_want), s
    assert np.isclose(seen[39][1], 1e-4 * max(0.8 ** 9, 0.1))


def test_followup_and_constant_schedules():
    params = TuneParams(schedule="followup", epochs=5)
    bb, hd = [torch.nn.Parameter(torch.zeros(2))], [torch.nn.Parameter(torch.zeros(2))]
    opt, sch = build_optimizer(bb, hd, params, steps_per_epoch=10)
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["weight_decay"] == 0.01
    seen = []
    for _ in range(50):
        seen.append(_lrs(opt))
        opt.step()
        sch.step()
    for s, want in ((0, 0.0), (2, 1e-4 * 2 / 5), (5, 1e-4), (20, 1e-4 * 30 / 45), (49, 1e-4 / 45)):
        assert np.allclose(seen[s], [want, want]), s
    opt, sch = build_optimizer(bb, hd, preset("demo"), steps_per_epoch=3)
    for _ in range(5):
        opt.step()
        sch.step()
    assert np.allclose(_lrs(opt), [5e-5, 1e-3])
    with pytest.raises(ConfigError, match="steps_per_epoch"):
        build_optimizer(bb, hd, params, 0)


# --------------------------------------------------------------------------- params
def test_params_defaults_presets_roundtrip():
    p = TuneParams()
    assert (p.backbone_lr, p.head_lr, p.epochs, p.batch_size, p.warmup_epochs) == (5e-5, 1e-4, 30, 128, 5)
    assert (p.lora_r, p.lora_alpha, p.lora_dropout, p.loss, p.head_init) == (8, 32, 0.1, "mse", "zeros")
    assert p.targets == "ceiling>0.4" and p.grad_accum == 8 and p.delays == (0, 1, 2, 3, 4)
    assert preset("paper") == p
    d = preset("demo")
    assert (d.head_lr, d.targets, d.schedule, d.epochs, d.batch_size, d.grad_accum, d.train_layers) == \
        (1e-3, "roi:semantic", "constant", 3, 16, 2, 2)
    assert p.train_layers == 0 and p.precision == "fp32"  # the paper trains every layer in fp32
    assert TuneParams.from_dict(d.to_dict()) == d
    import json
    assert TuneParams.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    assert preset("demo", seed=3).seed == 3


def test_demo_precision_follows_native_bf16(monkeypatch):
    import core.tuning.params as params_mod

    for native, want in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(params_mod, "native_bf16", lambda: native)
        assert preset("demo").precision == want and preset("paper").precision == "fp32"
        assert preset("demo", precision="fp32").precision == "fp32"


@pytest.mark.parametrize("change, match", [
    ({"loss": "l1"}, "loss"), ({"batch_size": 100}, "multiple of micro_batch"),
    ({"head_lr": -1.0}, "head_lr"), ({"epochs": 0}, "epochs"), ({"precision": "fp16x"}, "precision"),
    ({"warmup_epochs": 40}, "warmup_epochs"), ({"lora_dropout": 1.5}, "lora_dropout"),
    ({"delays": (0, 0)}, "delays"), ({"bogus": 1}, "bogus"),
])
def test_params_validation(change, match):
    with pytest.raises(ConfigError, match=match):
        TuneParams.from_dict(change)
    with pytest.raises(ConfigError, match="unknown tuning preset"):
        preset("fast")
