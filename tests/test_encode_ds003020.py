"""``describe`` and ``encode`` on a fixture in the published ds003020 layout recover planted effects."""

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from core.cli import main
from tests.ds_fixture import make_ds003020_fixture


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds003020")
    return make_ds003020_fixture(root, n_stories=6, seed=1)


def _run(capsys, *argv):
    code = main(["-q", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_describe(fixture, capsys):
    code, out, _ = _run(capsys, "datasets", "describe", "--data", f"ds003020:{fixture['root']}")
    assert code == 0
    d = json.loads(out)
    assert d["subjects"] == ["UTS01", "UTS02"]
    assert d["stories"] == fixture["stories"]
    assert d["test_story"] == "wheretheressmoke"
    assert d["n_trs"] == {s: r - 20 for s, r in fixture["respdict"].items()}
    assert d["n_voxels"] == {"UTS01": 300, "UTS02": 240}
    assert d["tr"] == 2.0 and d["n_repeats"] == {"UTS01": 4, "UTS02": 4}


@pytest.mark.parametrize("subject", ["UTS01", "UTS02"])
def test_encode_recovers_acoustic_voxels(fixture, capsys, tmp_path, subject):
    out = tmp_path / "enc"
    code, printed, _ = _run(capsys, "encode", "--data", f"ds003020:{fixture['root']}", "--subject", subject,
                            "--features", "lowlevel:powspec", "--out", str(out))
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert json.loads(printed)["layers"] == summary["layers"]
    assert summary["subject"] == subject and summary["features"] == "lowlevel:powspec"
    plant = fixture["planted"][subject]
    n_vox = fixture["subjects"][subject]["n_voxels"]
    assert summary["n_voxels"] == n_vox - 2  # the NaN and the constant voxel are dropped
    (layer,) = summary["layers"]
    r = np.load(out / f"r_{layer}.npy")
    assert r.shape == np.load(out / f"cc_norm_{layer}.npy").shape == np.load(out / "cc_max.npy").shape == (n_vox,)
    assert np.isnan(r[plant["nan"]]).all() and np.isnan(r[plant["constant"]]).all()
    labels = np.r_[np.ones(len(plant["acoustic"])), np.zeros(len(plant["noise"]))]
    assert roc_auc_score(labels, np.r_[r[plant["acoustic"]], r[plant["noise"]]]) > 0.9
    prov = summary["provenance"]
    assert prov["test_story"] == "wheretheressmoke" and "numpy" in prov["packages"]
    assert prov["params"]["n_boots"] == 3 and prov["params"]["chunk_len"] == 20
    cortex = summary["layers"][layer]["roi"]["cortex"]
    # n_voxels counts the voxels inside mean_cc_norm (finite cc_norm: ceiling >= 0.1), n_voxels_r those in mean_r
    ccn = np.load(out / f"cc_norm_{layer}.npy")
    assert cortex["n_voxels"] == int(np.isfinite(ccn).sum()) < n_vox - 2
    assert cortex["n_voxels_r"] == n_vox - 2
    assert cortex["mean_cc_norm"] == pytest.approx(float(np.nanmean(ccn.astype(np.float64))))


def test_encode_wordrate_voxels(fixture, capsys, tmp_path):
    out = tmp_path / "enc"
    code, _, _ = _run(capsys, "encode", "--data", f"ds003020:{fixture['root']}", "--subject", "UTS01",
                      "--features", "lowlevel:wordrate", "--out", str(out))
    assert code == 0
    plant = fixture["planted"]["UTS01"]
    r = np.load(out / "r_wordrate.npy")
    assert np.nanmean(r[plant["wordrate"]]) > np.nanmean(r[plant["noise"]]) + 0.3


@pytest.mark.parametrize("argv, needle", [
    (["--subject", "UTS09", "--features", "lowlevel:powspec"], "UTS09"),
    (["--subject", "UTS01", "--features", "lowlevel:nope"], "nope"),
    (["--subject", "UTS01"], "--features"),
])
def test_encode_bad_input(fixture, capsys, tmp_path, argv, needle):
    out = tmp_path / "enc"
    code, _, err = _run(capsys, "encode", "--data", f"ds003020:{fixture['root']}", *argv, "--out", str(out))
    assert code == 2
    assert err.startswith("error: ") and needle in err and err.count("\n") == 1
    assert not out.exists()  # nothing half-written


def test_describe_bad_path(capsys, tmp_path):
    code, _, err = _run(capsys, "datasets", "describe", "--data", f"ds003020:{tmp_path / 'missing'}")
    assert code == 2 and "missing" in err


def test_encode_refuses_to_replace_a_foreign_folder(fixture, capsys, tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    code, _, err = _run(capsys, "encode", "--data", f"ds003020:{fixture['root']}", "--subject", "UTS01",
                        "--features", "lowlevel:wordrate", "--out", str(out))
    assert code == 2 and "not an encode result" in err
    assert (out / "notes.txt").read_text() == "keep me"
    # a previous result folder is replaced in place
    assert _run(capsys, "encode", "--data", f"ds003020:{fixture['root']}", "--subject", "UTS01",
                "--features", "lowlevel:wordrate", "--out", str(tmp_path / "enc"))[0] == 0
    assert _run(capsys, "encode", "--data", f"ds003020:{fixture['root']}", "--subject", "UTS01",
                "--features", "lowlevel:wordrate", "--out", str(tmp_path / "enc"))[0] == 0
