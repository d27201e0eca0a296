"""Group encoding (``encode --subject all|S1,S2``): joblib fan-out equal to the serial run (loky,
threading, a dask LocalCluster), group summaries equal to a plain recomputation, bad input."""

import json
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy.stats import wilcoxon

from core.cli import main
from core.data import load_dataset
from core.data.base import SurfaceSpace
from core.data.layout import responses_dir, stimuli_dir, write_responses, write_wav
from core.encoding import EncodingResult
from core.errors import ConfigError, DataError
from core.features import source_for
from core.pipelines import encode as encode_mod
from core.pipelines.group import encode_group, fit_subjects, mean_maps
from tests.ds_fixture import make_ds003020_fixture

FEATURES = "lowlevel:powspec"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """The ds003020 fixture plus a third participant UTS03 (UTS01's responses + independent noise)."""
    root = tmp_path_factory.mktemp("ds-group")
    make_ds003020_fixture(root, n_stories=5, seed=1)
    rng = np.random.default_rng(3)
    for f in sorted(responses_dir(root, "UTS01").glob("*.hf5")):
        with h5py.File(f, "r") as h:
            data = h["data"][()]
            reps = h["individual_repeats"][()] if "individual_repeats" in h else None
        noisy = [None if a is None else a + 0.5 * rng.standard_normal(a.shape) for a in (data, reps)]
        write_responses(responses_dir(root, "UTS03") / f.name, *noisy)
    return root


@pytest.fixture(scope="module")
def ds(root):
    return load_dataset(f"ds003020:{root}")


@pytest.fixture(scope="module")
def serial(ds, tmp_path_factory):
    """The serial reference run (n_jobs=1): (out folder, group.json)."""
    out = tmp_path_factory.mktemp("serial") / "group"
    summary = encode_group(ds, "all", source_for(FEATURES, ds.spec), None, out, n_jobs=1)
    return out, summary


def _same_results(a: Path, b: Path, subjects) -> None:
    """Every array of every subject folder bitwise equal; summaries equal but for the run time."""
    for s in subjects:
        files = sorted(p.name for p in (a / s).iterdir())
        assert files == sorted(p.name for p in (b / s).iterdir())
        for name in files:
            if name.endswith(".npy"):
                x, y = np.load(a / s / name), np.load(b / s / name)
                assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=True), (s, name)
        sa, sb = (json.loads((d / s / "summary.json").read_text()) for d in (a, b))
        sa["provenance"].pop("seconds"), sb["provenance"].pop("seconds")
        assert json.dumps(sa, sort_keys=True) == json.dumps(sb, sort_keys=True), s


def test_serial_layout_is_the_encode_contract(ds, serial, tmp_path):
    out, summary = serial
    assert summary["subjects"] == ["UTS01", "UTS02", "UTS03"] == ds.subjects
    assert sorted(p.name for p in out.iterdir()) == ["UTS01", "UTS02", "UTS03", "group.json"]
    single = tmp_path / "single"
    encode_mod.encode(ds, "UTS02", source_for(FEATURES, ds.spec), None, single)
    for name in (p.name for p in single.iterdir() if p.suffix == ".npy"):
        assert np.array_equal(np.load(single / name), np.load(out / "UTS02" / name), equal_nan=True)


def test_loky_two_jobs_equal_serial(ds, serial, tmp_path):
    out = tmp_path / "par"
    summary = encode_group(ds, "all", source_for(FEATURES, ds.spec), None, out, n_jobs=2, backend="loky")
    assert summary["execution"]["n_jobs"] == 2 and summary["execution"]["inner_threads"] == 1
    _same_results(serial[0], out, ds.subjects)
    assert summary["regions"] == serial[1]["regions"] and summary["participants"] == serial[1]["participants"]


class TwoSpaces:
    """A two-layer feature source (layers = two low-level spaces): cheap, for per-layer tasks."""

    spec = "test:two-spaces"

    def __init__(self):
        self.parts = {n: source_for(f"lowlevel:{n}", "") for n in ("powspec", "wordrate")}

    def layers(self):
        return list(self.parts)

    def fingerprint(self):
        return "two:" + ",".join(p.fingerprint() for p in self.parts.values())

    def compute(self, dataset, story, layers=(), progress=None):
        return {n: self.parts[n].compute(dataset, story, [n])[n] for n in (layers or self.parts)}


def test_layer_tasks_on_threads_equal_one_fit(ds, tmp_path):
    """granularity=layer (one task per subject × layer, threading backend) merges into exactly the
    result of one fit of all layers."""
    source = TwoSpaces()
    layers = ["powspec", "wordrate"]
    merged, ex = fit_subjects(ds, ["UTS01"], source, layers, n_jobs=2, backend="threading", granularity="auto")
    assert ex["granularity"] == "layer" and ex["n_tasks"] == 2
    whole = encode_mod.encode_subject(ds, "UTS01", source, layers)
    got = merged["UTS01"]
    assert list(got.layers) == layers and np.array_equal(got.cc_max, whole.cc_max, equal_nan=True)
    for layer in layers:
        for field in ("r", "cc_norm", "alpha"):
            assert np.array_equal(getattr(got.layers[layer], field), getattr(whole.layers[layer], field),
                                  equal_nan=True)
    assert got.summary["layers"] == whole.summary["layers"]


def test_dask_local_cluster_equals_serial(ds, serial, tmp_path):
    from distributed import LocalCluster

    out = tmp_path / "dask"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        summary = encode_group(ds, "all", source_for(FEATURES, ds.spec), None, out, backend="dask",
                               scheduler=cluster.scheduler_address)
    assert summary["execution"]["backend"] == "dask" and summary["execution"]["n_jobs"] == -1
    _same_results(serial[0], out, ds.subjects)


@pytest.mark.slow
def test_dask_process_workers_equal_serial(ds, serial, tmp_path):
    """Worker processes (the dataset and source pickled to them, features read from the shared cache)."""
    from distributed import LocalCluster

    out = tmp_path / "dask-proc"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        encode_group(ds, "all", source_for(FEATURES, ds.spec), None, out, backend="dask",
                     scheduler=cluster.scheduler_address)
    _same_results(serial[0], out, ds.subjects)


def test_unreachable_scheduler_one_line_nothing_written(root, tmp_path, capsys):
    out = tmp_path / "never"
    t0 = time.time()
    code = main(["-q", "encode", "--data", f"ds003020:{root}", "--subject", "all", "--features", FEATURES,
                 "--out", str(out), "--backend", "dask", "--scheduler", "tcp://127.0.0.1:1"])
    err = capsys.readouterr().err
    assert code == 2 and time.time() - t0 < 120  # fails fast, does not hang on the address
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "tcp://127.0.0.1:1" in lines[0] and "does not answer" in lines[0]
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("argv, needle", [
    (["--subject", "UTS01,UTS09"], "UTS09"),
    (["--subject", "UTS01", "--n-jobs", "2"], "--subject all"),
    (["--subject", "all", "--scheduler", "tcp://127.0.0.1:1"], "--backend dask"),
    (["--subject", "all", "--backend", "dask"], "--scheduler"),
    (["--subject", "all", "--backend", "dask", "--scheduler", "not an address"], "not an address"),
    (["--subject", "all", "--n-jobs", "0"], "--n-jobs 0"),
])
def test_bad_input_is_one_line(root, tmp_path, capsys, argv, needle):
    out = tmp_path / "o"
    code = main(["-q", "encode", "--data", f"ds003020:{root}", "--features", FEATURES, "--out", str(out), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error:") and needle in err[-1], err
    assert not out.exists()


def test_failed_fit_leaves_earlier_result_untouched(ds, serial, tmp_path, monkeypatch):
    out = tmp_path / "g"
    encode_group(ds, "UTS01,UTS03", source_for(FEATURES, ds.spec), None, out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    real = encode_mod.encode_subject

    def failing(dataset, subject, *a, **k):
        if subject == "UTS03":
            raise DataError("UTS03 broke")
        return real(dataset, subject, *a, **k)

    monkeypatch.setattr(encode_mod, "encode_subject", failing)
    with pytest.raises(DataError, match="UTS03 broke"):
        encode_group(ds, "UTS01,UTS03", source_for(FEATURES, ds.spec), None, out, n_jobs=2, backend="threading")
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g"]  # no temp folder left
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="not a group result"):
        encode_group(ds, "all", source_for(FEATURES, ds.spec), None, tmp_path / "mine")


def test_group_json_equals_plain_recomputation(serial):
    out, _ = serial
    g = json.loads((out / "group.json").read_text())
    (layer,) = g["layers"]
    means = {}
    for s in g["subjects"]:
        res = EncodingResult.load(out / s)
        ccn, r = (np.asarray(getattr(res.layers[layer], k), dtype=np.float64) for k in ("cc_norm", "r"))
        means[s] = float(np.nanmean(ccn))  # the fixture's only ROI is "cortex" (every voxel)
        row = g["participants"][s]["layers"][layer]
        assert row["mean_cc_norm"] == pytest.approx(means[s], rel=1e-12, abs=0)
        assert row["mean_r"] == pytest.approx(float(np.nanmean(r)), rel=1e-12, abs=0)
        assert row["roi"]["cortex"] == pytest.approx(means[s], rel=1e-12, abs=0)
    test = g["regions"][layer]["cortex"]
    ref = wilcoxon(np.array([means[s] for s in g["subjects"]]))
    assert test["n_subjects"] == 3 and test["min_possible_p"] == 2 / 2 ** 3
    assert test["wilcoxon_p"] == pytest.approx(ref.pvalue, rel=1e-12) and test["wilcoxon_stat"] == ref.statistic
    assert test["mean"] == pytest.approx(np.mean(list(means.values())), rel=1e-12)
    assert test["n_positive"] == sum(v > 0 for v in means.values())
    assert g["mean_maps"] is None and "no common surface space" in g["mean_maps_note"]
    assert "against 0" in g["test"] and "two-sided" in g["test"]


def test_group_summary_command_matches(serial, tmp_path, capsys):
    out, summary = serial
    dirs = [str(out / s) for s in summary["subjects"]]
    assert main(["-q", "group-summary", *dirs, "--out", str(tmp_path / "gs")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["regions"] == summary["regions"] and printed["participants"] == summary["participants"]


def _space(vertices, n_per_hemi=4):
    return SurfaceSpace(mesh="toy", vertices=np.asarray(vertices, dtype=np.int64), n_per_hemi=n_per_hemi)


def test_mean_map_is_nan_aware_with_counts():
    class R:  # the two fields mean_maps reads
        def __init__(self, ccn):
            self.layers = {"L": type("S", (), {"cc_norm": np.asarray(ccn, dtype=np.float32)})()}

    results = {"A": R([0.2, np.nan, 0.6]), "B": R([0.4, 0.8])}
    spaces = {"A": _space([0, 1, 5]), "B": _space([0, 5])}
    arrays, info, _ = mean_maps(results, spaces, ["L"])
    mean, count = arrays["mean_cc_norm_L.npy"], arrays["count_cc_norm_L.npy"]
    assert info == {"mesh": "toy", "n_vertices": 8, "files": {"L": ["mean_cc_norm_L.npy", "count_cc_norm_L.npy"]}}
    assert count.tolist() == [2, 0, 0, 0, 0, 2, 0, 0]
    np.testing.assert_allclose(mean[[0, 5]], [0.3, 0.7], rtol=1e-6)
    assert np.isnan(np.delete(mean, [0, 5])).all()
    assert mean_maps(results, {"A": spaces["A"], "B": None}, ["L"])[1] is None


def test_group_mean_map_written_for_a_surface_dataset(ds, serial, tmp_path, monkeypatch):
    n = {s: ds.n_voxels(s) for s in ds.subjects}
    monkeypatch.setattr(type(ds), "surface_space", lambda self, s: _space(np.arange(n[s]), n_per_hemi=200))
    out = tmp_path / "surf"
    g = encode_group(ds, "all", source_for(FEATURES, ds.spec), None, out)
    layer = g["layers"][0]
    mean = np.load(out / f"mean_cc_norm_{layer}.npy")
    stack = np.full((3, 400), np.nan)
    for i, s in enumerate(ds.subjects):
        ccn = np.load(serial[0] / s / f"cc_norm_{layer}.npy")
        stack[i, :len(ccn)] = ccn
    with warnings.catch_warnings():  # all-NaN vertices: NaN, as in the group map
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = np.nanmean(stack, axis=0)
    np.testing.assert_allclose(mean, ref.astype(np.float32), rtol=1e-6, equal_nan=True)
    assert np.array_equal(np.load(out / f"count_cc_norm_{layer}.npy"), np.isfinite(stack).sum(0))


@pytest.mark.slow
def test_surface_group_parallel_equals_serial_with_mean_map(tmp_path):
    """A small simulated group on fsaverage5 (tests/test_demo_group.py's stand-in demo; participants
    with one repeat get the intersubject ceiling): loky n_jobs=2 equals serial, and the mean and
    count maps equal a loop over the participants' ``to_mesh`` maps."""
    from core.data.demo_group.build import build_group
    from core.data.demo_group.dataset import DemoGroupDataset
    from tests.test_demo_group import CONFIG, FakeDemo

    fake, rng = FakeDemo(tmp_path / "fake"), np.random.default_rng(0)
    for story in fake.stories:  # noise audio (the stand-in's is silent): non-constant powspec features
        n = int((2.0 * fake.n_trs_run(story) - 20.0) * 16000)
        write_wav(stimuli_dir(fake.root) / f"{story}.wav", 0.3 * rng.uniform(-1, 1, n), 16000)
    build_group(tmp_path / "g", CONFIG, demo=fake)
    group = DemoGroupDataset(tmp_path / "g")
    source = source_for(FEATURES, group.spec)
    serial = encode_group(group, "all", source, None, tmp_path / "s", n_jobs=1)
    encode_group(group, "all", source, None, tmp_path / "p", n_jobs=2)
    _same_results(tmp_path / "s", tmp_path / "p", group.subjects)
    layer = serial["layers"][0]
    maps = np.stack([group.surface_space(s).to_mesh(np.load(tmp_path / "s" / s / f"cc_norm_{layer}.npy"))
                     for s in group.subjects])
    assert serial["mean_maps"]["mesh"] == "fsaverage5" and maps.shape[1] == serial["mean_maps"]["n_vertices"]
    count = np.load(tmp_path / "p" / f"count_cc_norm_{layer}.npy")
    assert np.array_equal(count, np.isfinite(maps).sum(0)) and count.max() == len(group.subjects)
    with warnings.catch_warnings():  # all-NaN vertices: NaN, as in the group map
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = np.nanmean(maps, axis=0)
    np.testing.assert_allclose(np.load(tmp_path / "p" / f"mean_cc_norm_{layer}.npy"), ref, rtol=1e-6, equal_nan=True)
