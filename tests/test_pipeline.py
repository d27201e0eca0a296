"""The TR pipeline (resampling + on-disk cache) and the encoding design conventions."""

import numpy as np
import pytest

from core.errors import ConfigError, DataError
from core.features import (TimedFeatures, design_matrix, get_source, lanczos_resample,
                           response_matrix, tr_features)
from core.store import key_hash
from tests.fakes import InMemoryDataset, make_dataset, make_story


class CountingSource:
    """Two-layer source: 'events' (word midpoints, 2 features) and 'frames' (10 Hz sinusoids)."""

    def __init__(self, scale=1.0):
        self.spec = "test:counting"
        self.scale = scale
        self.calls = []

    def layers(self):
        return ["events", "frames"]

    def fingerprint(self):
        return key_hash(self.spec, self.scale)

    def compute(self, dataset, story, layers, progress=None):
        self.calls.append((story, tuple(layers)))
        out = {}
        if "events" in layers:
            w = dataset.words(story)
            vals = np.stack([np.ones(len(w)), np.arange(len(w)) * self.scale], 1)
            out["events"] = TimedFeatures(w.mids, vals.astype(np.float32))
        if "frames" in layers:
            t = np.arange(0, len(dataset.audio(story)) / 16000, 0.1)
            out["frames"] = TimedFeatures(t, np.sin(0.05 * t)[:, None].astype(np.float32) * self.scale)
        if progress:
            progress(1.0, story)
        return out


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BTS_CACHE_DIR", str(tmp_path / "cache"))


def test_tr_features_resamples_every_layer_to_tr_stamps():
    ds = make_dataset(n_stories=2)
    src = CountingSource()
    seen = []
    out = tr_features(ds, src, progress=lambda f, m: seen.append(f))
    assert set(out) == {"events", "frames"}
    for story in ds.stories:
        stamps = ds.tr_stamps(story)
        raw = src.compute(ds, story, ["events", "frames"])
        for layer in ("events", "frames"):
            x = out[layer][story]
            assert x.dtype == np.float32 and x.shape == (ds.n_trs_run(story) - 5, raw[layer].values.shape[1])
            want = lanczos_resample(raw[layer].values.astype(np.float64), raw[layer].times, stamps)
            np.testing.assert_allclose(x, want, rtol=1e-5, atol=1e-5)
    assert seen[-1] == 1.0 and seen == sorted(seen)


def test_second_call_reads_the_cache():
    ds = make_dataset(n_stories=2)
    src = CountingSource()
    first = tr_features(ds, src)
    assert src.calls == [("story0", ("events", "frames")), ("story1", ("events", "frames"))]
    again = CountingSource()
    second = tr_features(ds, again)
    assert again.calls == []  # nothing recomputed
    for layer in first:
        for story in ds.stories:
            np.testing.assert_array_equal(first[layer][story], second[layer][story])
    # a subset of layers / stories is served from the cache too
    assert tr_features(ds, again, layers=["frames"], stories=["story1"])["frames"].keys() == {"story1"}
    assert again.calls == []


def test_cache_key_covers_source_dataset_and_parameters():
    ds = make_dataset(n_stories=1)
    tr_features(ds, CountingSource(), layers=["events"])
    for kwargs, src, data in [({}, CountingSource(scale=2.0), ds),             # source fingerprint
                              ({"cutoff_mult": 0.5}, CountingSource(), ds),    # resampling params
                              ({}, CountingSource(), make_dataset(n_stories=1, seed=5))]:  # dataset
        tr_features(data, src, layers=["events"], **kwargs)
        assert src.calls == [("story0", ("events",))]
    # only the missing layer is computed
    src = CountingSource()
    tr_features(ds, src)
    assert src.calls == [("story0", ("frames",))]


def test_pipeline_bad_inputs():
    ds = make_dataset(n_stories=1)
    with pytest.raises(ConfigError, match="no layer"):
        tr_features(ds, CountingSource(), layers=["nope"])
    with pytest.raises(ConfigError, match="not in dataset"):
        tr_features(ds, CountingSource(), stories=["missing"])

    class Broken(CountingSource):
        def compute(self, dataset, story, layers, progress=None):
            return {}

    with pytest.raises(DataError, match="no TimedFeatures for layer 'events'"):
        tr_features(ds, Broken(), layers=["events"])


def test_wordrate_through_pipeline_and_design():
    ds = make_dataset(n_stories=3, words_per_tr=3)
    feats = tr_features(ds, get_source("lowlevel:wordrate"))["wordrate"]
    x = design_matrix(feats, ds.stories, dataset=ds)
    y = response_matrix(ds, "S01", ds.stories)
    assert x.shape == (sum(ds.n_trs(s) for s in ds.stories), 4) == (y.shape[0], 4)
    assert x.dtype == y.dtype == np.float32
    raw = feats["story0"][:, 0]
    assert np.all(np.abs(raw[12:-8] - 3) < 0.1)  # ~3 words per TR while the story plays


# -- design matrix ---------------------------------------------------------------------------------

def explicit_design(features, stories, delays):
    """z-score with the [10:-5] rows' stats, then row k of delay block j = z[k - delay], k in kept."""
    rows = []
    for s in stories:
        f = features[s].astype(np.float64)
        kept = f[10:len(f) - 5]
        mu, sd = kept.mean(0), kept.std(0)
        z = np.where(sd > 0, (f - mu) / np.where(sd > 0, sd, 1), 0.0)
        for k in range(10, len(f) - 5):
            rows.append(np.concatenate([z[k - d] if 0 <= k - d < len(f) else np.zeros(f.shape[1])
                                        for d in delays]))
    return np.array(rows)


def test_design_matrix_matches_explicit_construction():
    rng = np.random.default_rng(0)
    feats = {"a": rng.standard_normal((31, 3)) * 4 + 2, "b": rng.standard_normal((40, 3)) + np.arange(40)[:, None]}
    for delays in [(1, 2, 3, 4), (0, 2), (12,)]:
        got = design_matrix(feats, ["b", "a"], delays)
        assert got.dtype == np.float32 and got.shape == (25 + 16, 3 * len(delays))
        np.testing.assert_allclose(got, explicit_design(feats, ["b", "a"], delays), atol=1e-5)


def test_design_delays_use_real_earlier_trs_and_zscore_over_kept_rows():
    rng = np.random.default_rng(1)
    f = rng.standard_normal((30, 2)) + 7
    x = design_matrix({"s": f}, ["s"], delays=(0, 4))
    kept = f[10:25]
    z6 = (f[6] - kept.mean(0)) / kept.std(0)
    np.testing.assert_allclose(x[0, 2:], z6, rtol=1e-5)  # delay 4 at kept row 0 = stamp 6, not zero
    np.testing.assert_allclose(x[:, :2].mean(0), 0, atol=1e-6)  # delay-0 block is z-scored
    np.testing.assert_allclose(x[:, :2].std(0), 1, rtol=1e-5)
    const = design_matrix({"s": np.c_[f[:, :1], np.full(30, 3.0)]}, ["s"], delays=(1,))
    assert not const[:, 1].any() and np.isfinite(const).all()


def test_design_matrix_bad_inputs():
    ds = make_dataset(n_stories=1)
    good = {"story0": np.zeros((ds.n_trs_run("story0") - 5, 2))}
    with pytest.raises(DataError, match="TR stamps"):
        design_matrix({"story0": np.zeros((20, 2))}, ["story0"], dataset=ds)
    with pytest.raises(DataError, match="no features for story 'x'"):
        design_matrix(good, ["x"])
    with pytest.raises(DataError, match="need more than 15"):
        design_matrix({"s": np.zeros((15, 2))}, ["s"])
    with pytest.raises(DataError, match="columns"):
        design_matrix({"s": np.zeros((20, 2)), "t": np.zeros((20, 3))}, ["s", "t"])
    with pytest.raises(ConfigError, match="delays"):
        design_matrix(good, ["story0"], delays=())


# -- responses -------------------------------------------------------------------------------------

def test_response_matrix_zscores_per_story_per_voxel():
    ds = make_dataset(n_stories=3, n_voxels=4)
    raw = {s: ds.responses("S01", s).astype(np.float64) for s in ds.stories}
    raw["story0"][:, 1] = 5.0  # constant voxel in one story
    raw["story1"][3, 2] = np.nan  # a NaN sample
    data = InMemoryDataset({s: ds._story(s) for s in ds.stories},
                           {"S01": {s: raw[s] for s in ds.stories[:2]}},
                           {"S01": ds.repeats("S01")}, test_story=ds.test_story)
    y = response_matrix(data, "S01", ["story1", "story0", "story2"])
    assert y.dtype == np.float32 and np.isfinite(y).all()
    n1, n0 = data.n_trs("story1"), data.n_trs("story0")
    b1, b0, b2 = y[:n1], y[n1:n1 + n0], y[n1 + n0:]
    assert not b0[:, 1].any()
    from scipy.stats import zscore
    np.testing.assert_allclose(b0[:, [0, 2, 3]], zscore(raw["story0"][:, [0, 2, 3]]), atol=1e-5)
    np.testing.assert_allclose(b2, zscore(ds.repeats("S01").mean(0)), atol=1e-5)
    col = raw["story1"][:, 2]
    want = (col - np.nanmean(col)) / np.nanstd(col)
    want[3] = 0.0
    np.testing.assert_allclose(b1[:, 2], want, atol=1e-5)


def test_response_matrix_checks_row_counts():
    st = make_story(n_trs_run=30)
    bad = InMemoryDataset({"s": st, "t": make_story(n_trs_run=31)},
                          {"S01": {"s": np.zeros((9, 3)), "t": np.zeros((11, 3))}}, test_story="t")
    with pytest.raises(DataError, match=r"S01/s have shape \(9, 3\), expected \(10, 3\)"):
        response_matrix(bad, "S01", ["t", "s"])
