"""``encode`` on a ds003020 fixture under both protocols; story choice, ROI groups and the cache
under concurrency (two processes) and content edits."""

import json
import multiprocessing as mp

import h5py
import numpy as np
import pytest

from core.cli import main
from core.data import load_dataset
from core.encoding import EncodeParams, EncodingResult, repeat_ceiling
from core.encoding.params import RELEASED_TRAIN_STORIES
from core.errors import ConfigError, DataError
from core.features import resolve_source
from core.pipelines.encode import cached_encode, choose_stories, encode_subject
from tests.ds_fixture import make_ds003020_fixture


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    # stories of 130-140 s: the released protocol scores the test story from response row 40
    root = tmp_path_factory.mktemp("ds003020_long")
    return make_ds003020_fixture(root, n_stories=6, seed=2, duration_range=(130.0, 140.0))


def _run(capsys, *argv):
    code = main(["-q", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_released_vs_project_on_fixture(fixture, capsys, tmp_path):
    data = f"ds003020:{fixture['root']}"
    out = {}
    for protocol in ("project", "released"):
        code, printed, err = _run(capsys, "encode", "--data", data, "--subject", "UTS01", "--features",
                                  "lowlevel:powspec", "--protocol", protocol, "--out", str(tmp_path / protocol))
        assert code == 0, err
        out[protocol] = EncodingResult.load(tmp_path / protocol)
        assert json.loads(printed)["protocol"] == protocol
    proj, rel = out["project"].provenance, out["released"].provenance
    assert proj["protocol"] == "project" and rel["protocol"] == "released"
    # the released list ∩ this dataset, in the released order; `life` is not in it
    assert rel["train_stories"] == ["adollshouse", "legacy", "souls", "stagefright"]
    assert rel["train_stories_source"] == "released list"
    assert sorted(proj["train_stories"]) == sorted(set(fixture["stories"]) - {"wheretheressmoke"})
    missing = {s["story"] for s in rel["skipped"]}
    assert missing == set(RELEASED_TRAIN_STORIES) - set(fixture["stories"])
    assert rel["params"]["selection"] == "r2" and rel["params"]["test_start"] == 40
    assert proj["params"]["selection"] == "corr" and proj["feature_mode"] is None
    # the released ceiling: repeats[:, 40:] as stored, Var ddof 1, undefined → 0 (not NaN)
    ds = load_dataset(data)
    valid = ds.voxel_report("UTS01").valid
    ref = repeat_ceiling(ds.repeats("UTS01"), EncodeParams.for_protocol("released"), valid)
    np.testing.assert_allclose(out["released"].cc_max, ref)
    assert np.all(np.isfinite(out["released"].cc_max[valid]))
    assert np.isnan(out["project"].cc_max[valid]).any() or not np.allclose(
        out["project"].cc_max[valid], out["released"].cc_max[valid])
    # both find the planted acoustic voxels
    plant = fixture["planted"]["UTS01"]
    for res in out.values():
        r = res.layers["powspec"].r
        assert np.nanmean(r[plant["acoustic"]]) > np.nanmean(r[plant["noise"]]) + 0.2
    assert "roi_groups" in out["released"].summary["layers"]["powspec"]


def test_train_stories_and_bad_inputs(fixture, capsys, tmp_path):
    data = f"ds003020:{fixture['root']}"
    lst = tmp_path / "train.txt"
    lst.write_text("souls\nlegacy\n")
    code, printed, err = _run(capsys, "encode", "--data", data, "--subject", "UTS01", "--features",
                              "lowlevel:wordrate", "--train-stories", f"@{lst}", "--out", str(tmp_path / "e"))
    assert code == 0, err
    assert json.loads(printed)["train_stories"] == ["souls", "legacy"]
    for stories, match in [("souls,nosuch", "not in"), ("wheretheressmoke,souls", "test story")]:
        code, _, err = _run(capsys, "encode", "--data", data, "--subject", "UTS01", "--features",
                            "lowlevel:wordrate", "--train-stories", stories, "--out", str(tmp_path / "f"))
        assert code == 2 and match in err and len(err.strip().splitlines()) == 1
    # UTS02 lacks the last story (partial download): asking for it is an error naming it
    last = fixture["subjects"]["UTS02"]["missing"]
    ds = load_dataset(data)
    with pytest.raises(DataError, match="no responses"):
        choose_stories(ds, "UTS02", EncodeParams(train_stories=tuple(last)))
    groups = tmp_path / "groups.json"
    groups.write_text(json.dumps({"everything": ["cortex"]}))
    code, _, err = _run(capsys, "encode", "--data", data, "--subject", "UTS01", "--features", "lowlevel:wordrate",
                        "--roi-groups", str(groups), "--out", str(tmp_path / "g"))
    assert code == 0, err
    summary = json.loads((tmp_path / "g" / "summary.json").read_text())
    (layer,) = summary["layers"]
    assert summary["layers"][layer]["roi_groups"]["everything"]["mean_cc_norm"] == \
        summary["layers"][layer]["roi"]["cortex"]["mean_cc_norm"]
    assert summary["provenance"]["roi_groups"] == {"everything": ["cortex"]}
    groups.write_text(json.dumps({"lang": ["nosuchroi"]}))
    code, _, err = _run(capsys, "encode", "--data", data, "--subject", "UTS01", "--features", "lowlevel:wordrate",
                        "--roi-groups", str(groups), "--out", str(tmp_path / "h"))
    assert code == 2 and "nosuchroi" in err
    with pytest.raises(ConfigError):
        EncodeParams.for_protocol("huthlab")


def _cached(args):
    root, cache = args
    import os

    os.environ["BTS_CACHE_DIR"] = cache
    from core.data import load_dataset as _load
    from core.features import resolve_source as _resolve
    from core.pipelines.encode import cached_encode as _cached_encode

    return str(_cached_encode(_load(f"ds003020:{root}"), "UTS01", _resolve("lowlevel:wordrate")))


def test_two_concurrent_cached_encodes_share_one_folder(fixture, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("BTS_CACHE_DIR", str(cache))
    with mp.get_context("spawn").Pool(2) as pool:
        a, b = pool.map(_cached, [(str(fixture["root"]), str(cache))] * 2)
    assert a == b
    folders = [p.name for p in (cache / "encodings").iterdir()]
    assert folders == [a.rsplit("/", 1)[1]]  # one folder, no temp leftovers
    assert EncodingResult.load(a).layer_names() == ["wordrate"]


def test_same_size_hf5_edit_invalidates_cached_encodings(tmp_path, monkeypatch):
    monkeypatch.setenv("BTS_CACHE_DIR", str(tmp_path / "cache"))
    fx = make_ds003020_fixture(tmp_path / "ds", n_stories=4, seed=5)
    src = resolve_source("lowlevel:wordrate")
    first = cached_encode(load_dataset(f"ds003020:{fx['root']}"), "UTS01", src)
    path = fx["root"] / "derivative" / "preprocessed_data" / "UTS01" / "souls.hf5"
    if not path.exists():
        path = sorted(path.parent.glob("*.hf5"))[-1]
    size, mtime = path.stat().st_size, path.stat().st_mtime_ns
    with h5py.File(path, "r+") as h:
        h["data"][0, 0] = h["data"][0, 0] + 1.0
    import os

    os.utime(path, ns=(mtime, mtime))  # even with the old mtime restored
    assert path.stat().st_size == size
    second = cached_encode(load_dataset(f"ds003020:{fx['root']}"), "UTS01", src)
    assert second != first and (second / "summary.json").exists()


def test_encode_subject_returns_a_typed_result(fixture):
    ds = load_dataset(f"ds003020:{fixture['root']}")
    res = encode_subject(ds, "UTS01", resolve_source("lowlevel:wordrate"),
                         params=EncodeParams.for_protocol("released"))
    assert isinstance(res, EncodingResult) and res.layer_names() == ["wordrate"]
    assert res.provenance["dataset_fingerprint"] == ds.fingerprint()
    assert res.summary["n_voxels"] == int(ds.voxel_report("UTS01").valid.sum())


def test_skipped_story_is_warned_and_recorded(fixture, capsys, tmp_path):
    # UTS02 has no responses for the last story (a partial download): a warning naming the story and
    # its file on stderr, and a `skipped` entry in provenance — never silent
    missing = fixture["subjects"]["UTS02"]["missing"]
    code, printed, err = _run(capsys, "encode", "--data", f"ds003020:{fixture['root']}", "--subject", "UTS02",
                              "--features", "lowlevel:wordrate", "--out", str(tmp_path / "e"))
    assert code == 0, err
    for story in missing:
        line = [x for x in err.splitlines() if f"skipped story {story}" in x]
        assert line and line[0].startswith("warning: UTS02") and f"UTS02/{story}.hf5" in line[0]
    prov = json.loads((tmp_path / "e" / "summary.json").read_text())["provenance"]
    assert {s["story"] for s in prov["skipped"]} == set(missing)
    assert json.loads(printed)["skipped"] == prov["skipped"]
    assert not set(missing) & set(prov["train_stories"])


def test_nonfinite_repeats_do_not_stop_encode_or_the_data_page(tmp_path, monkeypatch, capsys):
    from core import studio

    monkeypatch.setenv("BTS_CACHE_DIR", str(tmp_path / "cache"))
    fx = make_ds003020_fixture(tmp_path / "ds", n_stories=4, seed=3, real_defects=True)
    data = f"ds003020:{fx['root']}"
    code, _, err = _run(capsys, "encode", "--data", data, "--subject", "UTS01", "--features", "lowlevel:wordrate",
                        "--out", str(tmp_path / "e"))
    assert code == 0, err
    cc = np.load(tmp_path / "e" / "cc_max.npy")
    plant = fx["planted"]["UTS01"]
    ds = load_dataset(data)
    bad = ds.voxel_report("UTS01")
    assert len(bad.nonfinite_repeats) >= 2 and np.isnan(cc[bad.nonfinite_repeats]).all()
    np.testing.assert_array_equal(studio.noise_ceiling(ds, "UTS01"), cc)  # the Data page's one ceiling path
    assert np.isfinite(cc[plant["acoustic"]]).mean() > 0.9
