"""Data page: stories (audio, transcript, words per TR), responses of chosen voxels, voxel counts,
and the noise ceiling on the cortex."""

import streamlit as st

from core import studio
from core.viz.charts import histogram, response_chart, words_per_tr_chart
from pages import _ui

ctx = _ui.context()
st.title("Data")
ds = _ui.require_dataset(ctx)
subject = ctx.subject

with _ui.shown_errors():
    stories = studio.story_table(ds)
st.caption(f"`{ctx.data}` · {len(ds.subjects)} subject(s) · {len(ds.stories)} stories · "
           f"TR {ds.tr:g} s · test story **{ds.test_story}** (with repeats)")
_ui.cli_hint(studio.cli_describe_command(ctx.data))

st.header("Stories")
story = st.selectbox("Story", list(stories["story"]), key="data_story")
with _ui.shown_errors():
    st.audio(ds.audio(story), sample_rate=16000)
    with st.expander("Transcript", expanded=False):
        st.write(studio.transcript(ds, story))
    timeline = studio.words_per_tr(ds, story)
st.subheader("TR timeline: words per TR")
st.caption("Each TR (2 s of scanning) hears the words whose onset falls in its window. Grey bars are "
           "TRs dropped by the [10:-5] trim; the rest line up with the response rows.")
st.altair_chart(words_per_tr_chart(timeline), width="stretch")
with st.expander("Stories table"):
    st.dataframe(stories, hide_index=True, width="stretch")

st.header(f"Responses of {subject}")
with _ui.shown_errors():
    counts = studio.voxel_counts(ds, subject)
    default_vox = studio.top_voxels(ds, subject, 3)
left, right = st.columns([2, 1])
with right:
    st.markdown("**Voxel counts**")
    st.dataframe(counts, hide_index=True, width="stretch")
with left:
    text = st.text_input("Voxels to preview (indices, comma-separated)", key="data_voxels",
                         value=", ".join(map(str, default_vox)),
                         help="Defaults to the three voxels with the highest noise ceiling")
    try:
        voxels = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        st.error(f"{text!r} is not a comma-separated list of voxel indices")
        voxels = []
    if story not in ds.subject_stories(subject):
        st.info(f"{subject} has no responses for {story}.")
    elif voxels:
        with _ui.shown_errors(stop=False):
            preview = studio.response_preview(ds, subject, story, voxels[:8])
            st.altair_chart(response_chart(preview), width="stretch")

st.header("Noise ceiling")
st.caption("cc_max: the best correlation any model could reach for a voxel, estimated from the repeats "
           "of the test story (Schoppe et al. 2016). It is the `cc_max.npy` of every encode under the "
           "project protocol (z-scored repeats, ddof 0, the whole test story); voxels with NaN or "
           "constant responses or repeats are dropped.")
if studio.flatmap_available(ds, subject):
    with st.spinner(_ui.FIRST_FLATMAP_NOTE), _ui.shown_errors(stop=False):
        png = _ui.ceiling_png(ctx.data, subject)
        st.image(png, caption=f"{subject}: noise ceiling (cc_max)")
else:
    _ui.no_mapping_note(subject)
with _ui.shown_errors(stop=False):
    st.altair_chart(histogram(studio.noise_ceiling(ds, subject), bins=40, label="cc_max"), width="stretch")
