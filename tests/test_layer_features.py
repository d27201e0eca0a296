"""Layer features over sliding windows: equal to a plain one-window-at-a-time loop over the HF
models, fast-mode means, caching, progress and bad inputs."""

import numpy as np
import pytest
import torch

from core.errors import ConfigError, DataError, ModelError
from core.features.layers import (ModelFeatureSource, one_window_features, whisper_hidden_states,
                                  window_bounds)
from core.models import feature_source, load_model
from tests.fakes import InMemoryDataset, make_story

SR = 16000


def _audio(seconds, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    am = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)  # speech-like 3 Hz envelope
    return (0.1 * am * rng.standard_normal(t.size)).astype(np.float32)


def _reference(spec, audio, window_s, step_s, n_avg=1):
    """Plain loop (``one_window_features``): each window alone through the transformers model, its
    own preprocessing; windows end every ``step_s``. Returns (times (n,), {hidden index: (n, d)})."""
    step = int(round(step_s * SR))
    ends = list(range(step, len(audio) + 1, step))
    return np.array(ends) / SR, one_window_features(load_model(spec), audio, ends, window_s, n_avg)


def test_window_bounds_closed_form():
    starts, ends = window_bounds(int(2.55 * SR), SR, window_s=1.0, step_s=0.5)
    assert ends.tolist() == [8000, 16000, 24000, 32000, 40000]
    assert starts.tolist() == [0, 0, 8000, 16000, 24000]


@pytest.mark.parametrize("spec", ["random:wav2vec2-tiny", "random:hubert-tiny", "random:whisper-tiny"])
def test_paper_mode_equals_one_window_at_a_time_loop(spec):
    audio = _audio(1.55)
    src = feature_source(spec, window_s=1.0, stride_s=0.1, batch_size=4)  # 10 short + 5 full windows
    got = src.extract(audio, src.layers())
    times, ref = _reference(spec, audio, 1.0, 0.1)
    assert len(times) == 15
    for i, layer in enumerate(src.layers()):
        np.testing.assert_allclose(got[layer].times, times)
        assert got[layer].values.dtype == np.float32 and got[layer].values.shape == (15, 32)
        np.testing.assert_allclose(got[layer].values, ref[i], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("spec", ["random:wav2vec2-tiny", "random:whisper-tiny"])
def test_fast_mode_is_the_mean_of_the_last_strides_frames(spec):
    audio = _audio(2.2, seed=1)
    src = feature_source(spec, window_s=1.5, mode="fast", fast_stride_s=0.5, whisper_input="pad30")
    got = src.extract(audio, ["layer_1", "layer_2"])
    times, ref = _reference(spec, audio, 1.5, 0.5, n_avg=25)  # 0.5 s of 20 ms frames
    np.testing.assert_allclose(got["layer_2"].times, times - 0.25)  # centre of the last stride
    np.testing.assert_allclose(got["layer_1"].values, ref[1], atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(got["layer_2"].values, ref[2], atol=2e-5, rtol=1e-4)
    # and it is not the single last frame
    _, single = _reference(spec, audio, 1.5, 0.5)
    assert np.abs(got["layer_2"].values - single[2]).max() > 1e-3


def test_results_do_not_depend_on_batch_size_and_layers_asked():
    audio = _audio(1.6, seed=2)
    a = feature_source("random:whisper-tiny", window_s=1.0, batch_size=1).extract(audio, ["layer_1"])
    b = feature_source("random:whisper-tiny", window_s=1.0, batch_size=16).extract(
        audio, ["layer_2", "layer_1", "layer_0"])
    np.testing.assert_allclose(a["layer_1"].values, b["layer_1"].values, atol=1e-5)


def test_whisper_loop_matches_transformers_forward_exactly():
    m = load_model("random:whisper-tiny")
    feats = m.preprocessor([_audio(3.0), _audio(1.0, 1)], sampling_rate=SR, return_tensors="pt").input_features
    feats = feats.to(next(m.module.parameters()).device)
    with torch.no_grad():
        ref = m.module(feats, output_hidden_states=True).hidden_states
        mine = whisper_hidden_states(m.module, feats, [0, 1, 2])
        only_first = whisper_hidden_states(m.module, feats, [1])
    for i in range(3):
        assert torch.equal(ref[i], mine[i])
    assert set(only_first) == {1} and torch.equal(only_first[1], ref[1])


@pytest.mark.parametrize("idx", [[0, 1, 2], [2], [0, 1]])
def test_whisper_states_at_kept_frames_equal_the_full_pass(idx):
    m = load_model("random:whisper-tiny")
    feats = m.preprocessor([_audio(3.0), _audio(1.0, 1)], sampling_rate=SR, return_tensors="pt").input_features
    keep = torch.tensor([[149, 148, 10], [0, 49, 49]])  # any frames, repeats allowed
    with torch.no_grad():
        full = whisper_hidden_states(m.module, feats, idx)
        kept = whisper_hidden_states(m.module, feats, idx, keep=keep)
    assert set(kept) == set(idx)
    for i in idx:
        assert kept[i].shape == (2, 3, 32)
        ref = torch.stack([full[i][0, keep[0]], full[i][1, keep[1]]])
        torch.testing.assert_close(kept[i], ref, atol=2e-6, rtol=1e-5)


def _dataset(seconds=2.0, name="tiny"):
    st = make_story(n_trs_run=12)
    st.audio = _audio(seconds, seed=3)
    return InMemoryDataset({name: st}, responses={"S": {name: np.zeros((1, 2), np.float32)}})


def test_compute_caches_per_layer_and_reports_progress(monkeypatch):
    ds = _dataset()
    src = feature_source("random:hubert-tiny", window_s=1.0)
    seen = []
    first = src.compute(ds, "tiny", ["layer_2"], lambda f, msg: seen.append(f))
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) > 3
    assert first["layer_2"].values.shape == (20, 32)

    def boom(*a, **k):
        raise AssertionError("should come from the cache")

    monkeypatch.setattr(src, "extract", boom)
    again = src.compute(ds, "tiny", ["layer_2"])
    np.testing.assert_array_equal(again["layer_2"].values, first["layer_2"].values)
    np.testing.assert_array_equal(again["layer_2"].times, first["layer_2"].times)
    # other protocol / other model → other fingerprint (so other cache entries)
    fps = {src.fingerprint(), feature_source("random:hubert-tiny", window_s=2.0).fingerprint(),
           feature_source("random:hubert-tiny", window_s=1.0, mode="fast").fingerprint(),
           feature_source("random:hubert-tiny@1", window_s=1.0).fingerprint()}
    assert len(fps) == 4
    # the batch size does not change what is computed, so it is not part of the key
    assert feature_source("random:hubert-tiny", window_s=1.0, batch_size=3).fingerprint() == src.fingerprint()


def test_tr_pipeline_runs_on_a_model_source():
    from core.features import resolve_source, tr_features

    ds = _dataset(seconds=2.0 * 12 - 20.0)  # R = 12 TRs ↔ 2·R − 20 s of audio
    src = resolve_source("random:wav2vec2-tiny")
    out = tr_features(ds, src, ["layer_1"])
    x = out["layer_1"]["tiny"]
    assert x.shape == (len(ds.tr_stamps("tiny")), 32) and np.isfinite(x).all()


def test_bad_inputs_give_clear_errors():
    src = feature_source("random:wav2vec2-tiny")
    with pytest.raises(DataError, match="story 'short'.*shorter than one stride"):
        src.compute(_dataset(seconds=0.05, name="short"), "short", ["layer_1"])
    with pytest.raises(ConfigError, match="no layer.*layer_7.*layer_0..layer_2"):
        src.extract(_audio(1.0), ["layer_7"])
    with pytest.raises(ConfigError, match="mode 'slow'"):
        ModelFeatureSource("random:wav2vec2-tiny", mode="slow")
    with pytest.raises(ConfigError, match="window_s=-1"):
        ModelFeatureSource("random:wav2vec2-tiny", window_s=-1)
    with pytest.raises(ConfigError, match="longer than the window"):
        ModelFeatureSource("random:wav2vec2-tiny", window_s=0.5, mode="fast", fast_stride_s=1.0)
    with pytest.raises(ConfigError, match="minimum input \\(400 samples\\)"):
        feature_source("random:wav2vec2-tiny", stride_s=0.01).extract(_audio(0.5), ["layer_0"])
    with pytest.raises(ConfigError, match="longer than Whisper's 30 s input"):
        feature_source("random:whisper-tiny", window_s=31.0).extract(_audio(31.5), ["layer_0"])
    with pytest.raises(ModelError, match="unknown model spec"):
        feature_source("nope:x")


def test_whisper_window_input_equals_an_encoder_with_a_sliced_position_table():
    """``whisper_input="window"`` (fast mode's default) = HF's encoder rebuilt for the window length."""
    import copy

    audio = _audio(2.0, seed=3)
    src = feature_source("random:whisper-tiny", window_s=1.0, mode="fast", fast_stride_s=0.5)
    assert src.whisper_input == "window" and src.protocol()["whisper_input"] == "window"
    got = src.extract(audio, src.layers())
    m = load_model("random:whisper-tiny")
    for k, end in enumerate(range(8000, len(audio) + 1, 8000)):
        w = audio[max(0, end - 16000):end]
        feats = m.preprocessor(w, sampling_rate=SR, return_tensors="pt", padding="longest").input_features
        n_pos = feats.shape[-1] // 2
        enc = copy.deepcopy(m.module)
        enc.config.max_source_positions = n_pos
        enc.embed_positions.weight.data = enc.embed_positions.weight.data[:n_pos].clone()
        enc.embed_positions.num_embeddings = n_pos
        with torch.no_grad():
            hs = enc(feats, output_hidden_states=True).hidden_states
        last = (len(w) // 160 - 1) // 2
        for i, layer in enumerate(src.layers()):
            np.testing.assert_allclose(got[layer].values[k], hs[i][0, last - 24:last + 1].mean(0).numpy(),
                                       atol=2e-5, rtol=1e-4)


def test_whisper_input_is_validated():
    with pytest.raises(ConfigError, match="whisper_input"):
        feature_source("random:whisper-tiny", whisper_input="half")


@pytest.mark.parametrize("spec", ["random:whisper-tiny", "random:wav2vec2-tiny"])
def test_bf16_precision_is_a_rounding_change_with_its_own_cache_key(spec):
    rng = np.random.default_rng(4)
    audio = rng.standard_normal(16000 * 5).astype(np.float32) * 0.1
    fp32 = feature_source(spec, mode="fast", window_s=2.0)
    bf16 = feature_source(spec, mode="fast", window_s=2.0, precision="bf16")
    a = fp32.extract(audio, fp32.layers())
    b = bf16.extract(audio, bf16.layers())
    for layer in fp32.layers():
        x, y = a[layer].values, b[layer].values
        assert y.dtype == np.float32 and y.shape == x.shape
        rel = np.linalg.norm(y - x) / np.linalg.norm(x)
        assert 0 < rel < 0.05, (layer, rel)  # bf16 keeps ~3 significant digits: close, not equal
    assert bf16.protocol()["precision"] == "bf16" and "precision" not in fp32.protocol()
    assert bf16.fingerprint() != fp32.fingerprint()
    with pytest.raises(ConfigError, match="precision"):
        feature_source(spec, precision="fp16")
