"""Low-level and semantic feature spaces on tiny synthetic stories; spec resolution."""

import sys
import types
from collections import Counter

import numpy as np
import pytest
from scipy.integrate import quad

from core.data.base import SAMPLE_RATE
from core.errors import ConfigError, DataError
from core.features import TimedFeatures, get_source, lanczos_resample, resolve_source
from core.features.lowlevel import PHONES, SPACES
from tests.fakes import FakeStory, InMemoryDataset, events, make_dataset, make_story

KERNEL_INTEGRAL = quad(lambda u: 1.0 if u == 0 else 3 * np.sin(np.pi * u) * np.sin(np.pi * u / 3)
                       / (np.pi ** 2 * u ** 2), -3, 3, points=[0.0])[0]  # ≈ 0.997


def one_story(story: FakeStory) -> InMemoryDataset:
    n = story.n_trs_run - 20
    return InMemoryDataset({"s": story}, {"S01": {"s": np.zeros((n, 2))}})


@pytest.mark.parametrize("n_per_tr", [1, 2, 4])
def test_wordrate_is_words_per_tr(n_per_tr):
    ds = one_story(make_story(n_trs_run=40, words_per_tr=n_per_tr))
    feats = get_source("lowlevel:wordrate").compute(ds, "s", ["wordrate"])["wordrate"]
    words = ds.words("s")
    np.testing.assert_allclose(feats.times, (words.onsets + words.offsets) / 2)
    assert feats.values.shape == (len(words), 1) and np.all(feats.values == 1)
    stamps = ds.tr_stamps("s")
    rate = lanczos_resample(feats.values, feats.times, stamps)[:, 0]
    # stamps whose whole kernel support (± 6 s) lies inside the speech: N words per TR → N·∫L ≈ N
    inner = (stamps - 6 > 0) & (stamps + 6 < words.offsets[-1])
    assert inner.sum() >= 10
    np.testing.assert_allclose(rate[inner], n_per_tr * KERNEL_INTEGRAL, rtol=0.01)
    # before the audio starts (stamps ≤ -7 s) there are no words
    assert np.all(np.abs(rate[stamps < -7]) < 1e-12)


def test_phonemes_count_the_right_phones():
    labels = ["AH0", "K", "sil", "AE1", "T", "", "ae", "SP", "ZH", "xx"]
    on = np.arange(len(labels)) * 0.1
    story = FakeStory(audio=np.zeros(SAMPLE_RATE * 30, np.float32), words=events([], [], []),
                      phones=events(labels, on, on + 0.1), n_trs_run=25)
    feats = get_source("lowlevel:phonemes").compute(one_story(story), "s", ["phonemes"])["phonemes"]
    assert feats.values.shape == (6, 39) and len(PHONES) == 39 == len(set(PHONES))
    np.testing.assert_array_equal(feats.values.sum(1), 1)  # one-hot rows
    counts = dict(zip(PHONES, feats.values.sum(0)))
    assert counts["AE"] == 2 and counts["AH"] == 1 and counts["K"] == 1 and counts["T"] == 1
    assert counts["ZH"] == 1 and sum(counts.values()) == 6
    np.testing.assert_allclose(feats.times, on[[0, 1, 3, 4, 6, 8]] + 0.05)


def test_phoneme_columns_on_a_synthetic_story():
    ds = make_dataset(n_stories=1, n_trs_run=30)
    feats = get_source("lowlevel:phonemes").compute(ds, "story0", ["phonemes"])["phonemes"]
    want = Counter(ds.phones("story0").labels)
    got = {p: int(c) for p, c in zip(PHONES, feats.values.sum(0)) if c}
    assert got == dict(want)


def test_powspec_shape_and_loudness():
    rng = np.random.default_rng(0)
    n = SAMPLE_RATE * 30
    audio = rng.standard_normal(n).astype(np.float32)
    audio[: n // 2] *= 0.01
    audio[n // 2:] *= 0.3
    story = FakeStory(audio=audio, words=events([], [], []), phones=events([], [], []), n_trs_run=25)
    ds = one_story(story)
    feats = get_source("lowlevel:powspec").compute(ds, "s")["powspec"]
    assert feats.values.shape[1] == 32 and feats.values.dtype == np.float32
    assert abs(len(feats.times) - (30 - 0.025) / 0.010) <= 2
    np.testing.assert_allclose(np.diff(feats.times), 0.010, atol=1e-9)
    quiet = feats.values[feats.times < 14].mean(0)
    loud = feats.values[feats.times > 16].mean(0)
    assert np.all(loud > quiet)
    tr = lanczos_resample(feats.values, feats.times, ds.tr_stamps("s"))
    stamps = ds.tr_stamps("s")
    assert tr.shape == (20, 32)
    assert tr[(stamps > 22) & (stamps < 24)].mean() > tr[(stamps > 6) & (stamps < 8)].mean()


def test_powspec_rejects_too_short_audio():
    story = FakeStory(audio=np.zeros(10, np.float32), words=events([], [], []),
                      phones=events([], [], []), n_trs_run=25)
    with pytest.raises(DataError, match="audio"):
        get_source("lowlevel:powspec").compute(one_story(story), "s")


@pytest.mark.slow
def test_minilm_rows_are_word_embeddings():
    from core.features.embeddings import embed_words

    ds = make_dataset(n_stories=1, n_trs_run=25)
    feats = get_source("semantic:minilm").compute(ds, "story0", ["minilm"])["minilm"]
    words = ds.words("story0")
    assert feats.values.shape == (len(words), 384) and feats.values.dtype == np.float32
    np.testing.assert_allclose(feats.values, embed_words(words.labels), atol=1e-6)
    np.testing.assert_allclose(feats.times, words.mids)
    cat, dog = embed_words(["cat", "dog"])
    assert not np.allclose(cat, dog)


def test_source_protocol_and_fingerprints():
    srcs = {name: get_source(f"lowlevel:{name}") for name in SPACES}
    for name, src in srcs.items():
        assert src.spec == f"lowlevel:{name}" and src.layers() == [name]
        assert src.fingerprint() == get_source(f"lowlevel:{name}").fingerprint()
    sem = get_source("semantic:minilm")
    assert sem.layers() == ["minilm"]
    fps = [s.fingerprint() for s in srcs.values()] + [sem.fingerprint()]
    assert len(set(fps)) == len(fps)
    with pytest.raises(ConfigError, match="single layer"):
        srcs["wordrate"].compute(make_dataset(n_stories=1), "story0", ["phonemes"])


def test_unknown_specs():
    with pytest.raises(ConfigError, match="lowlevel:nope"):
        get_source("lowlevel:nope")
    with pytest.raises(ConfigError, match="semantic:minilm"):
        get_source("semantic:glove")
    for bad in ["bogus:x", "lowlevel", "hf:", "powspec"]:
        with pytest.raises(ConfigError, match="unknown feature spec"):
            resolve_source(bad)


def test_resolve_source_routes_model_specs_to_core_models(monkeypatch):
    seen = []

    def feature_source(spec):
        seen.append(spec)
        return "model-source"

    monkeypatch.setitem(sys.modules, "core.models", types.SimpleNamespace(feature_source=feature_source))
    for spec in ["hf:facebook/wav2vec2-base", "bundled:whisper-tiny.en", "random:hubert-tiny", "ckpt:/x"]:
        assert resolve_source(spec) == "model-source"
    assert seen[0] == "hf:facebook/wav2vec2-base" and len(seen) == 4
    assert resolve_source("lowlevel:wordrate").spec == "lowlevel:wordrate"


def test_timed_features_shape_check():
    with pytest.raises(ValueError):
        TimedFeatures(times=np.zeros(3), values=np.zeros((2, 1)))
