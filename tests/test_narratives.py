"""The Narratives reader on a fixture in the published layout, and the ISC noise ceiling."""

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import pearsonr
from sklearn.metrics import roc_auc_score

from core.cli import main
from core.data import load_dataset
from core.data.narratives import INITIAL_TRIM, NarrativesDataset
from core.encoding.ceiling import (ceiling_from_signal_power, fisher_mean, isc, isc_ceiling,
                                   isc_to_signal_power, noise_ceiling)
from core.errors import DataError
from tests.narratives_fixture import STORIES, make_narratives_fixture


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return make_narratives_fixture(tmp_path_factory.mktemp("narratives"), seed=0)


@pytest.fixture(scope="module")
def ds(fx):
    return load_dataset(f"narratives:{fx['root']}")


def _run(capsys, *argv):
    code = main(["-q", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _clone(fx, tmp_path) -> Path:
    """Hard-linked copy of the fixture (replace files with :func:`_replace`, never edit in place)."""
    dst = tmp_path / "clone"
    shutil.copytree(fx["root"], dst, copy_function=os.link)
    return dst


def _replace(path: Path, text: str) -> None:
    path.unlink()
    path.write_text(text)


# -- describe and timing --------------------------------------------------------------------------
def test_describe_cli(fx, capsys):
    code, out, err = _run(capsys, "datasets", "describe", "--data", f"narratives:{fx['root']}")
    assert code == 0
    d = json.loads(out)
    assert d["subjects"] == list(fx["subjects"]) and d["stories"] == fx["stories"]
    assert d["test_story"] == "pieman" and d["tr"] == 1.5
    assert d["n_trs"] == {s: STORIES[s]["duration"] - 6 for s in fx["stories"]} == fx["n_trs"]
    assert d["story_tr"]["milkywaysynonyms"] == 1.52 and d["story_tr"]["lucy"] == 1.5
    assert d["n_voxels"] == {s: len(fx["vertices"]) for s in fx["subjects"]}
    assert d["n_repeats"] == {"sub-001": 2, "sub-002": 2, "sub-003": 1, "sub-004": 1, "sub-005": 1}
    assert "sub-005_task-lucy" in err  # the listed scan without files is named


def test_timing_facts(ds, fx):
    assert INITIAL_TRIM == 6
    t = ds.timings
    assert t["lucy"].onset == 2 and t["pieman"].onset == 10 and t["milkywaysynonyms"].onset == 14
    assert all(ds.n_trs(s) == t[s].duration - 6 for s in ds.stories)
    stamps = ds.tr_stamps("milkywaysynonyms")
    assert len(stamps) == ds.n_trs("milkywaysynonyms") + 15
    assert np.allclose(np.diff(stamps), 1.52) and np.allclose(np.diff(ds.tr_stamps("pieman")), 1.5)
    # response row i is scan TR onset + 6 + i: served audio time 0 = scan time (onset + 1)·TR
    assert t["pieman"].crop == pytest.approx(16.5) and t["lucy"].crop == pytest.approx(1.5)
    assert ds._shift["sub-004_task-lucy"] == 0 and ds._shift["sub-003_task-lucy"] == 2
    # the trigger-shifted scan is cut at its own onset: its planted signal lines up
    v = np.searchsorted(ds.vertices("sub-004"), fx["acoustic"])
    y = ds.responses("sub-004", "lucy")[:, v]
    r = [pearsonr(y[:, j], fx["signal"]["lucy"][:, j])[0] for j in range(y.shape[1])]
    assert np.mean(r) > 0.5


def test_lucy_onset_fix_without_events(fx, tmp_path):
    root = _clone(fx, tmp_path)
    for p in root.glob("sub-*/func/*task-lucy*_events.tsv"):
        p.unlink()
    ds = NarrativesDataset(root)
    assert ds.timings["lucy"].onset == 2 and any("lucy" in n and "1.1.3" in n for n in ds.notes)


def test_words_phones_audio(ds, fx):
    w, p = ds.words("pieman"), ds.phones("pieman")
    raw = json.loads((fx["root"] / "stimuli/gentle/pieman/align.json").read_text())["words"]
    timed = [x for x in raw if x["case"] == "success" and x["start"] - ds.timings["pieman"].crop >= 0]
    assert len(w) == len(timed) and "uh" not in w.labels
    assert np.allclose(w.onsets, [x["start"] - 16.5 for x in timed])
    assert p.labels and all(lab.isupper() and "_" not in lab for lab in p.labels)
    audio = ds.audio("pieman")
    assert audio.dtype == np.float32 and abs(len(audio) / 16000 - (110 + 4) * 1.5 + 16.5) < 0.01


def test_surface_space_and_rois(ds, fx):
    space = ds.surface_space("sub-001")
    assert space.mesh == "fsaverage5" and space.n_per_hemi == 10242
    assert np.array_equal(space.vertices, fx["vertices"])
    rois = ds.rois("sub-001")
    assert rois["cortex"].all() and rois["AC"].sum() > 10 and set(rois) >= {"AC", "Broca", "cortex"}
    assert np.isnan(space.to_mesh(np.zeros(len(fx["vertices"])))).sum() == 20484 - len(fx["vertices"])


def test_skipped_for(ds):
    recs = {r["story"]: r for r in ds.skipped_for("sub-005")}
    assert recs["lucy"]["kind"] == "response-missing" and "sub-005_task-lucy" in recs["lucy"]["file"]
    assert recs["milkywaysynonyms"]["kind"] == "excluded"
    assert ds.subject_stories("sub-005") == ["pieman"] and ds.skipped_for("sub-001") == []
    # sub-002's milkyway condition comes from its scans.tsv (participants.tsv says n/a)
    assert "milkywaysynonyms" in ds.subject_stories("sub-002")


# -- encode ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("subject,kind,n", [("sub-003", "isc", 4), ("sub-001", "repeats", 2)])
def test_encode_recovers_planted(fx, ds, capsys, tmp_path, subject, kind, n):
    out = tmp_path / "enc"
    code, _, _ = _run(capsys, "encode", "--data", f"narratives:{fx['root']}", "--subject", subject,
                      "--features", "lowlevel:powspec", "--out", str(out))
    assert code == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["ceiling"]["kind"] == kind and s["ceiling"]["n"] == n
    (layer,) = s["layers"]
    r, cc = np.load(out / f"r_{layer}.npy"), np.load(out / "cc_max.npy")
    planted = np.isin(ds.vertices(subject), fx["acoustic"])
    assert roc_auc_score(planted, np.nan_to_num(r)) > 0.9
    # the true ceiling of the planted vertices: 1/sqrt(1 + (1/rho - 1)/n_repeats)
    true = 1.0 / np.sqrt(1.0 + (1.0 / fx["rho"] - 1.0) / (n if kind == "repeats" else 1))
    assert abs(np.nanmean(cc[planted]) - true) < 0.05
    ccn = np.load(out / f"cc_norm_{layer}.npy")
    assert np.allclose(ccn[planted], r[planted] / cc[planted], equal_nan=True, atol=1e-5)
    from core.pipelines.encode import subject_ceiling
    assert np.allclose(subject_ceiling(ds, subject), cc, equal_nan=True)


# -- ISC ceiling on simulated data -----------------------------------------------------------------
def _simulate(rng, n_sub=12, n_trs=400, rho=None):
    rho = np.linspace(0.05, 0.8, 16) if rho is None else rho
    s = rng.standard_normal((n_trs, len(rho)))
    y = np.sqrt(rho) * s + np.sqrt(1 - rho) * rng.standard_normal((n_sub, n_trs, len(rho)))
    return 3.0 * y + 10.0, rho


def test_isc_matches_plain_loop():
    y, _ = _simulate(np.random.default_rng(1), n_sub=5, n_trs=80)
    y[2, :, 3] = np.nan  # one subject lacks a voxel: the others' mean uses the rest
    got = isc(y)
    for s in range(5):
        for v in range(y.shape[2]):
            others = [o for o in range(5) if o != s and np.isfinite(y[o, :, v]).all()]
            if not np.isfinite(y[s, :, v]).all():
                assert np.isnan(got[s, v])
                continue
            z = [(y[o, :, v] - y[o, :, v].mean()) / y[o, :, v].std() for o in others]
            assert got[s, v] == pytest.approx(pearsonr(y[s, :, v], np.mean(z, axis=0))[0], abs=1e-10)


def test_isc_ceiling_close_to_truth():
    y, rho = _simulate(np.random.default_rng(2), n_sub=15, n_trs=2000)
    cc = isc_ceiling(y)
    assert cc.shape == (15, len(rho))
    assert np.allclose(fisher_mean(cc, axis=0), np.sqrt(rho), atol=0.03)
    # closed form: expected LOO ISC for k others → back to rho exactly
    for k in (1, 4, 30):
        r = rho / np.sqrt(rho + (1 - rho) / k)
        assert np.allclose(isc_to_signal_power(r, k), rho)
    assert np.allclose(isc_to_signal_power(0.3, 1e9), 0.09) and np.isnan(isc_to_signal_power(-0.1, 5))
    # with repeats: the ISC ceiling of an n-run mean agrees with Schoppe's on those runs
    assert np.allclose(ceiling_from_signal_power(rho, 2), 1 / np.sqrt(1 + (1 / rho - 1) / 2))
    runs, _ = _simulate(np.random.default_rng(3), n_sub=2, n_trs=4000, rho=rho)  # two runs of one subject
    assert np.allclose(noise_ceiling(runs), ceiling_from_signal_power(rho, 2), atol=0.05)


# -- bad inputs ------------------------------------------------------------------------------------
def _one_line_error(capsys, root, what):
    code, out, err = _run(capsys, "datasets", "describe", "--data", f"narratives:{root}")
    lines = [x for x in err.strip().splitlines() if not x.startswith("warning:")]
    assert code != 0 and len(lines) == 1 and what in lines[0], err
    return lines[0]


def test_missing_event_meta(fx, tmp_path, capsys):
    root = _clone(fx, tmp_path)
    (root / "code" / "event_meta.json").unlink()
    _one_line_error(capsys, root, "event_meta.json")


def test_align_without_aligned_words(fx, tmp_path, capsys):
    root = _clone(fx, tmp_path)
    p = root / "stimuli" / "gentle" / "lucy" / "align.json"
    words = [{"word": "hello", "case": "not-found-in-audio", "alignedWord": "<unk>"}]
    _replace(p, json.dumps({"transcript": "hello", "words": words}))
    line = _one_line_error(capsys, root, "align.json")
    assert "no aligned word" in line and "lucy" in line


def test_gifti_with_wrong_vertex_count(fx, tmp_path, capsys):
    from tests.narratives_fixture import _gifti

    root = _clone(fx, tmp_path)
    p = next(root.glob("derivatives/afni-nosmooth/sub-001/func/sub-001_task-lucy_*hemi-L*.gii"))
    p.unlink()
    _gifti(p, np.zeros((5000, 3), dtype=np.float32))
    line = _one_line_error(capsys, root, p.name)
    assert "5000" in line and "40962" in line
    out = tmp_path / "enc"
    code, _, _ = _run(capsys, "encode", "--data", f"narratives:{root}", "--subject", "sub-001",
                      "--features", "lowlevel:powspec", "--out", str(out))
    assert code != 0 and not out.exists()  # nothing half-written


def test_listed_scan_without_files_warns(fx, caplog):
    with caplog.at_level(logging.WARNING, logger="core"):
        ds = NarrativesDataset(fx["root"])
    assert any("sub-005_task-lucy" in r.getMessage() for r in caplog.records)
    assert any("sub-004_task-lucy" in r.getMessage() and "trigger" in r.getMessage() for r in caplog.records)
    assert "lucy" in ds.subject_skipped("sub-005")


def test_not_a_root(tmp_path):
    with pytest.raises(DataError, match="participants.tsv"):
        load_dataset(f"narratives:{tmp_path}")


def test_partial_download_records(fx, tmp_path):
    root = _clone(fx, tmp_path)
    (root / "stimuli" / "gentle" / "milkywaysynonyms" / "align.json").unlink()  # story incomplete
    shutil.copy(root / "stimuli" / "lucy_audio.wav", root / "stimuli" / "tunnel_audio.wav")
    shutil.copytree(root / "stimuli" / "gentle" / "lucy", root / "stimuli" / "gentle" / "tunnel")
    meta = json.loads((root / "code" / "event_meta.json").read_text())
    meta["tunnel"] = {"tunnel": {"onset": 2, "duration": 60}}  # complete story, nobody scanned
    _replace(root / "code" / "event_meta.json", json.dumps(meta))
    ds = NarrativesDataset(root)
    assert ds.stories == ["lucy", "pieman"] and set(ds.skipped) == {"milkywaysynonyms", "tunnel"}
    recs = {r["story"]: r for r in ds.skipped_for("sub-001")}
    assert recs["milkywaysynonyms"]["kind"] == "story-incomplete"
    assert "align.json" in recs["milkywaysynonyms"]["reason"]
    assert recs["tunnel"]["kind"] == "not-recorded"


def _shift_align(root, story, seconds):
    p = root / "stimuli" / "gentle" / story / "align.json"
    raw = json.loads(p.read_text())
    for w in raw["words"]:
        if "start" in w:
            w["start"], w["end"] = w["start"] + seconds, w["end"] + seconds
    _replace(p, json.dumps(raw))


def test_audio_alignment_reconciled_with_warning(fx, tmp_path, caplog):
    root = _clone(fx, tmp_path)
    _shift_align(root, "pieman", -15.0)  # as if the WAV began at the story onset, not the music
    with caplog.at_level(logging.WARNING, logger="core"):
        ds = NarrativesDataset(root)
    assert ds.timings["pieman"].audio_offset == 15.0 and ds.timings["pieman"].source == "story onset"
    assert any("pieman" in r.getMessage() and "WAV time 0" in r.getMessage() for r in caplog.records)


def test_audio_alignment_unreconcilable(fx, tmp_path):
    root = _clone(fx, tmp_path)
    _shift_align(root, "lucy", 60.0)
    with pytest.raises(DataError, match=r"lucy/align.json.*first aligned word") as err:
        NarrativesDataset(root)
    assert "\n" not in str(err.value)
