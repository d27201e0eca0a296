"""Learn: the idea of brain-tuning as a guided walk on the demo brain — listen, see the planted
truth, then the real results of feature spaces → encoding model → alignment maps."""

from pathlib import Path

import streamlit as st

from core import studio
from core.viz.charts import planted_share_chart, type_score_chart
from pages import _ui

ctx = _ui.context()
st.title("Does a speech model listen like the brain?")
st.markdown(
    "People in an fMRI scanner listened to stories. A **speech model** hears the same audio. If a "
    "model's internal features can **predict** a brain region's response, the model and that region "
    "*align*. Brain-tuning (Moussa, Klakow & Toneva, ICLR 2025) fine-tunes the model to predict the "
    "brain, which shifts its alignment from sound towards meaning. This walk-through uses the "
    "**demo brain**: a simulated cortex whose answers we know, so every step can be checked.")

if ctx.data != studio.DEMO_SPEC:
    st.info("The walk-through runs on the demo brain: choose **Demo brain** as the dataset in the "
            "sidebar. Your own dataset works on the *Data* and *Alignment maps* pages.")
    st.stop()
ds = _ui.require_dataset(ctx)
subject = ds.subjects[0]

# -- 1. listen ----------------------------------------------------------------------------------
st.header("1 · Listen to a story")
story = st.selectbox("Story", ds.stories, key="learn_story")
with _ui.shown_errors():
    st.audio(ds.audio(story), sample_rate=16000)
    words = studio.transcript(ds, story)
st.caption(f"Transcript ({len(words.split())} words, timed to the audio):")
st.markdown(f"> {words[:600]}{'…' if len(words) > 600 else ''}")

# -- 2. planted truth ---------------------------------------------------------------------------
st.header("2 · The planted truth")
st.markdown(
    "In the demo brain we *planted* which voxels respond to what: **acoustic** voxels follow the "
    "sound's spectrum, **semantic** voxels follow word meaning, **mixed** ones both; the rest are "
    "noise. Each voxel's responses were recorded several times for the test story, so we also know "
    "how predictable it can be at best (its noise ceiling).")
if studio.flatmap_available(ds, subject):
    with st.spinner(_ui.FIRST_FLATMAP_NOTE), _ui.shown_errors(stop=False):
        st.image(_ui.truth_png(ctx.data, subject),
                 caption="Planted voxel types on the flattened cortex (outlines: ROIs)")
with _ui.shown_errors():
    counts = studio.ground_truth_counts(ds, subject)
if counts is not None and len(counts):
    st.caption("Share of each ROI's voxels planted with each type")
    st.altair_chart(planted_share_chart(counts, studio.TYPE_COLORS), width="stretch")

# -- 3. feature spaces → encoding model → maps ----------------------------------------------------
st.header("3 · Feature spaces → encoding model → alignment map")
lag_lo, lag_hi = studio.delay_seconds(ds)
st.markdown(
    "Turn the story into features at each scan (TR): **low-level** (the power spectrum: pure "
    "sound), **semantic** (word embeddings: pure meaning), or the layers of a real **speech model** "
    "(Whisper tiny.en, bundled). A ridge **encoding model** learns, per voxel, a weighted sum of "
    f"those features ({lag_lo:g}–{lag_hi:g} s earlier: blood flow lags the neurons) on the training "
    "stories, then predicts the unseen test story. The correlation with the real response, divided "
    "by the noise ceiling (**cc_norm**), is the voxel's alignment.")

LEARN_THRESHOLD = 0.3  #: cc_norm below it is hidden on these small maps (noise voxels hover near 0)
COMPARE_ROIS = {"AC": "auditory cortex", "Broca": "language"}  #: S1 overlay ROIs shown per step
STEPS = {"lowlevel:powspec": "Power spectrum (acoustic)", "semantic:minilm": "MiniLM words (semantic)",
         "bundled:whisper-tiny.en": "Whisper tiny.en layers"}
results = {}
cols = st.columns(len(STEPS))
for col, (spec, title) in zip(cols, STEPS.items()):
    with col:
        st.subheader(title)
        with _ui.shown_errors(stop=False):
            with _ui.model_lookup(spec):
                res = studio.cached_result(ds, subject, spec, ctx.protocol)
            if res is None:
                _ui.encode_launcher(ds, subject, spec, f"encoding {spec}", key=f"learn-{spec}-{ctx.protocol}",
                                    protocol=ctx.protocol)
                continue
            results[spec] = res
            layer = studio.best_layer(res)
            if studio.flatmap_available(ds, subject):
                png = _ui.score_png(ctx.data, subject, str(res), layer, "cc_norm", LEARN_THRESHOLD)
                st.image(png, caption=f"{spec} · {layer} · cc_norm ≥ {LEARN_THRESHOLD}")
            st.caption(studio.result_badge(res))
            rois = studio.roi_table(res, layer).set_index("roi")["mean_cc_norm"]
            for roi, what in COMPARE_ROIS.items():
                if roi in rois:
                    st.metric(f"mean cc_norm in {roi} ({what})", f"{rois[roi]:.2f}")
            _ui.cli_hint(studio.cli_encode_command(ctx.data, subject, spec, protocol=ctx.protocol))

# -- 4. compare -----------------------------------------------------------------------------------
st.header("4 · Which voxels does each feature space explain?")
if not results:
    st.info("Compute the encodings above to compare them here.")
else:
    st.markdown(
        "Mean cc_norm per planted voxel type: the check of the whole method on a brain whose answer "
        "we know. The acoustic space should win on acoustic voxels, the semantic space on semantic "
        "voxels. For Whisper, the curve shows which layers track sound and which track meaning; "
        "brain-tuning (a later step) aims to raise its semantic curve.")
    with _ui.shown_errors(stop=False):
        for spec, res in results.items():
            table = studio.scores_by_type(ds, res)
            table = table[table["type"] != "none"]
            st.markdown(f"**{STEPS[spec]}**")
            st.altair_chart(type_score_chart(table, studio.TYPE_COLORS), width="stretch")
    st.caption("Open *Alignment maps* for any layer's full map, ROI chart and downloads.")

# -- 5. brain-tuning ----------------------------------------------------------------------------
from core.studio import runs  # noqa: E402
from core.viz.charts import roi_bar_chart  # noqa: E402

st.header("5 · Brain-tune Whisper, then check the semantic regions")
st.markdown(
    "Now fine-tune Whisper tiny.en to predict the demo brain's **semantic** voxels (the *demo* preset), "
    "and — as the paper's control — once more on the responses of the **wrong story** (random-story "
    "control: same audio, mismatched fMRI). Then encode each tuned model exactly like step 3 and compare "
    "it with the pretrained one, voxel by voxel. If brain-tuning works, the planted semantic voxels gain "
    "clearly and the control gains little; the acoustic voxels should barely move.")
st.info("**Cost on this machine (2 CPU cores):** each tuning run takes about 4 minutes, and each "
        "evaluation about 5 minutes (the pretrained model's encoding is reused once computed). Everything "
        "runs in the background, one job at a time: start both runs, keep reading, come back. Measured "
        "on the demo (demo preset, README): planted-semantic cc_norm 0.19 → 0.30–0.31 tuned (3 seeds), 0.21 with "
        "the random-story control (2 seeds).")
LEARN_RUNS = {"": "Brain-tune Whisper tiny.en", "random-story": "Run the random-story control"}
with _ui.shown_errors(stop=False):
    learn_runs = [r for r in runs.tune_runs(ctx.data, subject) if r["model"] == "bundled:whisper-tiny.en"
                  and r["preset"] == "demo"]
    cols = st.columns(len(LEARN_RUNS))
    for col, (control, label) in zip(cols, LEARN_RUNS.items()):
        mine = [r for r in learn_runs if r["control"] == control]
        if not mine:
            if col.button(label, key=f"learn-tune-{control or 'tuned'}", type="primary"):
                runs.launch_tune(ctx.data, subject, "bundled:whisper-tiny.en", "demo", control=control or None)
                st.rerun()
        else:
            r = mine[0]
            col.markdown(f"**{runs.run_label(r)}** — {r['state']}: {runs.progress_line(r)}")
            if r["state"] == "failed" and col.button("Resume it", key=f"learn-resume-{r['name']}",
                                                      help=f"{r['error']}; continues from its last checkpoint"):
                runs.resume_run(Path(r["run"]))
                st.rerun()
            if r["state"] == "done" and r["evaluation"] is None:
                if col.button("Evaluate it", key=f"learn-eval-{r['name']}"):
                    runs.launch_evaluation(Path(r["run"]))
                    st.rerun()
            elif r["evaluation"] not in (None, "done"):
                col.caption(f"evaluation: {r['evaluation']}")
    st.caption("Follow live progress, loss curves and every run on the *Brain-tuning* page; pick any "
               "finished run there (or start one with other settings).")
    gains = runs.gain_table([r for r in learn_runs if r["evaluation"] == "done"])
    if len(gains):
        st.markdown("**Gain of the best layer over the pretrained model** (mean Δ cc_norm; `planted:` "
                    "regions are the demo's ground truth, `semantic` / `auditory` the ROI groups):")
        st.altair_chart(roi_bar_chart(gains, metric_label="mean Δ cc_norm (tuned − pretrained)"), width="stretch")
        st.dataframe(gains.rename(columns={"roi": "region", "group": "run", "value": "Δ"}), hide_index=True)
    _ui.cli_hint("python -m core tune --data demo --subject S1 --model bundled:whisper-tiny.en --out RUN\n"
                 "python -m core tune --data demo --subject S1 --model bundled:whisper-tiny.en "
                 "--control random-story --out RUN_CONTROL\n"
                 "python -m core evaluate-run RUN && python -m core evaluate-run RUN_CONTROL")
