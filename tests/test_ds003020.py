"""ds003020 reader on the fixture: every file variant, the describe() contract, partial downloads,
split, repeats, voxel report, cortex mapping, bad inputs, and the recoverability of planted effects."""

import json
import shutil

import h5py
import numpy as np
import pytest
import soundfile as sf

from core.data import load_dataset
from core.data.base import SurfaceMapping
from core.data.ds003020 import SCANNER_TR_SECONDS, Ds003020Dataset
from core.data.layout import write_responses
from core.errors import ConfigError, DataError
from ds_fixture import make_ds003020_fixture


@pytest.fixture(scope="module")
def info(tmp_path_factory):
    return make_ds003020_fixture(tmp_path_factory.mktemp("ds003020") / "root")


@pytest.fixture(scope="module")
def ds(info):
    return load_dataset(f"ds003020:{info['root']}")


@pytest.fixture
def copy(info, tmp_path):
    """A private copy of the fixture root, for tests that damage it."""
    root = tmp_path / "root"
    shutil.copytree(info["root"], root)
    return root


def _hf5(root, subj, story):
    return root / "derivative" / "preprocessed_data" / subj / f"{story}.hf5"


# -- reading --------------------------------------------------------------------------------
def test_describe_matches_the_design_contract(ds, info):
    d = ds.describe()
    assert set(d) == {"root", "subjects", "stories", "test_story", "n_trs", "n_voxels", "tr",
                      "scanner_tr", "n_repeats"}
    assert d["root"] == str(info["root"].resolve())
    assert d["subjects"] == ["UTS01", "UTS02"]
    assert d["stories"] == info["stories"] and "auditory_localizer" not in d["stories"]
    assert d["test_story"] == "wheretheressmoke"
    assert d["n_trs"] == {s: r - 20 for s, r in info["respdict"].items()}
    assert d["n_voxels"] == {s: v["n_voxels"] for s, v in info["subjects"].items()} == {"UTS01": 300, "UTS02": 240}
    assert d["tr"] == 2.0 and d["scanner_tr"] == 2.0045 == SCANNER_TR_SECONDS
    assert d["n_repeats"] == {"UTS01": 4, "UTS02": 4}
    assert json.loads(json.dumps(d)) == d
    assert ds.spec == f"ds003020:{info['root']}"


def test_every_wav_variant_reads_as_the_16k_source(ds, info):
    seen = set()
    for story in ds.stories:
        v = info["variants"][story]
        hdr = sf.info(str(info["root"] / "stimuli" / f"{story}.wav"))
        assert (hdr.samplerate, hdr.channels) == (v["sample_rate"], v["channels"])
        seen.add((hdr.samplerate, hdr.channels))
        audio, src = ds.audio(story), info["audio"][story]
        assert audio.dtype == np.float32 and abs(len(audio) - len(src)) <= 1
        n = min(len(audio), len(src))
        err = (audio[:n] - src[:n])[400:-400]  # away from the resampler's edge transients
        # 16-bit quantisation, plus the resamplers' roll-off near 8 kHz for 44.1 / 22.05 kHz files
        assert np.sqrt(np.mean(err ** 2)) < 1e-2 * np.sqrt(np.mean(src ** 2)), (story, v)
        assert np.abs(err).max() < 5e-3, (story, v)
        assert abs(len(audio) / 16000 - (2 * ds.n_trs_run(story) - 20)) <= 2.0
    assert {(44100, 2), (22050, 1), (16000, 1), (44100, 1)} <= seen


def test_every_textgrid_variant_gives_the_cleaned_events(ds, info):
    kinds = set()
    for story in ds.stories:
        raw = (info["root"] / "derivative" / "TextGrids" / f"{story}.TextGrid").read_bytes()
        kind = info["variants"][story]["textgrid"]
        kinds.add(kind)
        assert (b"\r\n" in raw) == (kind == "crlf")
        assert (b"xmin = " not in raw) == (kind == "short")
        assert (b'name = ""' in raw) == (kind == "unnamed")
        for got, ref in ((ds.words(story), info["words"][story]), (ds.phones(story), info["phones"][story])):
            assert got.labels == ref.labels
            np.testing.assert_allclose(got.onsets, ref.onsets, atol=1e-9)
            np.testing.assert_allclose(got.offsets, ref.offsets, atol=1e-9)
        words = ds.words(story).labels
        assert words and all(w == w.lower() and w.strip() and w not in ("sp", "{br}") for w in words)
        assert all(not p[-1].isdigit() and p == p.upper() for p in ds.phones(story).labels)
    assert kinds == {"long", "crlf", "unnamed", "short"}


def test_responses_and_repeats(ds, info):
    root = info["root"]
    for subj in ds.subjects:
        for story in ds.subject_stories(subj):
            y = ds.responses(subj, story)
            assert y.dtype == np.float32 and y.shape == (ds.n_trs(story), ds.n_voxels(subj))
            with h5py.File(_hf5(root, subj, story), "r") as f:
                np.testing.assert_array_equal(y, f["data"][()].astype(np.float32))
        reps = ds.repeats(subj)
        assert reps.dtype == np.float32
        assert reps.shape == (4, ds.n_trs("wheretheressmoke"), ds.n_voxels(subj))
        assert ds.n_repeats(subj) == 4


def test_partial_download_subject(ds, info):
    missing = info["subjects"]["UTS02"]["missing"]
    assert len(missing) == 1
    assert ds.subject_stories("UTS02") == info["subjects"]["UTS02"]["stories"]
    assert missing[0] not in ds.subject_stories("UTS02") and missing[0] in ds.subject_stories("UTS01")
    with pytest.raises(DataError, match=rf"UTS02.*{missing[0]}\.hf5 is missing.*UTS02 has: "):
        ds.responses("UTS02", missing[0])
    sp = ds.split("UTS02")
    assert missing[0] not in sp["train"] and sp["test"] == ["wheretheressmoke"]


def test_paper_split(ds):
    sp = ds.split("UTS01")
    assert sp["test"] == ["wheretheressmoke"] and sp["val"] == ["stagefright"]
    assert sorted(sp["train"]) == sorted(set(ds.stories) - {"wheretheressmoke", "stagefright"})


def test_split_json_overrides_and_is_validated(copy):
    (copy / "derivative" / "split.json").write_text(json.dumps({"test": "life", "val": None}))
    d = Ds003020Dataset(copy)
    assert (d.test_story, d.val_story) == ("life", None)
    assert d.split("UTS01")["test"] == ["life"] and d.split("UTS01")["val"] == []
    (copy / "derivative" / "split.json").write_text(json.dumps({"test": "nosuchstory"}))
    with pytest.raises(DataError, match=r"split\.json names test story 'nosuchstory'"):
        Ds003020Dataset(copy)


def test_test_story_detected_from_individual_repeats(copy, info):
    """Without wheretheressmoke, the story whose hf5 holds individual_repeats is the test story."""
    rename = {copy / "stimuli" / "wheretheressmoke.wav": copy / "stimuli" / "naked.wav",
              copy / "derivative" / "TextGrids" / "wheretheressmoke.TextGrid":
                  copy / "derivative" / "TextGrids" / "naked.TextGrid"}
    rename.update({_hf5(copy, s, "wheretheressmoke"): _hf5(copy, s, "naked") for s in ("UTS01", "UTS02")})
    for a, b in rename.items():
        a.rename(b)
    resp = dict(info["respdict"])
    resp["naked"] = resp.pop("wheretheressmoke")
    (copy / "derivative" / "respdict.json").write_text(json.dumps(resp))
    d = Ds003020Dataset(copy)
    assert d.test_story == "naked" and d.val_story == "stagefright"
    assert d.repeats("UTS01").shape[0] == 4


def test_voxel_report_finds_nan_and_constant_voxels(ds, info):
    for subj, plant in info["planted"].items():
        rep = ds.voxel_report(subj)
        assert rep.n_voxels == info["subjects"][subj]["n_voxels"]
        np.testing.assert_array_equal(rep.nan, plant["nan"])
        np.testing.assert_array_equal(rep.constant, plant["constant"])
        assert len(rep.nonfinite_repeats) == len(rep.constant_repeats) == 0
        assert rep.valid.sum() == rep.n_voxels - 2
        assert rep.summary() == (f"2 of {rep.n_voxels} voxels dropped: 1 NaN/inf and 1 constant in the "
                                 "responses, 0 NaN/inf and 0 constant in the test-story repeats")


def test_surface_and_rois(copy):
    d = Ds003020Dataset(copy)
    assert d.surface("UTS01") is None
    rois = d.rois("UTS01")
    assert list(rois) == ["cortex"] and rois["cortex"].dtype == bool and rois["cortex"].all()
    assert rois["cortex"].shape == (300,)
    (copy / "derivative" / "pycortex-db" / "UTS01").mkdir(parents=True)
    d = Ds003020Dataset(copy)
    db = copy.resolve() / "derivative" / "pycortex-db"
    assert d.surface("UTS01") == SurfaceMapping("UTS01", "UTS01_auto", "thick", filestore=db)
    assert d.surface("UTS02") is None
    # an empty pycortex subject has no overlay: ROIs fall back to cortex only, with a note
    rois = d.rois("UTS01")
    assert "cortex" in rois and rois["cortex"].all() and "UTS01" in d.roi_notes
    (copy / "derivative" / "subject_xfms.json").write_text(json.dumps({"UTS01": "UTS01_custom"}))
    assert Ds003020Dataset(copy).surface("UTS01").xfm == "UTS01_custom"


def test_fingerprint_is_stable_and_content_sensitive(ds, info, copy):
    assert ds.fingerprint() == load_dataset(f"ds003020:{info['root']}").fingerprint()
    assert Ds003020Dataset(copy).fingerprint() == ds.fingerprint()  # location-independent
    resp = dict(info["respdict"])
    resp["life"] += 1  # same file size, different content
    (copy / "derivative" / "respdict.json").write_text(json.dumps(resp))
    assert Ds003020Dataset(copy).fingerprint() != ds.fingerprint()


# -- bad inputs -----------------------------------------------------------------------------
def test_load_dataset_specs(tmp_path):
    with pytest.raises(ConfigError, match=r"'nonsense'.*demo.*ds003020:<path>"):
        load_dataset("nonsense")
    with pytest.raises(ConfigError, match=r"ds003020:<path>"):
        load_dataset("ds003020:")
    with pytest.raises(DataError, match=rf"{tmp_path / 'nowhere'} does not exist"):
        load_dataset(f"ds003020:{tmp_path / 'nowhere'}")
    (tmp_path / "stimuli").mkdir()
    with pytest.raises(DataError, match=rf"{tmp_path} is not a ds003020 root: missing derivative/.*"
                                        r"stimuli/<story>\.wav"):
        load_dataset(f"ds003020:{tmp_path}")


def test_unknown_story_and_subject(ds):
    with pytest.raises(DataError, match=r"unknown story 'nosuch'.*available: adollshouse, legacy"):
        ds.audio("nosuch")
    with pytest.raises(DataError, match=r"unknown story 'nosuch'"):
        ds.words("nosuch")
    with pytest.raises(DataError, match=r"unknown subject 'UTS09'.*available: UTS01, UTS02"):
        ds.responses("UTS09", "life")
    with pytest.raises(DataError, match=r"unknown subject 'UTS09'"):
        ds.n_voxels("UTS09")


def test_response_rows_not_matching_r(copy, info):
    path = _hf5(copy, "UTS01", "legacy")
    rows = info["respdict"]["legacy"] - 20
    write_responses(path, np.zeros((rows - 1, 300)))
    d = Ds003020Dataset(copy)
    msg = rf"legacy\.hf5 has {rows - 1} response rows.*R={rows + 20}"
    with pytest.raises(DataError, match=msg):
        d.responses("UTS01", "legacy")
    with pytest.raises(DataError, match=msg):
        d.describe()
    assert d.n_voxels("UTS02") == 240  # the other subject is unaffected


def test_voxel_count_differing_between_stories(copy, info):
    rows = info["respdict"]["life"] - 20
    write_responses(_hf5(copy, "UTS01", "life"), np.ones((rows, 301)))
    with pytest.raises(DataError, match=r"UTS01: .*life\.hf5 has 301 voxels but .* has 300"):
        Ds003020Dataset(copy).responses("UTS01", "stagefright")


def test_audio_duration_not_matching_r(copy, info):
    resp = dict(info["respdict"])
    resp["stagefright"] += 4  # 8 s more than the audio
    (copy / "derivative" / "respdict.json").write_text(json.dumps(resp))
    with pytest.raises(DataError, match=rf"stagefright\.wav lasts {info['durations']['stagefright']:.1f} s"
                                        rf".*R={resp['stagefright']}"):
        Ds003020Dataset(copy).audio("stagefright")


@pytest.mark.parametrize("content, pattern", [(b"", r"life\.wav is empty"),
                                              (b"RIFF\0\0\0\0WAVEgarbage" * 9, r"cannot read audio file .*life\.wav")])
def test_bad_wav_through_the_dataset(copy, content, pattern):
    (copy / "stimuli" / "life.wav").write_bytes(content)
    with pytest.raises(DataError, match=pattern):
        Ds003020Dataset(copy).audio("life")


def test_missing_wav_makes_the_story_incomplete(copy):
    (copy / "stimuli" / "life.wav").unlink()
    d = Ds003020Dataset(copy)
    assert "life" not in d.stories and "life" not in d.subject_stories("UTS01")
    with pytest.raises(DataError, match=r"story 'life' is incomplete.*missing stimuli/life\.wav"):
        d.audio("life")


def test_unfetched_annex_links_count_as_missing(copy):
    """datalad leaves files it has not fetched as broken symlinks."""
    annex = copy / ".git" / "annex" / "objects" / "never-fetched"
    for path in (copy / "stimuli" / "legacy.wav", _hf5(copy, "UTS02", "life")):
        path.unlink()
        path.symlink_to(annex)
    d = Ds003020Dataset(copy)
    assert "legacy" not in d.stories and "missing stimuli/legacy.wav" in d.skipped["legacy"]
    assert "life" not in d.subject_stories("UTS02") and "life" in d.subject_stories("UTS01")


def test_textgrid_without_word_tier(copy):
    path = copy / "derivative" / "TextGrids" / "legacy.TextGrid"
    path.write_text('File type = "ooTextFile"\nObject class = "TextGrid"\n\n0\n60\n<exists>\n1\n'
                    '"IntervalTier"\n"phone"\n0\n60\n1\n0\n60\n"AH0"\n')
    with pytest.raises(DataError, match=r"legacy\.TextGrid has no word tier"):
        Ds003020Dataset(copy).words("legacy")


def test_missing_respdict_and_no_subjects(copy):
    shutil.rmtree(copy / "derivative" / "preprocessed_data")
    with pytest.raises(DataError, match=r"no responses under .*preprocessed_data"):
        Ds003020Dataset(copy)
    (copy / "derivative" / "respdict.json").unlink()
    with pytest.raises(DataError, match=r"respdict\.json is missing"):
        Ds003020Dataset(copy)


def test_repeats_errors(copy):
    d = Ds003020Dataset(copy)
    with pytest.raises(DataError, match=r"life\.hf5 has no 'individual_repeats'.*wheretheressmoke"):
        d.repeats("UTS01", "life")
    _hf5(copy, "UTS02", "wheretheressmoke").unlink()
    d = Ds003020Dataset(copy)
    assert d.n_repeats("UTS02") == 0 and d.split("UTS02")["test"] == []
    with pytest.raises(DataError, match=r"no responses of UTS02 for 'wheretheressmoke'"):
        d.repeats("UTS02")


def test_corrupt_hf5(copy):
    _hf5(copy, "UTS01", "legacy").write_bytes(b"not hdf5 at all")
    with pytest.raises(DataError, match=r"cannot read .*legacy\.hf5"):
        Ds003020Dataset(copy).n_voxels("UTS01")


# -- planted effects ------------------------------------------------------------------------
def _lanczos(t_in, x, t_out, window=3):
    """Lanczos resampling (ds003020.md closed form), written here as an independent reference."""
    d = (t_out[:, None] - t_in[None, :]) / np.mean(np.diff(t_out))
    with np.errstate(divide="ignore", invalid="ignore"):
        k = window * np.sin(np.pi * d) * np.sin(np.pi * d / window) / (np.pi ** 2 * d ** 2)
    k[d == 0] = 1.0
    k[np.abs(d) > window] = 0.0
    return k @ x


def _delayed_z(x):
    x = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
    return np.hstack([np.vstack([np.zeros((d, x.shape[1])), x[:-d]]) for d in (1, 2, 3, 4)])


def test_planted_effects_are_recoverable(ds, info):
    """Ridge on mel envelopes (the lowlevel:powspec recipe) finds the acoustic voxels; a word-rate
    feature finds the word-rate voxels; noise voxels stay at chance."""
    from core.data import timing
    from core.features.spectral import mel_band_envelopes

    subj, plant = "UTS01", info["planted"]["UTS01"]
    sl = slice(timing.TRIM_START, -timing.TRIM_END)

    def powspec(story):
        t, env = mel_band_envelopes(ds.audio(story), 16000)
        return _delayed_z(_lanczos(t, env.astype(np.float64), ds.tr_stamps(story))[sl])

    def wordrate(story):
        on = ds.words(story).onsets
        n = ds.n_trs_run(story) - 5
        counts = [np.count_nonzero((on >= a) & (on < b)) for a, b in map(timing.tr_window, range(n))]
        return _delayed_z(np.asarray(counts, dtype=np.float64)[:, None][sl])

    sp = ds.split(subj)
    train = sp["train"] + sp["val"]
    y = np.nan_to_num(np.vstack([ds.responses(subj, s) for s in train]))
    y_test = ds.responses(subj, ds.test_story)
    for feats, good in ((powspec, "acoustic"), (wordrate, "wordrate")):
        x = np.vstack([feats(s) for s in train])
        w = np.linalg.solve(x.T @ x + 100.0 * np.eye(x.shape[1]), x.T @ y)
        pred = feats(ds.test_story) @ w
        r = np.array([np.corrcoef(pred[:, v], y_test[:, v])[0, 1] for v in plant[good]])
        r_noise = np.array([np.corrcoef(pred[:, v], y_test[:, v])[0, 1] for v in plant["noise"]])
        assert r.mean() > 0.5, (good, r.mean())
        assert abs(r_noise.mean()) < 0.1, (good, r_noise.mean())
        assert np.mean(r > np.percentile(r_noise, 95)) > 0.8, good
