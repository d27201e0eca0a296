"""ds003020 reader on the fixture: every file variant, the describe() contract, partial downloads,
split, repeats, voxel report, cortex mapping, bad inputs, and the recoverability of planted effects."""

import json
import os
import shutil

import h5py
import numpy as np
import pytest
import soundfile as sf

from core.data import load_dataset
from core.data.base import Dataset, SurfaceMapping, VoxelReport, scan_voxels
from core.data.ds003020 import SCANNER_TR_SECONDS, Ds003020Dataset
from core.data.layout import write_responses
from core.encoding.ceiling import noise_ceiling
from core.errors import ConfigError, DataError
from ds_fixture import DEFECTS, corrupt_hf5_chunk, make_ds003020_fixture


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


# -- real-data defects: non-finite repeats, skipped stories, content fingerprint, read errors,
#    scanner TR ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def defects(tmp_path_factory):
    return make_ds003020_fixture(tmp_path_factory.mktemp("ds003020-defects") / "root", real_defects=True)


def test_scan_voxels_rule_on_small_arrays():
    """Each rule on a hand-made case; a voxel is listed under the first rule it breaks only."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((6, 8)), rng.standard_normal((5, 8))
    a[2, 0] = np.nan          # NaN in data
    b[4, 1] = -np.inf         # inf in data
    a[:, 2] = 3.0             # constant in one story
    b[:, 0] = 1.0             # NaN voxel also constant elsewhere: stays "nan" only
    reps = rng.standard_normal((3, 4, 8))
    reps[1, 2, 3] = np.nan    # NaN in a repeat
    reps[2, 0, 4] = np.inf    # inf in a repeat
    reps[0, :, 5] = -0.5      # constant in one repeat
    reps[0, 0, 2] = np.nan    # constant-data voxel, also bad in repeats: stays "constant"
    rep = scan_voxels(8, [a, b], list(reps))
    assert (rep.nan.tolist(), rep.constant.tolist()) == ([0, 1], [2])
    assert (rep.nonfinite_repeats.tolist(), rep.constant_repeats.tolist()) == ([3, 4], [5])
    assert rep.valid.tolist() == [False] * 6 + [True, True]
    assert rep.dropped.tolist() == [0, 1, 2, 3, 4, 5]
    assert rep.counts() == {"nan": 2, "constant": 1, "nonfinite_repeats": 2, "constant_repeats": 1}
    assert rep.summary() == ("6 of 8 voxels dropped: 2 NaN/inf and 1 constant in the responses, "
                             "2 NaN/inf and 1 constant in the test-story repeats")
    # an all-NaN column is non-finite, not constant; no repeats → nothing dropped for them
    c = np.zeros((3, 2))
    c[:, 0] = np.nan
    c[:, 1] = [0.0, 1.0, 2.0]
    rep = scan_voxels(2, [c])
    assert (rep.nan.tolist(), rep.constant.tolist(), rep.nonfinite_repeats.tolist()) == ([0], [], [])
    with pytest.raises(DataError, match=r"shape \(3, 2\) does not match \(n_trs, 3\) voxels"):
        scan_voxels(3, [c])


def test_nonfinite_and_constant_repeats_are_dropped(defects):
    """Real ds003020 has NaN/inf in individual_repeats: those voxels are dropped like NaN voxels of
    data, so the noise ceiling of the kept voxels is computable."""
    d = Ds003020Dataset(defects["root"])
    for subj, plant in defects["planted"].items():
        assert set(DEFECTS) <= set(plant) and len({int(plant[k][0]) for k in DEFECTS}) == len(DEFECTS)
        reps = d.repeats(subj)
        assert np.isnan(reps[1, 5:9, plant["nan_repeat"]]).all()
        assert np.isposinf(reps[-1, 0, plant["inf_repeat"]]).all()
        assert np.isfinite(d.responses(subj, d.test_story)[:, plant["nan_repeat"]]).all()
        with pytest.raises(DataError, match="non-finite"):  # what an encode hit before
            noise_ceiling(reps)
        rep = d.voxel_report(subj)
        np.testing.assert_array_equal(rep.nan, np.sort(np.r_[plant["nan"], plant["inf"]]))
        np.testing.assert_array_equal(rep.constant, plant["constant"])
        np.testing.assert_array_equal(rep.nonfinite_repeats, np.sort(np.r_[plant["nan_repeat"],
                                                                         plant["inf_repeat"]]))
        np.testing.assert_array_equal(rep.constant_repeats, plant["constant_repeat"])
        assert rep.valid.sum() == rep.n_voxels - 6
        assert rep.summary().startswith(f"6 of {rep.n_voxels} voxels dropped: 2 NaN/inf and 1 constant")
        cc = noise_ceiling(reps[:, :, rep.valid])
        assert cc.shape == (rep.n_voxels - 6,) and np.isfinite(cc[np.isin(np.flatnonzero(rep.valid),
                                                                       plant["acoustic"])]).all()
        # the report is cached on disk: a fresh reader gets the same arrays without scanning
        again = Ds003020Dataset(defects["root"])
        again._scan_voxels = None  # would fail if called
        for name in VoxelReport.FIELDS:
            np.testing.assert_array_equal(getattr(again.voxel_report(subj), name), getattr(rep, name))


def test_skipped_records_every_story_left_out(copy, info):
    # a complete story without UTS01's responses; a story lacking its wav; an hf5 of a story that
    # nothing else names
    _hf5(copy, "UTS01", "legacy").unlink()
    (copy / "stimuli" / "stagefright.wav").unlink()
    shutil.copy(_hf5(copy, "UTS01", "life"), _hf5(copy, "UTS01", "bluehope"))
    d = Ds003020Dataset(copy)
    root = copy.resolve()
    assert d.skipped == {"bluehope": "missing stimuli/bluehope.wav, derivative/TextGrids/bluehope.TextGrid, "
                                     "a respdict.json entry",
                         "stagefright": "missing stimuli/stagefright.wav"}
    uts01 = d.skipped_for("UTS01")
    assert uts01 == [
        {"story": "bluehope", "file": str(root / "stimuli" / "bluehope.wav"), "kind": "story-incomplete",
         "reason": "missing stimuli/bluehope.wav, derivative/TextGrids/bluehope.TextGrid, a respdict.json "
                   "entry (UTS01's bluehope.hf5 is present but unused)"},
        {"story": "legacy", "file": str(_hf5(root, "UTS01", "legacy")), "kind": "response-missing",
         "reason": "missing derivative/preprocessed_data/UTS01/legacy.hf5"},
        {"story": "stagefright", "file": str(root / "stimuli" / "stagefright.wav"),
         "kind": "story-incomplete",
         "reason": "missing stimuli/stagefright.wav (UTS01's stagefright.hf5 is present but unused)"}]
    missing02 = info["subjects"]["UTS02"]["missing"][0]
    assert d.subject_skipped("UTS02") == {
        "bluehope": "missing stimuli/bluehope.wav, derivative/TextGrids/bluehope.TextGrid, "
                    "a respdict.json entry",
        missing02: f"missing derivative/preprocessed_data/UTS02/{missing02}.hf5",
        "stagefright": "missing stimuli/stagefright.wav (UTS02's stagefright.hf5 is present but unused)"}
    assert "legacy" not in d.subject_stories("UTS01") and "bluehope" not in d.stories
    assert json.loads(json.dumps(uts01)) == uts01  # goes into provenance as is


def test_skipped_tells_unrecorded_stories_from_missing_files(copy, info):
    """UTS05–08 heard only 27 of the 84 stories: a story outside those is 'not-recorded', not lost."""
    pre = copy / "derivative" / "preprocessed_data"
    (pre / "UTS02").rename(pre / "UTS05")
    resp = dict(info["respdict"])
    resp["bluehope"] = resp["life"]
    (copy / "derivative" / "respdict.json").write_text(json.dumps(resp))
    shutil.copy(copy / "stimuli" / "life.wav", copy / "stimuli" / "bluehope.wav")
    grids = copy / "derivative" / "TextGrids"
    shutil.copy(grids / "life.TextGrid", grids / "bluehope.TextGrid")
    shutil.copy(_hf5(copy, "UTS01", "life"), _hf5(copy, "UTS01", "bluehope"))
    d = Ds003020Dataset(copy)
    assert "bluehope" in d.subject_stories("UTS01") and d.skipped == {}
    assert d.skipped_for("UTS01") == []
    missing = info["subjects"]["UTS02"]["missing"][0]  # one of the 27: a partial download
    kinds = {x["story"]: x["kind"] for x in d.skipped_for("UTS05")}
    assert kinds == {"bluehope": "not-recorded", missing: "response-missing"}


def test_base_dataset_skips_nothing_by_default():
    class Bare(Dataset):
        pass

    bare = Bare()
    assert dict(bare.skipped) == {} and bare.skipped_for("S1") == [] and bare.subject_skipped("S1") == {}
    assert bare.scanner_tr == bare.tr == 2.0


def _mtime_ns(path):
    st = os.stat(path)
    return st.st_atime_ns, st.st_mtime_ns


@pytest.mark.parametrize("how", ["h5py", "bytes"])
def test_fingerprint_sees_same_size_edits_with_mtime_restored(copy, how):
    d = Ds003020Dataset(copy)
    before = d.fingerprint()
    path = _hf5(copy, "UTS01", "legacy")
    size, times = path.stat().st_size, _mtime_ns(path)
    if how == "h5py":
        with h5py.File(path, "r+") as f:
            f["data"][0, 0] = f["data"][0, 0] + 1.0
    else:  # flip bytes in the middle of the file
        with open(path, "r+b") as fh:
            fh.seek(size // 2)
            b = fh.read(8)
            fh.seek(size // 2)
            fh.write(bytes(x ^ 0xFF for x in b))
    os.utime(path, ns=times)
    assert path.stat().st_size == size and _mtime_ns(path) == times
    assert d.fingerprint() != before  # the same reader notices
    assert Ds003020Dataset(copy).fingerprint() == d.fingerprint() != before  # so does a fresh one


def test_fingerprint_edits_of_stimuli_and_memo(copy, info, monkeypatch):
    d = Ds003020Dataset(copy)
    before = d.fingerprint()
    # the digests are remembered: a fresh reader of unchanged files only stats them
    import core.data.ds003020 as mod

    def no_read(path):
        raise AssertionError(f"re-hashed {path}")

    monkeypatch.setattr(mod, "file_hash", no_read)
    assert Ds003020Dataset(copy).fingerprint() == before
    monkeypatch.undo()
    wav = copy / "stimuli" / "life.wav"
    data, rate = sf.read(str(wav), dtype="int16")
    data[len(data) // 2] ^= 1
    times = _mtime_ns(wav)
    sf.write(str(wav), data, rate, subtype="PCM_16")
    os.utime(wav, ns=times)
    edited = Ds003020Dataset(copy).fingerprint()
    assert edited != before
    (copy / "derivative" / "scanner_tr.json").write_text('{"scanner_tr": 2.0}')
    assert Ds003020Dataset(copy).fingerprint() not in (before, edited)


def test_fingerprint_uses_annex_keys_without_reading(copy, monkeypatch):
    """datalad/git-annex files are symlinks to objects named by a content hash: that is the digest."""
    path = _hf5(copy, "UTS01", "legacy")
    d = Ds003020Dataset(copy)
    before = d.fingerprint()
    key = f"SHA256E-s{path.stat().st_size}--{'ab' * 32}.hf5"
    obj = copy / ".git" / "annex" / "objects" / "Xx" / "Yy" / key / key
    obj.parent.mkdir(parents=True)
    path.rename(obj)
    path.symlink_to(obj)
    import core.data.ds003020 as mod

    monkeypatch.setattr(mod, "file_hash", lambda p: (_ for _ in ()).throw(AssertionError(p)))
    annexed = Ds003020Dataset(copy).fingerprint()
    assert annexed != before  # digest = annex key, not sha1
    key2 = key.replace("ab" * 32, "cd" * 32)  # another content, same size
    obj2 = obj.parent.parent / key2 / key2
    obj2.parent.mkdir()
    shutil.copy(obj, obj2)
    path.unlink()
    path.symlink_to(obj2)
    assert Ds003020Dataset(copy).fingerprint() != annexed
    d = Ds003020Dataset(copy)
    assert d.responses("UTS01", "legacy").shape[0] == d.n_trs("legacy")  # still reads through the link


@pytest.mark.parametrize("name, call", [
    ("data", lambda d: d.responses("UTS01", "legacy")),
    ("data", lambda d: d.voxel_report("UTS01")),
])
def test_data_read_error_after_open(copy, name, call):
    path = _hf5(copy, "UTS01", "legacy")
    corrupt_hf5_chunk(path, name)
    d = Ds003020Dataset(copy)
    assert d.n_voxels("UTS01") == 300  # headers still read: the damage shows only when reading
    with h5py.File(path, "r") as f, pytest.raises(OSError):
        f["data"][()]  # h5py itself fails after opening
    with pytest.raises(DataError, match=rf"cannot read 'data' of {path.resolve()} \(OSError: .*\); the "
                                        r"file is truncated or corrupt — re-download it$"):
        call(d)


def test_repeats_read_error_after_open(copy):
    path = _hf5(copy, "UTS01", "wheretheressmoke")
    corrupt_hf5_chunk(path, "individual_repeats")
    d = Ds003020Dataset(copy)
    assert d.n_repeats("UTS01") == 4 and d.responses("UTS01", "wheretheressmoke").shape[1] == 300
    with pytest.raises(DataError, match=rf"cannot read 'individual_repeats' of {path.resolve()} "
                                        r"\(OSError: .*re-download it$"):
        d.repeats("UTS01")
    with pytest.raises(DataError, match=rf"cannot read repeat 0 of 'individual_repeats' of "
                                        rf"{path.resolve()} .*re-download it$"):
        d.voxel_report("UTS01")
    assert d.voxel_report("UTS02").n_voxels == 240  # the other subject is unaffected


def test_truncated_hf5_fails_at_open(copy):
    path = _hf5(copy, "UTS01", "legacy")
    os.truncate(path, path.stat().st_size // 2)
    with pytest.raises(DataError, match=rf"cannot read {path.resolve()} \(.*truncated.*re-download it$"):
        Ds003020Dataset(copy).n_voxels("UTS01")


def test_scanner_tr_override(copy):
    path = copy / "derivative" / "scanner_tr.json"
    path.write_text(json.dumps({"scanner_tr": 2.5}))
    d = Ds003020Dataset(copy)
    assert d.scanner_tr == 2.5 and d.describe()["scanner_tr"] == 2.5 and d.tr == 2.0
    assert d.tr_stamps("life")[0] == -9.0  # the stamps keep the published 2.0 s convention


@pytest.mark.parametrize("content, pattern", [
    ('{"scanner_tr": -2.0}', r"\"scanner_tr\" must be a positive, finite number of seconds, got -2\.0"),
    ('{"scanner_tr": 0}', r"got 0;"),
    ('{"scanner_tr": NaN}', r"got nan;"),
    ('{"scanner_tr": Infinity}', r"got inf;"),
    ('{"scanner_tr": "2.0045"}', r"got '2\.0045';"),
    ('{"scanner_tr": true}', r"got True;"),
    ('{"tr": 2.0045}', r"must be \{\"scanner_tr\": seconds\} \(KeyError"),
    ('[2.0045]', r"must be \{\"scanner_tr\": seconds\} \(TypeError"),
    ('{"scanner_tr": 2.0', r"must be \{\"scanner_tr\": seconds\} \(JSONDecodeError"),
])
def test_bad_scanner_tr_json(copy, content, pattern):
    path = copy / "derivative" / "scanner_tr.json"
    path.write_text(content)
    with pytest.raises(DataError, match=rf"^{path.resolve()}:? .*{pattern}.*delete it to use 2\.0045 s$"):
        Ds003020Dataset(copy)


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
