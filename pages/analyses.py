"""Analyses: variance partitioning (semantic vs acoustic), low-level impact per ROI, semantic-vs-phonetic
preference per layer, per-voxel significance, and downstream probes — each a background job whose
result is the same folder its CLI command writes."""

import streamlit as st

from core import studio
from core.errors import StudioError
from core.studio import analyses, uploads
from core.viz.charts import preference_chart, probe_chart
from pages import _ui

ctx = _ui.context()
st.title("Analyses")
ds = _ui.require_dataset(ctx)
subject, source = ctx.subject, ctx.source
st.caption(f"`{ctx.data}` · subject **{subject}** · model / features **{source}** · protocol "
           f"**{ctx.protocol}** — change them in the sidebar. Each analysis runs once in the background "
           "and is then read from the cache.")

FEATURE_SPACES = [o["spec"] for o in _ui.catalog() if o["group"] == "feature space"]


def panel(kind: str, params: dict, what: str, estimate: str = ""):
    """The finished result folder, or the job's launch / progress panel (then None)."""
    with _ui.shown_errors(stop=False):
        folder = analyses.result(kind, params)
        if folder is None:
            _ui.job_panel(analyses.job(kind, params), lambda: analyses.launch(kind, params), what,
                          key=f"{kind}-{abs(hash(str(params)))}", estimate=estimate)
        return folder


def needs_source() -> bool:
    if source is None:
        st.info("Choose a model or feature space in the sidebar.")
        return False
    return True


tabs = st.tabs(["Variance partitioning", "Low-level impact", "Layer preference", "Significance", "Probes"])

with tabs[0]:
    st.markdown(analyses.ANALYSES["partition"])
    c1, c2 = st.columns(2)
    a = c1.selectbox("Space A (semantic)", FEATURE_SPACES, key="part_a",
                     index=FEATURE_SPACES.index("semantic:minilm") if "semantic:minilm" in FEATURE_SPACES else 0)
    b = c2.selectbox("Space B (acoustic)", FEATURE_SPACES, key="part_b",
                     index=FEATURE_SPACES.index("lowlevel:powspec") if "lowlevel:powspec" in FEATURE_SPACES else 0)
    try:
        params = analyses.params_for("partition", ctx.data, subject, source, ctx.protocol, spaces=[a, b])
    except StudioError as err:
        st.error(str(err))
    else:
        folder = panel("partition", params, "the variance partitioning", "a few minutes")
        if folder is not None:
            if studio.flatmap_available(ds, subject):
                with _ui.shown_errors(stop=False), st.spinner(_ui.FIRST_FLATMAP_NOTE):
                    st.image(_ui.analysis_png(ctx.data, subject, str(folder), "preference"),
                             caption=f"preference: > 0 (red) {a}-preferring, < 0 (blue) {b}-preferring")
            st.dataframe(analyses.partition_table(folder), hide_index=True)
        _ui.cli_hint(analyses.cli_command("partition", params))

with tabs[1]:
    st.markdown(analyses.ANALYSES["lowlevel-impact"])
    if needs_source():
        remove = st.multiselect("Low-level spaces to remove", [f for f in FEATURE_SPACES if f.startswith("lowlevel:")],
                                default=[r for r in analyses.DEFAULT_REMOVE if r in FEATURE_SPACES], key="impact_remove")
        try:
            params = analyses.params_for("lowlevel-impact", ctx.data, subject, source, ctx.protocol, remove=remove)
        except StudioError as err:
            st.error(str(err))
        else:
            folder = panel("lowlevel-impact", params, f"the low-level impact on {source}",
                           "minutes; a speech model's features must be encoded first")
            if folder is not None:
                table = analyses.impact_table(folder)
                layers = list(dict.fromkeys(table["layer"]))
                layer = st.selectbox("Layer", layers, index=len(layers) - 1, key="impact_layer") if len(layers) > 1 else layers[0]
                st.dataframe(table[table["layer"] == layer].drop(columns="layer"), hide_index=True)
            _ui.cli_hint(analyses.cli_command("lowlevel-impact", params))

with tabs[2]:
    st.markdown(analyses.ANALYSES["preference"])
    if needs_source():
        if not studio.is_model_spec(source):
            st.info("Layer preference is a property of a speech model's layers: choose a model in the sidebar.")
        else:
            params = analyses.params_for("preference", ctx.data, subject, source)
            folder = panel("preference", params, f"the layer preference of {source}", "minutes")
            if folder is not None:
                table = analyses.preference_table(folder)
                st.altair_chart(preference_chart(table), width="stretch")
                st.dataframe(table, hide_index=True)
            _ui.cli_hint(analyses.cli_command("preference", params))

with tabs[3]:
    st.markdown(analyses.ANALYSES["significance"])
    if needs_source():
        params = analyses.params_for("significance", ctx.data, subject, source, ctx.protocol)
        folder = panel("significance", params, f"the significance of {source}", "an encode plus permutations")
        if folder is not None:
            table = analyses.significance_table(folder)
            layer = st.selectbox("Layer", list(table["layer"]), index=len(table) - 1, key="sig_layer")
            if studio.flatmap_available(ds, subject):
                with _ui.shown_errors(stop=False), st.spinner(_ui.FIRST_FLATMAP_NOTE):
                    st.image(_ui.analysis_png(ctx.data, subject, str(folder), "significant", layer),
                             caption=f"test r of voxels significant at FDR q ≤ 0.05 · {layer}")
            st.dataframe(table, hide_index=True)
        _ui.cli_hint(analyses.cli_command("significance", params))

with tabs[4]:
    st.markdown(analyses.ANALYSES["probe"])
    if needs_source():
        if not studio.is_model_spec(source):
            st.info("Probes read a speech model's layers: choose a model in the sidebar.")
        else:
            choice = st.radio("Task", list(analyses.DEMO_TASKS) + ["folder", "upload"], horizontal=True,
                              key="probe_task",
                              help="demo tasks are built from the demo's stories; 'folder' reads a probe "
                                   "dataset folder, 'upload' a zip of it (.wav clips + labels.csv; README: "
                                   "probe task format)")
            task = choice if choice in analyses.DEMO_TASKS else None
            if choice == "folder":
                path = st.text_input("Probe dataset folder", key="probe_folder").strip()
                if path:
                    with _ui.shown_errors(stop=False):
                        task = f"folder:{studio.allowed_path(path)}"
            elif choice == "upload":
                up = st.file_uploader("Probe dataset (.zip, at most 200 MB)", type=["zip"], key="probe_upload")
                if up is not None:
                    with _ui.shown_errors(stop=False):
                        task = f"folder:{uploads.unpack_probe_zip(up.name, up.getvalue())}"
            if task:
                params = analyses.params_for("probe", ctx.data, subject, source, task=task)
                folder = panel("probe", params, f"the probes of {source}", "minutes")
                if folder is not None:
                    table = analyses.probe_table(folder)
                    st.altair_chart(probe_chart(table), width="stretch")
                    st.dataframe(table.pivot(index="layer", columns="probe", values="f1").reset_index(),
                                 hide_index=True)
                _ui.cli_hint(analyses.cli_command("probe", params))
