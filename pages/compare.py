"""Compare: two or three encoding results of one subject (pretrained vs tuned vs control, or any two
feature spaces) — maps side by side and a difference map, per-region Δ with Wilcoxon p, layer curves
per model, and the low-level impact / layer preference of the same models when computed."""

import streamlit as st

from core import studio
from core.studio import analyses, compare
from core.viz.charts import layer_curve, preference_chart
from pages import _ui

ctx = _ui.context()
st.title("Compare")
ds = _ui.require_dataset(ctx)
subject = ctx.subject
with _ui.shown_errors():
    results = compare.subject_results(ds, subject)
if len(results) < 2:
    st.info(f"Comparing needs at least two encoding results for {subject}; there are {len(results)}. "
            "Compute encodings on *Alignment maps*, or evaluate a tuning run on *Brain-tuning* (it encodes "
            "the tuned and the pretrained model).")
    st.stop()

by_dir = {r["dir"]: r for r in results}
label = {d: f"{r['label']} · {r['protocol']}" for d, r in by_dir.items()}
pre = [d for d in st.session_state.pop("compare_preselect", []) if d in by_dir]
if pre:
    st.session_state["compare_dirs"] = pre
default = [d for d in st.session_state.get("compare_dirs", []) if d in by_dir] or list(by_dir)[:2]
st.session_state["compare_dirs"] = default
chosen = st.multiselect("Results (the first is the baseline A)", list(by_dir), key="compare_dirs",
                        format_func=label.get, max_selections=3)
metric = st.radio("Metric", list(studio.METRICS), format_func=studio.METRICS.get, horizontal=True,
                  key="compare_metric")
if len(chosen) < 2:
    st.info("Pick two or three results.")
    st.stop()


@st.cache_data(show_spinner="Comparing (Wilcoxon per region and layer; cached)…", max_entries=32)
def _comparison(data: str, dirs: tuple, metric: str):
    summary, folder = compare.comparison(list(dirs), metric, _ui.dataset(data))
    return summary, str(folder)


with _ui.shown_errors():
    summary, folder = _comparison(ctx.data, tuple(chosen), metric)
names = "ABC"
st.caption(" · ".join(f"**{n}** = {label[d]}" for n, d in zip(names, chosen)))
for d in chosen:
    st.caption(f"{names[chosen.index(d)]}: {studio.result_badge(d)}")

for k, other in enumerate(chosen[1:], start=1):
    st.header(f"{names[k]} vs A")
    layers = compare.comparison_layers(summary, k)
    layer = st.selectbox("Layer", layers, key=f"compare_layer_{k}",
                         help="best = each result's own best layer (by mean score over cortex)")
    row = list(summary["others"].values())[k - 1][layer]
    la, lb = row["layer_base"], row["layer_other"]
    if studio.flatmap_available(ds, subject):
        with _ui.shown_errors(stop=False), st.spinner(_ui.FIRST_FLATMAP_NOTE):
            c1, c2, c3 = st.columns(3)
            c1.image(_ui.score_png(ctx.data, subject, chosen[0], la, metric, 0.0), caption=f"A · {la}")
            c2.image(_ui.score_png(ctx.data, subject, other, lb, metric, 0.0), caption=f"{names[k]} · {lb}")
            c3.image(_ui.difference_png(ctx.data, subject, folder, k, layer, metric),
                     caption=f"Δ {metric} ({names[k]} − A); red = {names[k]} better")
    else:
        _ui.no_mapping_note(subject)
    with _ui.shown_errors(stop=False):
        st.dataframe(compare.comparison_table(summary, k, layer), hide_index=True)
    st.caption("mean Δ over the region's voxels with both scores; share improved = voxels with Δ > 0; "
               "Wilcoxon signed-rank p over the paired voxels (two-sided)")

st.header("Across layers")
with _ui.shown_errors(stop=False):
    regions = compare.regions_in(chosen)
    region = st.selectbox("Region", regions, key="compare_region",  # the paper's question: semantic regions
                          index=regions.index("semantic") if "semantic" in regions else 0)
    table = compare.layer_curves(chosen, [f"{names[i]}: {label[d]}" for i, d in enumerate(chosen)], region, metric)
    st.altair_chart(layer_curve(table, metric_label=f"mean {metric} in {region}"), width="stretch")

st.header("Low-level impact and layer preference")
shown = False
for i, d in enumerate(chosen):
    features = by_dir[d]["features"]
    params = {"lowlevel-impact": analyses.params_for("lowlevel-impact", ctx.data, subject, features,
                                                     by_dir[d]["protocol"], remove=list(analyses.DEFAULT_REMOVE)),
              "preference": analyses.params_for("preference", ctx.data, subject, features)}
    with _ui.shown_errors(stop=False):
        impact = analyses.result("lowlevel-impact", params["lowlevel-impact"])
        pref = analyses.result("preference", params["preference"])
    if impact is None and pref is None:
        continue
    shown = True
    st.markdown(f"**{names[i]}: {label[d]}**")
    left, right = st.columns(2)
    if impact is not None:
        t = analyses.impact_table(impact)
        left.dataframe(t[t["region"].isin(["semantic", "auditory"]) | t["region"].str.startswith("planted")],
                       hide_index=True)
    if pref is not None:
        right.altair_chart(preference_chart(analyses.preference_table(pref)), width="stretch")
if not shown:
    st.caption("Not computed for these models yet: run *Low-level impact* (default spaces) and *Layer "
               "preference* on the Analyses page, and they appear here side by side.")
_ui.cli_hint(compare.cli_compare_command(chosen, metric))
