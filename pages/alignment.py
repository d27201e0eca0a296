"""Alignment maps: how well a feature space or a model layer predicts each voxel, on the cortex,
per ROI and across layers; with PNG / CSV downloads and a WebGL viewer export."""

from pathlib import Path

import streamlit as st

from core import studio
from pages import _ui

ctx = _ui.context()
st.title("Alignment maps")
ds = _ui.require_dataset(ctx)
subject, spec = ctx.subject, ctx.source
if spec is None:
    st.info("Choose a feature space or model in the sidebar (or type a valid model spec).")
    st.stop()
st.caption(f"`{ctx.data}` · subject **{subject}** · features **{spec}** · protocol **{ctx.protocol}** — "
           "change them in the sidebar")


def group_section() -> None:
    """Every participant at once (multi-subject datasets): a background group encode, then the
    across-participant tests and, on a shared surface, the group mean map."""
    if len(ds.subjects) < 2:
        return
    from core.studio import analyses

    st.header("Group: every participant")
    st.markdown(f"Encode **{spec}** for all {len(ds.subjects)} participants in parallel (joblib, "
                f"{analyses.GROUP_JOBS} workers), then test each region across participants (Wilcoxon "
                "signed-rank of the per-participant region means against 0) and, on a shared surface, "
                "average the maps.")
    gparams = analyses.params_for("encode-group", ctx.data, subject, spec, ctx.protocol)
    with _ui.shown_errors(stop=False):
        gfolder = analyses.result("encode-group", gparams)
        if gfolder is None:
            _ui.job_panel(analyses.job("encode-group", gparams), lambda: analyses.launch("encode-group", gparams),
                          f"the group encoding of {spec}", key=f"group-{spec}-{ctx.protocol}")
    if gfolder is not None:
        glayers = analyses.group_layers(gfolder)
        glayer = st.selectbox("Layer", glayers, key=f"group_layer-{spec}",
                              help="best = each participant's own best layer (no common map)") \
            if len(glayers) > 1 else glayers[0]
        people, regions = analyses.group_tables(gfolder, glayer)
        if glayer != "best":
            with _ui.shown_errors(stop=False):
                png = _ui.group_png(str(gfolder), glayer, ctx.data, subject)
                if png is not None:
                    st.image(png, caption=f"mean cc_norm over participants · {glayer} (fsaverage5)")
        left, right = st.columns(2)
        left.caption("Across participants")
        left.dataframe(regions, hide_index=True)
        right.caption("Per participant (region means of cc_norm)")
        right.dataframe(people, hide_index=True)
    _ui.cli_hint(analyses.cli_command("encode-group", gparams))


with _ui.shown_errors(), _ui.model_lookup(spec):
    result = studio.cached_result(ds, subject, spec, ctx.protocol)
    cli = studio.cli_encode_command(ctx.data, subject, spec, protocol=ctx.protocol)
if result is None:
    st.markdown(f"No encoding of **{spec}** for {subject} yet. It fits a ridge encoding model per "
                "layer on the training stories and scores it on the held-out test story.")
    with _ui.shown_errors():
        _ui.encode_launcher(ds, subject, spec, f"the encoding of {spec}", key=f"enc-{spec}-{ctx.protocol}",
                            protocol=ctx.protocol)
    _ui.cli_hint(cli)
    group_section()
    st.stop()

with _ui.shown_errors():
    layers = studio.layer_names(result)
    st.caption(studio.result_badge(result))
c1, c2, c3 = st.columns([2, 1, 1])
with c1:
    if len(layers) > 1:
        layer = st.select_slider("Layer", options=layers, value=layers[-1], key=f"align_layer-{spec}")
    else:
        layer = layers[0]
        st.markdown(f"Layer: **{layer}** (a feature space has one)")
with c2:
    metric = st.radio("Metric", list(studio.METRICS), format_func=studio.METRICS.get, key="align_metric")
with c3:
    threshold = st.slider("Hide voxels below", 0.0, 1.0, 0.0, 0.01, key="align_threshold",
                          help="Voxels whose score is below this value show the curvature instead")

with _ui.shown_errors():
    values = studio.scores(result, layer, metric)
    rois_summary = studio.roi_table(result, layer)

png = None
if studio.flatmap_available(ds, subject):
    with st.spinner(_ui.FIRST_FLATMAP_NOTE), _ui.shown_errors(stop=False):
        png = _ui.score_png(ctx.data, subject, str(result), layer, metric, float(threshold))
        st.image(png, caption=f"{spec} · {layer} · {metric} (threshold {threshold:.2f})")
else:
    _ui.no_mapping_note(subject)

from core.viz.charts import histogram, layer_curve, roi_bar_chart  # noqa: E402

left, right = st.columns(2)
with left, _ui.shown_errors(stop=False):
    st.subheader("Per ROI")
    st.altair_chart(roi_bar_chart(studio.roi_chart_table(result, layer, metric), metric_label=f"mean {metric}"),
                    width="stretch")
with right, _ui.shown_errors(stop=False):
    if len(layers) > 1:
        st.subheader("Across layers")
        all_rois = list(rois_summary["roi"])
        shown = st.multiselect("ROIs", all_rois, default=studio.top_rois(result, layer, metric),
                               key=f"align_curve_rois-{spec}")
        st.altair_chart(layer_curve(studio.layer_roi_table(result, metric, shown), metric_label=f"mean {metric}"),
                        width="stretch")
    else:
        st.subheader(f"Distribution of {metric}")
        st.altair_chart(histogram(values, bins=40, label=metric), width="stretch")

st.subheader("Downloads")
d1, d2, d3, d4 = st.columns(4)
stem = f"{subject}_{spec.replace(':', '-').replace('/', '_')}_{layer}_{metric}"
with d1:
    if png is not None:
        st.download_button("Flatmap (PNG)", png, file_name=f"{stem}.png", mime="image/png")
with d2:
    rois = ds.rois(subject)
    st.download_button("Per-voxel table (CSV)", file_name=f"{stem}_voxels.csv", mime="text/csv",
                       data=lambda: studio.voxel_table(result, layer, rois).to_csv(index=False))
with d3:
    st.download_button("ROI table (CSV)", rois_summary.to_csv(index=False), file_name=f"{stem}_rois.csv",
                       mime="text/csv")
with d4:
    viewers = st.session_state.setdefault("webgl_dirs", {})
    view_key = (str(result), layer, metric, float(threshold))
    if studio.webgl_available(ds, subject) and st.button("Export WebGL viewer", key="webgl"):
        with st.spinner("Writing the static WebGL viewer…"), _ui.shown_errors(stop=False):
            out = studio.export_viewer(ds, subject, result, layer, metric, float(threshold))
            viewers[view_key] = str(out)
    if view_key in viewers:
        out = Path(viewers[view_key])
        st.caption(f"Viewer folder: `{out}` (serve it, e.g. `python -m http.server -d {out}`)")
        st.download_button("Viewer (zip)", file_name=f"{stem}_webgl.zip", mime="application/zip",
                           data=lambda: studio.viewer_zip(out))

if ds.surface_space(subject) is not None:
    if st.toggle("Interactive 3-D view (inflated fsaverage5; drag to rotate)", key="align_3d"):
        with st.spinner("Building the 3-D view…"), _ui.shown_errors(stop=False):
            html = _ui.surface_html(ctx.data, subject, str(result), layer, metric, float(threshold))
            st.iframe(html, height=620)  # our own nilearn HTML (no user content in it)
            st.download_button("3-D view (HTML)", html, file_name=f"{stem}_3d.html", mime="text/html")

with st.expander("Layer, ROI and ROI-group tables"):
    st.dataframe(studio.layer_table(result), hide_index=True)
    st.dataframe(rois_summary, hide_index=True)
    st.caption("ROI groups (union of their ROIs; n_voxels = voxels with a cc_norm)")
    st.dataframe(studio.group_table(result, layer), hide_index=True)
_ui.cli_hint(cli)

group_section()
