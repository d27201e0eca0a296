"""ds003020 reader on real-data defects: non-finite and constant repeats, skipped stories, the
content fingerprint (same-size edits, memo, annex keys), hf5 read errors after open, the scanner TR."""

import json
import os
import shutil

import h5py
import numpy as np
import pytest
import soundfile as sf

from core.data.base import Dataset, VoxelReport, scan_voxels
from core.data.ds003020 import Ds003020Dataset
from core.encoding.ceiling import noise_ceiling
from core.errors import DataError
from ds_fixture import DEFECTS, corrupt_hf5_chunk, make_ds003020_fixture
from test_ds003020 import _hf5, copy, info  # noqa: F401  (fixtures shared with the reader tests)


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
    import core.data.digests as mod

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
    import core.data.digests as mod

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
