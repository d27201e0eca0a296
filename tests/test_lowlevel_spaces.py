"""The low-level spaces fbank, mfcc, diphones, triphones, articulation, phonemerate against independent
computations (closed forms on synthetic audio, explicit formulas and loops, panphon direct calls)."""

import zlib

import numpy as np
import pytest

from core.data.base import SAMPLE_RATE
from core.errors import ConfigError
from core.features import get_source, lanczos_resample, tr_features
from core.features.lowlevel import PHONES, SPACES
from tests.fakes import FakeStory, InMemoryDataset, events, make_dataset

NEW = ("fbank", "mfcc", "diphones", "triphones", "articulation", "phonemerate")


def one_story(story: FakeStory) -> InMemoryDataset:
    return InMemoryDataset({"s": story}, {"S01": {"s": np.zeros((story.n_trs_run - 20, 2))}})


def compute(ds, name, story="s"):
    return get_source(f"lowlevel:{name}").compute(ds, story, [name])[name]


def htk_fbank(n_fft=400, n_mels=40, sr=SAMPLE_RATE, fmin=20.0, fmax=8000.0):
    """Triangular HTK-mel filters at the rfft bin frequencies (written out, independent of the code)."""
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10 ** (m / 2595.0) - 1.0)  # noqa: E731
    edges = hz(np.linspace(mel(fmin), mel(fmax), n_mels + 2))
    f = np.arange(n_fft // 2 + 1) * sr / n_fft
    fb = np.zeros((len(f), n_mels))
    for m in range(n_mels):
        lo, c, hi = edges[m], edges[m + 1], edges[m + 2]
        fb[:, m] = np.maximum(0, np.minimum((f - lo) / (c - lo), (hi - f) / (hi - c)))
    return fb


def sine_story(k=25, amp=0.3, seconds=0.5):
    """A sine exactly on rfft bin k (k · 40 Hz) of a 400-sample frame."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    audio = (amp * np.sin(2 * np.pi * k * SAMPLE_RATE / 400 * t + 0.3)).astype(np.float32)
    return FakeStory(audio=audio, words=events([], [], []), phones=events([], [], []), n_trs_run=21)


def test_fbank_closed_form_on_a_bin_centred_sine():
    k, amp = 25, 0.3
    ds = one_story(sine_story(k, amp))
    f = compute(ds, "fbank")
    n_frames = (len(ds.audio("s")) - 400) // 160 + 1
    assert f.values.shape == (n_frames, 40) and f.values.dtype == np.float32
    np.testing.assert_allclose(f.times, (np.arange(n_frames) * 160 + 200) / SAMPLE_RATE)
    # periodic Hann (sum n/2): |X[k]| = A n/4, |X[k±1]| = A n/8, all other bins 0
    power = np.zeros(201)
    power[k] = (amp * 400 / 4) ** 2
    power[[k - 1, k + 1]] = (amp * 400 / 8) ** 2
    energy = power @ htk_fbank()
    lit = energy > 1e-3 * energy.max()
    assert lit.sum() >= 1
    for row in (0, n_frames // 2, n_frames - 1):  # every frame alike (the phase does not matter)
        np.testing.assert_allclose(f.values[row, lit], np.log(energy[lit]), rtol=2e-4, atol=2e-4)
        assert np.all(f.values[row, energy == 0] < np.log(1e-6))


def test_fbank_scales_with_amplitude():
    a = compute(one_story(sine_story(40, 0.1)), "fbank").values
    b = compute(one_story(sine_story(40, 0.4)), "fbank").values
    lit = a[0] > np.log(1e-3)
    np.testing.assert_allclose(b[:, lit] - a[:, lit], np.log(16.0), atol=1e-3)  # power ∝ A²


def test_mfcc_is_the_orthonormal_dct_of_fbank():
    ds = make_dataset(n_stories=1, n_trs_run=24)
    logmel = compute(ds, "fbank", "story0").values.astype(np.float64)
    m = compute(ds, "mfcc", "story0")
    assert m.values.shape == (len(logmel), 13)
    n = logmel.shape[1]
    i = np.arange(n)
    basis = np.stack([np.sqrt((1 if q == 0 else 2) / n) * np.cos(np.pi * q * (2 * i + 1) / (2 * n))
                      for q in range(13)], axis=1)
    np.testing.assert_allclose(m.values, logmel @ basis, rtol=1e-4, atol=1e-4)


def phone_story(labels, words=None):
    on = np.arange(len(labels)) * 0.1
    w = events(*words) if words else events([], [], [])
    return FakeStory(audio=np.zeros(SAMPLE_RATE * 30, np.float32), words=w,
                     phones=events(labels, on, on + 0.1), n_trs_run=25)


def expected_ngrams(labels, n, n_columns=256):
    """Explicit loop over the 39-phone sequence (non-phones dropped, stress stripped)."""
    on = np.arange(len(labels)) * 0.1
    kept = [(lab.rstrip("012").upper(), t) for lab, t in zip(labels, on) if lab.rstrip("012").upper() in PHONES]
    rows, times = [], []
    for i in range(len(kept) - n + 1):
        gram = [p for p, _ in kept[i:i + n]]
        row = np.zeros(n_columns)
        row[zlib.crc32(" ".join(gram).encode()) % n_columns] = 1
        rows.append(row)
        times.append((kept[i][1] + kept[i + n - 1][1] + 0.1) / 2)
    return np.array(rows).reshape(-1, n_columns), np.array(times)


@pytest.mark.parametrize("name,n", [("diphones", 2), ("triphones", 3)])
def test_ngrams_match_an_explicit_loop(name, n):
    labels = ["DH", "AH0", "sil", "K", "AE1", "T", "sp", "S", "AE1", "T", "", "AA1", "N", "ZH"]
    f = compute(one_story(phone_story(labels)), name)
    want, times = expected_ngrams(labels, n)
    assert f.values.shape == want.shape == (10 - n + 1 + 1, 256)  # 11 phones
    np.testing.assert_array_equal(f.values, want)
    np.testing.assert_allclose(f.times, times)


def test_ngrams_within_words():
    labels = ["K", "AE", "T", "S", "AE", "T"]  # "cat" 0–0.3 s, "sat" 0.3–0.6 s
    words = (["cat", "sat"], [0.0, 0.3], [0.3, 0.6])
    story = phone_story(labels, words)
    ds = one_story(story)
    old = SPACES["diphones"]
    SPACES["diphones"] = type(old)(old.fn, {"n_columns": 256, "scope": "word"})
    try:
        f = compute(ds, "diphones")
    finally:
        SPACES["diphones"] = old
    grams = [("K", "AE"), ("AE", "T"), ("S", "AE"), ("AE", "T")]  # no ("T", "S") across the words
    cols = [zlib.crc32(" ".join(g).encode()) % 256 for g in grams]
    assert f.values.shape == (4, 256)
    np.testing.assert_array_equal(f.values.argmax(1), cols)
    np.testing.assert_allclose(f.times, [0.1, 0.2, 0.4, 0.5])


def test_articulation_matches_panphon():
    import panphon

    ft = panphon.FeatureTable()
    names = list(ft.names)
    labels = ["M", "S", "IY1", "AY", "CH", "ER0", "sil"]
    f = compute(one_story(phone_story(labels)), "articulation")
    assert f.values.shape == (6, 24) and len(names) == 24
    np.testing.assert_allclose(f.times, np.arange(6) * 0.1 + 0.05)
    row = {lab: f.values[i] for i, lab in enumerate(["M", "S", "IY", "AY", "CH", "ER"])}
    np.testing.assert_array_equal(row["M"], ft.word_to_vector_list("m", numeric=True)[0])
    np.testing.assert_array_equal(row["S"], ft.word_to_vector_list("s", numeric=True)[0])
    np.testing.assert_array_equal(row["IY"], ft.word_to_vector_list("i", numeric=True)[0])
    np.testing.assert_array_equal(row["CH"], ft.word_to_vector_list("t͡ʃ", numeric=True)[0])
    ay = (np.array(ft.word_to_vector_list("a", numeric=True)[0])
          + np.array(ft.word_to_vector_list("ɪ", numeric=True)[0])) / 2
    np.testing.assert_allclose(row["AY"], ay)
    v = lambda lab, feat: row[lab][names.index(feat)]  # noqa: E731
    assert v("M", "nas") == 1 and v("M", "voi") == 1 and v("M", "lab") == 1
    assert v("S", "strid") == 1 and v("S", "voi") == -1 and v("IY", "syl") == 1 and v("IY", "hi") == 1
    assert v("ER", "syl") == 1 and v("CH", "delrel") == 1


def test_every_arpabet_phone_has_features():
    from core.features.phonology import ARPABET_IPA, articulation_table

    table = articulation_table()
    assert set(ARPABET_IPA) == set(PHONES) and set(table) == set(PHONES)
    assert all(t.shape == (24,) and np.all(np.abs(t) <= 1) for t in table.values())
    assert len({t.tobytes() for t in table.values()}) >= 37  # (nearly) all phones distinguishable


def test_phonemerate_counts_phones():
    labels = ["DH", "AH0", "sil", "K", "", "T"]
    f = compute(one_story(phone_story(labels)), "phonemerate")
    np.testing.assert_allclose(f.times, [0.05, 0.15, 0.35, 0.55])
    assert f.values.shape == (4, 1) and np.all(f.values == 1)


def test_all_spaces_resample_through_tr_features():
    ds = make_dataset(n_stories=2, n_trs_run=26)
    widths = {"fbank": 40, "mfcc": 13, "diphones": 256, "triphones": 256, "articulation": 24,
              "phonemerate": 1, "phonemes": 39, "wordrate": 1}
    for name, width in widths.items():
        src = get_source(f"lowlevel:{name}")
        out = tr_features(ds, src)[name]
        for story in ds.stories:
            x = out[story]
            assert x.shape == (ds.n_trs_run(story) - 5, width) and x.dtype == np.float32
            assert np.isfinite(x).all()
            tf = src.compute(ds, story, [name])[name]
            np.testing.assert_allclose(x, lanczos_resample(tf.values, tf.times, ds.tr_stamps(story)),
                                       rtol=1e-4, atol=1e-4)
    # phonemerate = row sums of the phoneme indicators, after resampling too
    ph, pr = tr_features(ds, get_source("lowlevel:phonemes"))["phonemes"], \
        tr_features(ds, get_source("lowlevel:phonemerate"))["phonemerate"]
    np.testing.assert_allclose(ph["story0"].sum(1), pr["story0"][:, 0], rtol=1e-4, atol=1e-4)


def test_unknown_space_is_a_one_line_error():
    with pytest.raises(ConfigError, match="unknown feature space lowlevel:nope.*lowlevel:fbank"):
        get_source("lowlevel:nope")
    assert set(NEW) <= set(SPACES)
