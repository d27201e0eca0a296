"""The Streamlit app through ``streamlit.testing.v1.AppTest``: every page, its main interactions and
its error states, on the tiny ds003020 fixture (no cortex mapping) and the tiny demo brain."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.ds_fixture import make_ds003020_fixture

APP = str(Path(__file__).resolve().parent.parent / "app.py")
TIMEOUT = 60  #: seconds per script run (first imports of torch/sklearn dominate)


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("app-ds") / "ds003020"
    make_ds003020_fixture(root, n_voxels=80)
    return root


@pytest.fixture(scope="module")
def wordrate_result(fixture_root):
    """The app's encode of lowlevel:wordrate for UTS01, computed here with the engine."""
    from core.data import load_dataset
    from core.pipelines.encode import cached_encode
    from core.features import resolve_source

    return cached_encode(load_dataset(f"ds003020:{fixture_root}"), "UTS01", resolve_source("lowlevel:wordrate"))


def folder_app(path, source="lowlevel:wordrate", page=None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["data_choice"] = "folder"
    at.session_state["data_path"] = str(path)
    at.session_state["source"] = source
    at.run()
    if page:
        at.switch_page(page).run()
    return at


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def test_data_page_on_a_folder_without_cortex_mapping(fixture_root):
    at = folder_app(fixture_root, page="pages/data.py")
    assert not at.exception
    assert not at.error
    assert at.sidebar.selectbox(key="subject").options == ["UTS01", "UTS02"]
    assert at.selectbox(key="data_story").value == "adollshouse"
    assert "No cortex mapping for UTS01" in texts(at.info)
    counts = at.dataframe[-1].value if len(at.dataframe) else None
    assert counts is not None
    # voxel counts: 80 voxels, one NaN and one constant dropped by the fixture
    table = {row["what"]: row["n"] for _, row in [x for x in at.dataframe if "what" in x.value.columns][0].value.iterrows()}
    assert table["all voxels"] == 80 and table["kept for analysis"] == 78
    assert table["dropped: NaN/inf"] == 1 and table["dropped: constant"] == 1
    assert table["dropped: NaN/inf in test repeats"] == 0
    # a different story, then bad voxel lists: readable errors, page stays up
    at.selectbox(key="data_story").select("wheretheressmoke").run()
    assert not at.exception and not at.error
    at.text_input(key="data_voxels").input("1, x").run()
    assert "not a comma-separated list" in texts(at.error)
    at.text_input(key="data_voxels").input("5, 9999").run()
    assert "out of range 0..79" in texts(at.error)
    assert not at.exception


def test_alignment_page_shows_a_cached_encoding(fixture_root, wordrate_result):
    at = folder_app(fixture_root, page="pages/alignment.py")
    assert not at.exception and not at.error
    assert "No cortex mapping for UTS01" in texts(at.info)
    assert at.radio(key="align_metric").value == "cc_norm"
    labels = [b.label for b in at.get("download_button")]
    assert "Per-voxel table (CSV)" in labels and "ROI table (CSV)" in labels
    assert "Flatmap (PNG)" not in labels  # no cortex mapping → no figure to download
    # the ROI table on screen is the encode's summary
    from core.studio import summary

    s = summary(wordrate_result)["layers"]["wordrate"]
    shown = [d.value for d in at.dataframe if "roi" in d.value.columns][0]
    assert shown.set_index("roi").loc["cortex", "mean_cc_norm"] == pytest.approx(s["roi"]["cortex"]["mean_cc_norm"])
    at.radio(key="align_metric").set_value("r").run()
    at.slider(key="align_threshold").set_value(0.2).run()
    assert not at.exception and not at.error


def test_alignment_page_offers_to_compute_a_missing_encoding(fixture_root):
    at = folder_app(fixture_root, source="lowlevel:phonemes")
    at.sidebar.selectbox(key="subject").select("UTS02").run()  # (no test encodes UTS02 phonemes)
    at.switch_page("pages/alignment.py").run()
    assert not at.exception and not at.error
    buttons = [b.label for b in at.button]
    assert "Compute the encoding of lowlevel:phonemes" in buttons
    assert "python -m core encode --data ds003020:" in texts(at.code)
    assert "--subject UTS02 --features lowlevel:phonemes" in texts(at.code)


@pytest.mark.parametrize("page", ["pages/learn.py", "pages/data.py", "pages/alignment.py"])
def test_bad_dataset_paths_show_a_message(tmp_path, page):
    at = folder_app(tmp_path / "nowhere", page=page)
    assert not at.exception
    assert "does not exist" in texts(at.sidebar.error)
    at.sidebar.text_input(key="data_path").input(str(tmp_path)).run()  # exists, wrong layout
    assert not at.exception
    assert "not a ds003020 root" in texts(at.sidebar.error)
    if page != "pages/learn.py":  # the page itself says so too
        assert "not a ds003020 root" in texts(at.main.error)
    at.sidebar.text_input(key="data_path").input("").run()
    assert not at.exception
    assert "type the path" in texts(at.sidebar.warning)


@pytest.fixture(scope="module")
def tiny_demo():
    """The tiny demo brain (5 short stories on pycortex S1), built into the test cache."""
    from core.data.demo import DemoConfig, open_demo

    return open_demo(DemoConfig.tiny())


@pytest.fixture
def demo_app(tiny_demo, monkeypatch):
    """The app with the sidebar on "Demo brain", served by the tiny demo instead of the full one.

    core.data opens only the default demo for the ``demo`` spec, so the facade's two demo hooks
    are pointed at the tiny build (the full demo takes minutes to build).
    """
    from core import studio

    real_open = studio.open_dataset
    monkeypatch.setattr(studio, "demo_ready", lambda: True)
    monkeypatch.setattr(studio, "open_dataset",
                        lambda spec, progress=None: tiny_demo if spec == "demo" else real_open(spec, progress))

    def make(page=None, source="lowlevel:powspec") -> AppTest:
        at = AppTest.from_file(APP, default_timeout=TIMEOUT)
        if source:
            at.session_state["source"] = source
        at.run()
        if page:
            at.switch_page(page).run()
        return at

    return make


def test_learn_page_walks_through_the_demo(demo_app, tiny_demo):
    at = demo_app()
    assert not at.exception and not at.error
    headers = texts(at.header)
    for step in ("1 · Listen", "2 · The planted truth", "3 · Feature spaces", "4 · Which voxels"):
        assert step in headers
    assert at.selectbox(key="learn_story").options == tiny_demo.stories
    assert len(at.get("audio")) == 1
    transcript = " ".join(tiny_demo.words(tiny_demo.stories[0]).labels)
    assert transcript[:200] in texts(at.markdown)
    captions = [c for img in at.image for c in img.captions]
    assert "Planted voxel types on the flattened cortex (outlines: ROIs)" in captions
    # no encodings in the cache yet: one compute button per step, and no comparison
    labels = [b.label for b in at.button]
    for spec in ("lowlevel:powspec", "semantic:minilm", "bundled:whisper-tiny.en"):
        assert f"Compute encoding {spec}" in labels
    assert "Compute the encodings above" in texts(at.info)
    at.selectbox(key="learn_story").select(tiny_demo.stories[1]).run()
    assert not at.exception
    # 5 · brain-tuning: honest about cost, one click starts the tuning run in the background
    assert "5 · Brain-tune Whisper" in texts(at.header)
    assert "about 4 minutes" in texts(at.info)
    from core.jobs import cancel_job
    from core.studio import runs

    at.button(key="learn-tune-tuned").click().run()
    assert not at.exception
    started = [r for r in runs.tune_runs("demo", "S1") if r["model"] == "bundled:whisper-tiny.en"]
    assert len(started) == 1 and started[0]["control"] == "" and started[0]["preset"] == "demo"
    cancel_job(Path(started[0]["run"]))  # not run here (minutes); the Brain-tuning page tests run one
    at.run()
    assert "brain-tuned · seed 0** — failed" in texts(at.markdown)
    assert at.button(key=f"learn-resume-{started[0]['name']}").label == "Resume it"


def test_data_page_on_the_demo_draws_the_noise_ceiling(demo_app, tiny_demo):
    at = demo_app(page="pages/data.py")
    assert not at.exception and not at.error
    assert [c for img in at.image for c in img.captions] == ["S1: noise ceiling (cc_max)"]
    counts = [d.value for d in at.dataframe if "what" in d.value.columns][0].set_index("what")["n"]
    assert counts["all voxels"] == tiny_demo.n_voxels("S1") == 37226
    assert counts["ROI AC"] == int(tiny_demo.rois("S1")["AC"].sum())


def test_first_run_builds_the_demo_in_the_background(fixture_root, monkeypatch):
    """No demo in the cache: the page starts the build job by itself and shows its progress.

    The build job is pointed at the (fast) fixture folder so the test does not build the demo.
    """
    from core import studio
    from core.jobs import job_status, start_job, wait_job

    runs = {}

    def launch(spec):
        runs[spec] = start_job("dataset", {"data": f"ds003020:{fixture_root}"})
        return runs[spec]

    monkeypatch.setattr(studio, "demo_ready", lambda: False)
    monkeypatch.setattr(studio, "launch_dataset_build", launch)
    monkeypatch.setattr(studio, "dataset_job", lambda spec: job_status(runs[spec]) if spec in runs else None)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception and not at.error
    assert list(runs) == ["demo"]
    assert "First run: building the demo brain" in texts(at.info)
    assert len(at.get("progress")) >= 1
    assert wait_job(runs["demo"], timeout=60)["state"] == "done"
    at.run()  # done, but (patched) still no demo: offer to build it again instead of looping
    assert not at.exception
    assert any(b.label.startswith("Compute the demo brain") for b in at.button)


def test_a_failed_encode_is_reported_with_a_retry(fixture_root):
    from core import studio
    from core.data import load_dataset
    from core.jobs import job_dir
    from core.jobs.runner import write_status

    ds = load_dataset(f"ds003020:{fixture_root}")
    run = job_dir("encode", studio.encode_dir(ds, "UTS01", "lowlevel:powspec").name)
    run.mkdir(parents=True, exist_ok=True)
    write_status(run, state="failed", fraction=0.4, message="failed", result=None,
                 error="audio of 'legacy' is unreadable; re-download it")
    at = folder_app(fixture_root, source="lowlevel:powspec", page="pages/alignment.py")
    assert not at.exception
    assert "failed: audio of 'legacy' is unreadable" in texts(at.error)
    assert "Retry the encoding of lowlevel:powspec" in [b.label for b in at.button]


@pytest.mark.slow
def test_compute_button_runs_the_encode_as_a_job(fixture_root):
    import shutil

    from core import studio
    from core.data import load_dataset
    from core.jobs import job_dir, wait_job

    out = studio.encode_dir(load_dataset(f"ds003020:{fixture_root}"), "UTS01", "lowlevel:phonemes")
    shutil.rmtree(out, ignore_errors=True)  # a kept test cache (BTS_TEST_CACHE) may hold it
    shutil.rmtree(job_dir("encode", out.name), ignore_errors=True)
    at = folder_app(fixture_root, source="lowlevel:phonemes", page="pages/alignment.py")
    [button] = [b for b in at.button if b.label.startswith("Compute the encoding of lowlevel:phonemes")]
    button.click().run()
    assert not at.exception and not at.error
    assert len(at.get("progress")) >= 1  # the page polls; it does not wait
    status = studio.encode_job(load_dataset(f"ds003020:{fixture_root}"), "UTS01", "lowlevel:phonemes")
    assert wait_job(Path(status["run_dir"]), timeout=120)["state"] == "done"
    at.run()
    assert not at.exception and not at.error
    assert "ROI table (CSV)" in [b.label for b in at.get("download_button")]


def test_a_typed_model_spec_is_checked(fixture_root):
    at = folder_app(fixture_root, source="other", page="pages/alignment.py")
    assert not at.exception
    assert "Choose a feature space or model" in texts(at.info)  # nothing typed yet
    at.sidebar.text_input(key="source_spec").input("nonsense").run()
    assert "unknown feature spec 'nonsense'" in texts(at.sidebar.error)
    at.sidebar.text_input(key="source_spec").input(f"hf:{fixture_root / 'no-model'}").run()
    assert not at.exception
    assert "does not exist" in texts(at.main.error)  # the model is loaded (and fails) on use
    at.sidebar.selectbox(key="subject").select("UTS02")  # (the slow test below encodes UTS01)
    at.sidebar.text_input(key="source_spec").input("random:whisper-tiny").run()
    assert not at.exception and not at.error
    assert "windows for this dataset" in texts(at.caption)  # model encodes say what they cost
    assert "--subject UTS02 --model random:whisper-tiny --layers all" in texts(at.code)


@pytest.mark.slow
def test_alignment_page_with_model_layers(fixture_root):
    """A speech model's encode (every layer): layer slider, layer curve, per-layer tables."""
    from core import studio
    from core.data import load_dataset
    from core.pipelines.encode import cached_encode

    spec = "random:whisper-tiny"
    ds = load_dataset(f"ds003020:{fixture_root}")
    result = cached_encode(ds, "UTS01", studio.resolve(spec), studio.encode_layers(spec))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in {"data_choice": "folder", "data_path": str(fixture_root), "source": "other",
                       "source_spec": spec}.items():
        at.session_state[key] = value
    at.run()
    at.switch_page("pages/alignment.py").run()
    assert not at.exception and not at.error
    slider = at.select_slider(key=f"align_layer-{spec}")
    assert slider.options == studio.layer_names(result) == ["layer_0", "layer_1", "layer_2"]
    assert slider.value == "layer_2"
    assert "Across layers" in texts(at.subheader)
    slider.set_value("layer_0").run()
    assert not at.exception
    shown = [d.value for d in at.dataframe if "roi" in d.value.columns][0].set_index("roi")
    expected = studio.summary(result)["layers"]["layer_0"]["roi"]["cortex"]["mean_r"]
    assert shown.loc["cortex", "mean_r"] == pytest.approx(expected)


def test_alignment_page_default_state_on_the_demo(demo_app, tiny_demo):
    """Default sidebar (demo, bundled Whisper tiny.en): nothing cached yet → the page offers the
    background encode, says what it costs, and names the CLI call that gives the same numbers."""
    at = demo_app(page="pages/alignment.py", source=None)
    assert not at.exception and not at.error
    assert at.sidebar.selectbox(key="source").value == "bundled:whisper-tiny.en"
    assert "Compute the encoding of bundled:whisper-tiny.en" in [b.label for b in at.button]
    assert "windows for this dataset" in texts(at.caption)
    assert ("python -m core encode --data demo --subject S1 --model bundled:whisper-tiny.en "
            "--layers all --out OUT_DIR") in texts(at.code)
