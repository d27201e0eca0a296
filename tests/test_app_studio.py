"""The Brain-tuning, Compare and Analyses pages through ``AppTest`` on a small ds003020 fixture: default
states, a real background tuning job launched from the form, a failed run, a run of another subject,
evaluation → Compare, analyses launched and read back, and the app's path / upload safety."""

import io
import json
import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.errors import ConfigError
from tests.ds_fixture import make_ds003020_fixture

APP = str(Path(__file__).resolve().parent.parent / "app.py")
TIMEOUT = 90


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("studio-ds") / "ds003020"
    make_ds003020_fixture(root, n_stories=5, duration_range=(56.0, 60.0))
    return root


def app(root, page, source="lowlevel:powspec", subject=None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["data_choice"] = "folder"
    at.session_state["data_path"] = str(root)
    at.session_state["source"] = source
    if subject:
        at.session_state["subject"] = subject
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def _launch(at, model="random:whisper-tiny", preset="demo", epochs=1, targets="ceiling>0.4"):
    at.selectbox(key="tune_model").select(model)
    at.radio(key="tune_preset").set_value(preset)
    at.number_input(key="tune_epochs").set_value(epochs)
    at.text_input(key="tune_targets").input(targets)
    at.button[0].click()  # the form's submit button
    return at.run()


@pytest.fixture(scope="module")
def finished_run(root):
    """A 1-epoch demo-preset run (ceiling targets: the fixture has no semantic ROIs) of a tiny random
    Whisper launched from the page, run to the end."""
    from core.jobs import wait_job

    at = app(root, "pages/tuning.py")
    assert "No tuning run yet" in texts(at.info)
    at = _launch(at)
    assert not at.exception
    from core.settings import get_settings

    run = get_settings().runs_root / at.session_state["tune_selected"]
    status = wait_job(run, timeout=600)
    assert status["state"] == "done", (run / "log.txt").read_text()[-3000:]
    return run


def test_tuning_page_runs_a_job_and_shows_its_curves_and_export(root, finished_run):
    from core.studio import runs

    at = app(root, "pages/tuning.py")
    table = at.dataframe[0].value
    assert finished_run.name in list(table["run"]) and table.loc[table["run"] == finished_run.name, "state"].item() == "done"
    assert any("finished" in s for s in (str(x.value) for x in at.success))
    steps, epochs = runs.loss_curves(finished_run)
    assert len(steps) >= 1 and set(epochs["split"]) == {"train", "validation"}
    assert len(at.get("vega_lite_chart")) + len(at.get("arrow_vega_lite_chart")) >= 1 or at.get("altair_chart")
    card = runs.model_card(finished_run)
    assert card.startswith("---") and "UTS01" in card
    assert any("Download the model folder" in b.label for b in at.get("download_button"))
    names = zipfile.ZipFile(io.BytesIO(runs.export_zip(finished_run))).namelist()
    assert "README.md" in names and "config.json" in names
    assert "python -m core tune --data" in texts(at.code)
    assert f"ckpt:{finished_run / 'tune'}" in [o["spec"] for o in __import__("core.studio", fromlist=["x"]).source_catalog()]


def test_evaluation_then_compare(root, finished_run):
    from core.jobs import cancel_job
    from core.pipelines.evaluate import evaluate_run
    from core.studio import runs

    at = app(root, "pages/tuning.py")
    at.button(key="launch-eval-" + finished_run.name).click().run()  # starts the evaluation job
    job = runs.evaluation_job(finished_run)
    assert job is not None and job["kind"] == "evaluate"
    cancel_job(Path(job["run_dir"]))  # the engine computes it below, in fast mode (quicker)
    summary = evaluate_run(runs.tune_dir(finished_run), mode="fast")
    at = app(root, "pages/tuning.py")
    table = at.dataframe[1].value
    cortex = table.set_index("region").loc["cortex"]
    assert cortex["Δ"] == pytest.approx(summary["layers"]["best"]["regions"]["cortex"]["mean_delta"])
    gains = runs.gain_table([runs.run_info(finished_run)], regions=("cortex", "no-such-region"))
    assert list(gains["roi"]) == ["cortex"]
    assert gains["value"].item() == pytest.approx(summary["layers"]["best"]["regions"]["cortex"]["mean_delta"])
    at.button(key="tune_open_compare").click().run()
    assert not at.exception
    at.switch_page("pages/compare.py").run()
    assert not at.exception, at.exception
    assert at.multiselect(key="compare_dirs").value == [summary["pretrained_result"], summary["tuned_result"]]
    cmp = at.dataframe[0].value.set_index("region")
    best = summary["layers"]["best"]["regions"]["cortex"]
    assert cmp.loc["cortex", "mean Δ"] == pytest.approx(best["mean_delta"])
    assert cmp.loc["cortex", "Wilcoxon p"] == pytest.approx(best["wilcoxon_p"])
    assert "No cortex mapping" in texts(at.info)
    assert "python -m core compare" in texts(at.code)


def test_a_failed_run_shows_its_error_and_can_be_resumed_or_deleted(root):
    from core.jobs import wait_job
    from core.settings import get_settings

    at = app(root, "pages/tuning.py")
    at = _launch(at, epochs=1, targets="")  # demo targets roi:semantic: the fixture has no such ROIs
    run = get_settings().runs_root / at.session_state["tune_selected"]
    assert wait_job(run, timeout=300)["state"] == "failed"
    at = app(root, "pages/tuning.py")
    at.selectbox(key="tune_selected").select(run.name).run()
    assert "semantic" in texts(at.error)
    assert any(b.label == "Resume run" for b in at.button)
    at.button(key="tune_delete").click().run()
    assert "cannot be undone" in texts(at.warning)
    at.button(key="tune_delete_no").click().run()
    assert run.exists()
    at.button(key="tune_delete").click().run()
    at.button(key="tune_delete_yes").click().run()
    assert not run.exists() and not at.exception


def test_a_run_of_another_subject_is_flagged(root, finished_run):
    at = app(root, "pages/tuning.py", subject="UTS02")
    at.selectbox(key="tune_selected").select(finished_run.name).run()
    assert "tuned on subject **UTS01**" in texts(at.warning)


def test_compare_needs_two_results(tmp_path):
    other = tmp_path / "ds"
    make_ds003020_fixture(other, n_voxels=30)
    at = app(other, "pages/compare.py")
    assert "at least two encoding results" in texts(at.info)


def test_analyses_page_launches_and_reads_a_partition(root):
    from core.jobs import wait_job
    from core.studio import analyses

    at = app(root, "pages/analyses.py")
    assert any(b.label.startswith("Compute the variance partitioning") for b in at.button)
    params = analyses.params_for("partition", f"ds003020:{root}", "UTS01", "lowlevel:powspec",
                                 spaces=["semantic:minilm", "lowlevel:powspec"])
    run = analyses.launch("partition", params)
    assert wait_job(run, timeout=300)["state"] == "done", (run / "log.txt").read_text()[-2000:]
    at = app(root, "pages/analyses.py")
    table = at.dataframe[0].value.set_index("region")
    summary = json.loads((analyses.result("partition", params) / "summary.json").read_text())
    assert table.loc["cortex", "preference"] == pytest.approx(summary["roi"]["cortex"]["preference"])
    assert "python -m core partition" in texts(at.code)
    # bad choices: the same space twice, a probe folder outside the allowed roots
    at.selectbox(key="part_b").select("semantic:minilm").run()
    assert "two different feature spaces" in texts(at.error)


def test_typed_paths_are_confined_to_the_allowed_roots(tmp_path, monkeypatch):
    from core import studio

    monkeypatch.setenv("BTS_ALLOWED_ROOTS", str(tmp_path))
    assert studio.allowed_path(str(tmp_path / "x")) == (tmp_path / "x").resolve()
    with pytest.raises(ConfigError, match="outside the folders this app may open"):
        studio.allowed_path("/etc")
    (tmp_path / "link").symlink_to("/etc")
    with pytest.raises(ConfigError, match="outside"):
        studio.allowed_path(str(tmp_path / "link"))
    with pytest.raises(ConfigError, match="outside"):
        studio.data_spec("folder", f"{tmp_path}/../../etc")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["data_choice"] = "folder"
    at.session_state["data_path"] = "/etc"
    at.run()
    assert not at.exception and "outside the folders" in texts(at.sidebar.warning)


def _zip(members: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_probe_uploads_are_checked_and_unpacked_safely():
    from core.studio.uploads import unpack_probe_zip

    good = _zip({"task/labels.csv": "file,label\na.wav,x\n", "task/a.wav": b"RIFF"})
    out = unpack_probe_zip("task.zip", good)
    assert sorted(p.name for p in out.iterdir()) == ["a.wav", "labels.csv"]
    assert unpack_probe_zip("task.zip", good) == out  # same bytes, same folder
    for name, data, match in [
        ("task.pkl", good, "not a .zip"),
        ("t.zip", b"not a zip", "not a readable zip"),
        ("t.zip", _zip({"../evil.wav": b"x", "labels.csv": "file,label\n"}), "outside the folder"),
        ("t.zip", _zip({"labels.csv": "file,label\n", "model.pkl": b"x"}), "not one of"),
        ("t.zip", _zip({"a.wav": b"x"}), "exactly one labels.csv"),
    ]:
        with pytest.raises(ConfigError, match=match):
            unpack_probe_zip(name, data)


def test_alignment_page_group_section_fans_out_over_participants(root):
    from core.jobs import wait_job
    from core.studio import analyses

    at = app(root, "pages/alignment.py", source="lowlevel:wordrate")
    assert "Group: every participant" in texts(at.header)
    label = "Compute the group encoding of lowlevel:wordrate"
    assert any(b.label == label for b in at.button)
    params = analyses.params_for("encode-group", f"ds003020:{root}", "UTS01", "lowlevel:wordrate")
    run = analyses.launch("encode-group", params)
    assert wait_job(run, timeout=300)["state"] == "done", (run / "log.txt").read_text()[-2000:]
    folder = analyses.result("encode-group", params)
    group = json.loads((folder / "group.json").read_text())
    assert sorted(group["participants"]) == ["UTS01", "UTS02"]
    at = app(root, "pages/alignment.py", source="lowlevel:wordrate")
    frames = [d.value for d in at.dataframe]
    assert any("Wilcoxon p" in f.columns for f in frames), (texts(at.error), [list(f.columns) for f in frames], texts(at.markdown)[-500:])
    regions = next(f for f in frames if "Wilcoxon p" in f.columns).set_index("region")
    assert regions.loc["cortex", "n_subjects"] == 2
    assert regions.loc["cortex", "Wilcoxon p"] == pytest.approx(group["regions"]["wordrate"]["cortex"]["wilcoxon_p"],
                                                                nan_ok=True)
    people = next(f for f in frames if "participant" in f.columns)
    assert list(people["participant"]) == ["UTS01", "UTS02"]
    assert "--subject all --features lowlevel:wordrate --n-jobs 2" in texts(at.code)


def test_group_mean_map_png_on_the_full_mesh(tmp_path):
    """The group mean map (values on every fsaverage5 vertex) draws, with ROI outlines on the mesh."""
    import numpy as np
    from PIL import Image

    from core.data.base import SurfaceSpace
    from core.data.fsaverage import standard_rois
    from core.studio import analyses, results

    mean = np.linspace(0, 1, 20484).astype(np.float32)
    mean[:50] = np.nan
    np.save(tmp_path / "mean_cc_norm_powspec.npy", mean)
    np.save(tmp_path / "count_cc_norm_powspec.npy", np.full(20484, 3, np.int32))
    (tmp_path / "group.json").write_text(json.dumps({
        "layers": ["powspec"], "mean_maps": {"mesh": "fsaverage5", "n_vertices": 20484,
                                             "files": {"powspec": ["mean_cc_norm_powspec.npy",
                                                                   "count_cc_norm_powspec.npy"]}}}))
    got, space = analyses.group_mean_map(tmp_path, "powspec")
    np.testing.assert_array_equal(got[50:], mean[50:].astype(np.float64))
    assert np.isnan(got[:50]).all()
    assert space.n_vertices == 20484 and space.mesh == "fsaverage5"

    class Surface:  # a surface dataset's two calls mesh_rois needs
        def surface_space(self, subject):
            return SurfaceSpace("fsaverage5", np.arange(0, 20484, 2), 10242)

        def rois(self, subject):
            return {k: m[::2] for k, m in standard_rois().items()} | {"cortex": np.ones(10242, bool)}

    rois = results.mesh_rois(Surface(), "P01")
    assert set(rois) == set(standard_rois()) and all(m.shape == (20484,) for m in rois.values())
    np.testing.assert_array_equal(rois["AC"][::2], standard_rois()["AC"][::2])
    assert not rois["AC"][1::2].any()  # vertices without a column are outside every ROI
    png = analyses.group_map_png(tmp_path, "powspec", rois)
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.size[0] > 400
    assert analyses.group_map_png(tmp_path, "no-such-layer") is None


def test_compare_accepts_cached_results_of_a_copy_of_the_dataset(tmp_path):
    """Encodings are cached by content: a copy of a dataset at another path reuses them, so their
    provenance names the other path; comparing them must work (same fingerprint), while results of
    different data are refused."""
    import shutil

    from core.data import load_dataset
    from core.features import resolve_source
    from core.pipelines.encode import cached_encode
    from core.studio import compare

    make_ds003020_fixture(tmp_path / "a", n_voxels=40)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    a = load_dataset(f"ds003020:{tmp_path / 'a'}")
    dirs = [cached_encode(a, "UTS01", resolve_source(s)) for s in ("lowlevel:wordrate", "lowlevel:powspec")]
    b = load_dataset(f"ds003020:{tmp_path / 'b'}")
    assert sorted(r["dir"] for r in compare.subject_results(b, "UTS01")) == sorted(map(str, dirs))
    summary, _ = compare.comparison([str(d) for d in dirs], "cc_norm", b)
    assert summary["subject"] == "UTS01" and list(summary["others"]) == [str(dirs[1])]
    make_ds003020_fixture(tmp_path / "c", n_voxels=40, seed=1)
    other = cached_encode(load_dataset(f"ds003020:{tmp_path / 'c'}"), "UTS01", resolve_source("lowlevel:wordrate"))
    with pytest.raises(ConfigError, match="one dataset"):
        compare.comparison([str(dirs[0]), str(other)], "cc_norm", b)
