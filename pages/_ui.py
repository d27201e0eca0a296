"""Shared view helpers of the pages (not a page): the sidebar context, caches, job panels, errors.

Everything numeric comes from :mod:`core.studio`; this module only binds it to streamlit
(``st.cache_resource`` for datasets, ``st.cache_data`` for flatmap PNG bytes) and draws.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import streamlit as st

from core import studio
from core.errors import StudioError

POLL_S = 1.0  #: seconds between two polls of a running job
DEFAULT_SOURCE = "bundled:whisper-tiny.en"  #: the sidebar's model until the user picks another
OTHER_SOURCE = "other"  #: the picker's entry for a typed spec


@dataclass
class Context:
    """What the sidebar chose: a data spec, the opened dataset (None until usable), a subject
    and a feature-source spec."""

    data: str
    dataset: object = None
    subject: Optional[str] = None
    source: Optional[str] = None
    protocol: str = "project"
    error: Optional[str] = None


def context() -> Context:
    """Draw the sidebar (dataset, subject, feature space / model, running jobs); return the choices.

    Every page calls it first, exactly once per run.
    """
    ctx = _sidebar()
    active_jobs_sidebar()
    return ctx


def _kept(widget, key: str, *args, **kwargs):
    """A sidebar widget whose value survives page switches.

    Each page draws its own sidebar, and Streamlit does not carry a widget's value over to the
    same-keyed widget of another page, so the value is kept under a plain key (updated by the
    widget's ``on_change``) and handed to the widget before it is drawn.
    """
    plain = f"_kept_{key}"

    def remember():
        st.session_state[plain] = st.session_state[key]

    if plain in st.session_state:
        st.session_state[key] = st.session_state[plain]
    value = widget(*args, key=key, on_change=remember, **kwargs)
    st.session_state[plain] = value
    return value


def _sidebar() -> Context:
    """Draw the pickers; return the context the pages read."""
    sb = st.sidebar
    sb.title("Brain-tuning Studio")
    choice = _kept(sb.radio, "data_choice", "Dataset", ["demo", "demo-group", "folder"], horizontal=True,
                   format_func={"demo": "Demo brain", "demo-group": "Demo group", "folder": "Folder"}.get,
                   help="Demo brain: one simulated subject (pycortex S1 volumes). Demo group: six simulated "
                        "participants on the fsaverage5 surface. Folder: a ds003020 or Narratives download")
    path = ""
    if choice == "folder":
        path = _kept(sb.text_input, "data_path", "Dataset folder", placeholder="/data/ds003020",
                     help="ds003020 layout (the folder holding stimuli/ and derivative/) or Narratives "
                          "layout (the folder holding participants.tsv); it must lie under the app's "
                          "allowed folders (BTS_ALLOWED_ROOTS; default your home folder and the cache)")
    try:
        spec = studio.data_spec(choice, path)
    except StudioError as err:
        sb.warning(str(err))
        return Context(data="", error=str(err))
    ctx = Context(data=spec)
    if (spec == studio.DEMO_SPEC and not studio.demo_ready()) or \
            (spec == studio.DEMO_GROUP_SPEC and not studio.group_ready()):
        ctx.error = None  # the pages show the build's progress
        return ctx
    try:
        ctx.dataset = dataset(spec)
    except StudioError as err:
        ctx.error = str(err)
        sb.error(str(err))
        return ctx
    if st.session_state.get("_kept_subject", ctx.dataset.subjects[0]) not in ctx.dataset.subjects:
        st.session_state.pop("_kept_subject", None)
        st.session_state.pop("subject", None)
    ctx.subject = _kept(sb.selectbox, "subject", "Subject", ctx.dataset.subjects)
    try:
        options = catalog()
    except StudioError as err:
        sb.error(str(err))
        return ctx
    specs = [o["spec"] for o in options] + [OTHER_SOURCE]
    labels = {o["spec"]: f"{o['label']}  ·  {o['group']}" for o in options}
    labels[OTHER_SOURCE] = "other model: type its spec…"
    if st.session_state.get("_kept_source", st.session_state.get("source")) not in specs:
        st.session_state.pop("_kept_source", None)
        st.session_state["source"] = DEFAULT_SOURCE if DEFAULT_SOURCE in specs else specs[0]
    ctx.protocol = _kept(sb.radio, "protocol", "Evaluation protocol", list(studio.PROTOCOLS),
                         format_func=studio.PROTOCOLS.get,
                         help="How encodings are fitted and scored: this project's protocol, or the "
                              "released code's (README: 'Two evaluation protocols')")
    ctx.source = _kept(sb.selectbox, "source", "Feature space / model", specs, format_func=labels.get,
                       help="Low-level and semantic feature spaces, speech models (their layers), "
                            "brain-tuned checkpoints found in the cache, or any model spec")
    if ctx.source == OTHER_SOURCE:
        typed = _kept(sb.text_input, "source_spec", "Model spec", placeholder="hf:facebook/wav2vec2-base",
                      help="hf:<hub-id-or-local-folder>, bundled:<name>, random:<family>[-tiny], "
                           "ckpt:<run-or-export-folder>, lowlevel:<name>, semantic:<name>").strip()
        ctx.source = None
        if typed:
            try:
                studio.resolve(typed)
                ctx.source = typed
            except StudioError as err:
                sb.error(str(err))
    return ctx


@contextmanager
def shown_errors(stop: bool = True):
    """Show a core error as ``st.error`` (and end the page run if ``stop``) — the app stays up."""
    try:
        yield
    except StudioError as err:
        st.error(str(err))
        if stop:
            st.stop()


# -- caches -------------------------------------------------------------------------------------

@st.cache_resource(show_spinner="Opening the dataset…", max_entries=4)
def dataset(spec: str):
    """The opened dataset of ``spec`` (one per process; errors are not cached)."""
    return studio.open_dataset(spec)


@st.cache_data(show_spinner=False, ttl=60)
def catalog() -> list:
    """Feature spaces, models and checkpoints offered in the sidebar (re-read every minute, so new
    checkpoints appear)."""
    return studio.source_catalog()


@st.cache_data(show_spinner=False, max_entries=64)
def score_png(data: str, subject: str, result_dir: str, layer: str, metric: str, threshold: float) -> Optional[bytes]:
    """Flatmap PNG of an encode folder, keyed by (result dir, layer, metric, threshold)."""
    return studio.score_flatmap(dataset(data), subject, Path(result_dir), layer, metric, threshold,
                                title=f"{layer} · {metric}")


@st.cache_data(show_spinner=False, max_entries=16)
def ceiling_png(data: str, subject: str) -> Optional[bytes]:
    """Noise-ceiling flatmap PNG."""
    return studio.ceiling_flatmap(dataset(data), subject)


@st.cache_data(show_spinner=False, max_entries=4)
def truth_png(data: str, subject: str) -> Optional[bytes]:
    """Planted ground-truth flatmap PNG (demo)."""
    return studio.ground_truth_flatmap(dataset(data), subject)


@st.cache_data(show_spinner=False, max_entries=8)
def surface_html(data: str, subject: str, result_dir: str, layer: str, metric: str, threshold: float) -> Optional[str]:
    """Interactive nilearn 3-D view (HTML) of an encode folder on the fsaverage surface."""
    return studio.surface_view(dataset(data), subject, Path(result_dir), layer, metric, threshold)


@st.cache_data(show_spinner=False, max_entries=16)
def group_png(folder: str, layer: str, data: str, subject: str) -> Optional[bytes]:
    """Group mean map PNG of a group encode (ROI outlines of the standard surface discs)."""
    from core.studio import analyses

    return analyses.group_map_png(Path(folder), layer, studio.mesh_rois(dataset(data), subject))


@st.cache_data(show_spinner=False, max_entries=32)
def difference_png(data: str, subject: str, folder: str, k: int, layer: str, metric: str) -> Optional[bytes]:
    """Difference map PNG of a cached comparison folder (other ``k`` − base, at ``layer``)."""
    from core.studio import compare

    return studio.difference_png(dataset(data), subject, compare.delta_values(Path(folder), k, layer),
                                 title=f"Δ {metric} · {layer}", label=f"Δ {metric}")


@st.cache_data(show_spinner=False, max_entries=32)
def analysis_png(data: str, subject: str, folder: str, what: str, layer: str = "") -> Optional[bytes]:
    """Map PNG of an analysis folder: ``preference`` (partition; diverging) or ``significant``
    (test r of the FDR-significant voxels at ``layer``)."""
    from core.studio import analyses

    ds = dataset(data)
    if what == "preference":
        return studio.difference_png(ds, subject, analyses.partition_map(Path(folder)),
                                     title="preference (> 0: first space)", label="preference")
    values = analyses.significance_map(Path(folder), layer)
    vmin, vmax = studio.color_range(values)
    return studio.map_png(ds, subject, values, vmin=vmin, vmax=vmax, cmap=studio.SCORE_CMAP,
                          title=f"significant voxels · {layer}", label="r")


FIRST_FLATMAP_NOTE = ("Drawing the flatmap… (the very first flatmap of a brain builds pycortex's "
                      "surface cache, about a minute; later ones take about a second)")


def model_lookup(spec: str):
    """A spinner while a model spec is resolved: its cache key hashes the weights, so the model is
    loaded once per app process (a few seconds; the bundled Whisper is converted on first use)."""
    if studio.is_model_spec(spec):
        return st.spinner(f"Loading {spec} to look up its results (once per app start)…")
    return nullcontext()


def no_mapping_note(subject: str) -> None:
    st.info(f"No cortex mapping for {subject}: this dataset has no `derivative/pycortex-db/{subject}/`, "
            "so there is no flatmap. Tables and charts below still work.")


def require_dataset(ctx: Context):
    """The opened dataset, or draw why there is none (error, or the demo's first build) and stop."""
    if ctx.dataset is not None:
        return ctx.dataset
    if ctx.error:
        st.error(ctx.error)
        st.stop()
    if ctx.data in (studio.DEMO_SPEC, studio.DEMO_GROUP_SPEC):
        demo_build_panel(ctx.data)
        st.stop()
    st.info("Choose a dataset in the sidebar.")
    st.stop()


def demo_build_panel(spec: str = studio.DEMO_SPEC) -> None:
    """First run: build the demo brain (or the demo group) in the background (started
    automatically) with progress."""
    group = spec == studio.DEMO_GROUP_SPEC
    if group:
        st.info("First run: building the demo group into the cache — six simulated participants on the "
                "fsaverage5 surface hearing the demo's stories (the demo brain is built first if needed). "
                "This happens once.")
    else:
        st.info("First run: building the demo brain into the cache — synthesized stories, a simulated "
                "cortex (pycortex subject S1) and its fMRI responses. This happens once.")
    with shown_errors():
        status = studio.dataset_job(spec)
    auto = status is None
    if status and status["state"] == "done":
        if studio.group_ready() if group else studio.demo_ready():
            st.rerun()
        status = None  # built once, then removed from the cache: offer to build it again
    job_panel(status, lambda: studio.launch_dataset_build(spec), "the demo group" if group else "the demo brain",
              key=f"{spec}-build", estimate="about 3 minutes", auto=auto)


# -- jobs ---------------------------------------------------------------------------------------

def job_panel(status: Optional[dict], launch: Callable[[], Path], what: str, key: str,
              estimate: str = "", auto: bool = False) -> None:
    """Offer to start a background job, or show its live progress (polled; the page never waits).

    ``status`` is the job's current status (None = never started); ``launch`` starts or joins it;
    ``auto`` starts it without a click (the demo's first build). When the job finishes, the whole
    page reruns and shows the result.
    """
    state = status["state"] if status else None
    if state == "failed":
        st.error(f"{what} failed: {status['error']}")
    if state in (None, "failed"):
        if auto and state is None:
            with shown_errors():
                launch()
            st.rerun()
        label = f"Compute {what}" + (f" ({estimate})" if estimate else "")
        if st.button(label if state is None else f"Retry {what}", key=f"launch-{key}", type="primary"):
            with shown_errors():
                launch()
            st.rerun()
        return
    if state == "done":
        return
    _poll(Path(status["run_dir"]), what)


def encode_launcher(ds, subject: str, spec: str, what: str, key: str, protocol: str = "project") -> None:
    """For an encode not cached yet: its job status, its cost note and the launch / progress panel."""
    status = studio.encode_job(ds, subject, spec, protocol)
    if status and status["state"] == "done":
        st.rerun()
    note = studio.encode_note(ds, spec)
    if note:
        st.caption(note)
    job_panel(status, lambda: studio.launch_encode(ds, subject, spec, protocol), what, key=key)


def _poll(run_dir: Path, what: str) -> None:
    """A fragment that re-reads the job status every POLL_S seconds and reruns the page when done."""
    from core.jobs import cancel_job, job_status

    @st.fragment(run_every=POLL_S)
    def _progress():
        status = job_status(run_dir)
        if status["state"] in ("done", "failed"):
            st.rerun(scope="app")
        st.progress(float(status.get("fraction") or 0.0),
                    text=f"{what}: {status.get('message') or status['state']} — runs in the background; "
                         "you can switch pages and come back")
        left, right = st.columns([4, 1])
        left.caption(f"run folder: `{run_dir}` (progress in log.txt)")
        if right.button("Cancel", key=f"cancel-{run_dir.name}"):
            cancel_job(run_dir)
            st.rerun(scope="app")

    _progress()


def active_jobs_sidebar() -> None:
    """Running background jobs in the sidebar, refreshed every POLL_S seconds while any runs."""
    from core.jobs import ACTIVE, list_jobs

    def running() -> list:
        try:
            return [j for j in list_jobs() if j["state"] in ACTIVE]
        except StudioError:
            return []

    def draw() -> None:
        jobs = running()
        if jobs:
            st.caption("Background jobs")
        for j in jobs[:5]:
            what = j["params"].get("source") or j["params"].get("data") or ""
            st.progress(float(j.get("fraction") or 0.0), text=f"{j['kind']} {what}: {j.get('message', '')}")

    if running():
        with st.sidebar:
            st.fragment(draw, run_every=POLL_S)()


def cli_hint(command: str) -> None:
    """Show the CLI call that reproduces the numbers on screen."""
    with st.expander("Reproduce these numbers from the command line"):
        st.code(command, language="bash")
