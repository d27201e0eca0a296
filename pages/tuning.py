"""Brain-tuning: launch a tuning run as a background job, follow its progress and loss curves, manage
runs (cancel, resume, delete), evaluate a finished run against its pretrained model, and download the
exported model with its model card."""

from pathlib import Path

import streamlit as st

from core.studio import runs
from pages import _ui

ctx = _ui.context()
st.title("Brain-tuning")
ds = _ui.require_dataset(ctx)
st.markdown(
    "Fine-tune a speech model to predict this subject's fMRI responses (Moussa, Klakow & Toneva, "
    "ICLR 2025): per TR, 10 s of the story's audio → the model → mean over time → a linear head "
    "predicting the target voxels. Runs go on in the background (one heavy job at a time on this "
    "machine); you can leave the page and come back. **Cost on 2 CPU cores:** the demo preset on "
    "Whisper tiny.en takes about 4 minutes, a tiny random model about a minute; the paper preset "
    "is meant for a GPU (hours on a CPU).")

# -- launch -------------------------------------------------------------------------------------
MODELS = ["bundled:whisper-tiny.en", "random:whisper-tiny", "random:wav2vec2-tiny", "random:hubert-tiny"]
with st.form("tune-launch"):
    st.subheader(f"New run on {ctx.subject}")
    c1, c2, c3 = st.columns(3)
    model = c1.selectbox("Model", MODELS + ["other"], key="tune_model",
                         help="bundled: real Whisper weights; random: tiny untrained models (fast, for trying "
                              "the workflow); other: type any model spec below")
    typed = c1.text_input("Other model spec", key="tune_model_spec", placeholder="hf:facebook/wav2vec2-base")
    preset = c2.radio("Preset", list(runs.PRESET_NOTES), format_func=lambda p: runs.PRESET_NOTES[p].split(" — ")[0],
                      key="tune_preset", help="\n\n".join(runs.PRESET_NOTES.values()))
    lora = c2.radio("Fine-tuning", ["full", "LoRA"], key="tune_lora", horizontal=True,
                    help="full: every weight except the convolutional front end (paper); LoRA: r 8, alpha 32 "
                         "adapters on the attention projections (follow-up)") == "LoRA"
    control = c3.selectbox("Control", list(runs.CONTROLS), format_func=runs.CONTROLS.get, key="tune_control",
                           help="random-fMRI controls train on mismatched responses; the LM-tuned control on "
                                "word embeddings")
    epochs = c3.number_input("Epochs (0 = the preset's)", 0, 100, 0, key="tune_epochs")
    seed = c3.number_input("Seed", 0, 10_000, 0, key="tune_seed")
    targets = c2.text_input("Target voxels (blank = the preset's)", key="tune_targets",
                            placeholder="ceiling>0.4 | roi:semantic | roi:AC | top:500@RESULT_DIR",
                            help="which voxels the head predicts: noise ceiling above a threshold (paper), an "
                                 "ROI or ROI group, or the top-k voxels of the pretrained model's encoding")
    st.caption(runs.PRESET_NOTES[preset])
    submitted = st.form_submit_button("Start tuning", type="primary")
if submitted:
    spec = typed.strip() if model == "other" else model
    if not spec:
        st.error("Type a model spec for 'other' (e.g. hf:facebook/wav2vec2-base).")
    else:
        with _ui.shown_errors(stop=False):
            run = runs.launch_tune(ctx.data, ctx.subject, spec, preset, lora, control or None,
                                   int(epochs) or None, int(seed), targets)
            st.session_state["tune_selected"] = run.name
            st.rerun()

# -- runs ---------------------------------------------------------------------------------------
with _ui.shown_errors():
    all_runs = runs.tune_runs(ctx.data)
st.subheader("Runs on this dataset")
if not all_runs:
    st.info("No tuning run yet: start one above.")
    st.stop()
st.dataframe(runs.runs_table(all_runs), hide_index=True)
names = [r["name"] for r in all_runs]
if st.session_state.get("tune_selected") not in names:
    st.session_state["tune_selected"] = names[0]
name = st.selectbox("Run", names, key="tune_selected",
                    format_func=lambda n: next(f"{n} · {r['state']} · {r['subject']} · {r['model']}"
                                               f"{' · ' + r['control'] if r['control'] else ''}"
                                               for r in all_runs if r["name"] == n))
info = next(r for r in all_runs if r["name"] == name)
run = Path(info["run"])
if info["subject"] != ctx.subject:
    st.warning(f"This run was tuned on subject **{info['subject']}**, not {ctx.subject} (the sidebar's): "
               "its evaluation and comparison are for its own subject.")

# -- progress (polled) ----------------------------------------------------------------------------
from core.jobs import ACTIVE  # noqa: E402
from core.viz.charts import loss_chart  # noqa: E402


@st.fragment(run_every=_ui.POLL_S if info["state"] in ACTIVE else None)
def live():
    now = runs.run_info(run)
    if now["state"] != info["state"]:
        st.rerun(scope="app")
    if now["state"] == "queued":
        st.info(f"Waiting: {now['message']} (one heavy job runs at a time; this run starts when the slot is free)")
    elif now["state"] == "running":
        st.progress(float(now["fraction"]), text=f"{runs.progress_line(now)} — runs in the background")
    elif now["state"] == "failed":
        st.error(f"Run {name} stopped: {now['error']}")
    else:
        st.success(f"Run {name} finished · {runs.progress_line(now)}")
    steps, epochs_ = runs.loss_curves(run)
    if len(steps):
        st.altair_chart(loss_chart(steps, epochs_), width="stretch")
    elif now["state"] in ACTIVE:
        st.caption("The loss curve appears after the first optimiser step.")


live()

# -- actions ------------------------------------------------------------------------------------
a1, a2, a3 = st.columns(3)
if info["state"] in ACTIVE and a1.button("Cancel run", key="tune_cancel"):
    with _ui.shown_errors(stop=False):
        runs.cancel_run(run)
        st.rerun()
if info["state"] == "failed" and a1.button("Resume run", key="tune_resume",
                                           help="continue from the last epoch checkpoint with the same settings"):
    with _ui.shown_errors(stop=False):
        runs.resume_run(run)
        st.rerun()
if info["state"] not in ACTIVE and a3.button("Delete run…", key="tune_delete"):
    st.session_state["tune_confirm_delete"] = name
if st.session_state.get("tune_confirm_delete") == name:
    st.warning(f"Delete run {name} with its checkpoints and exported model? This cannot be undone.")
    y, n = st.columns(2)
    if y.button("Yes, delete it", key="tune_delete_yes", type="primary"):
        with _ui.shown_errors(stop=False):
            runs.delete_run(run)
            st.session_state.pop("tune_confirm_delete", None)
            st.session_state.pop("tune_selected", None)
            st.rerun()
    if n.button("Keep it", key="tune_delete_no"):
        st.session_state.pop("tune_confirm_delete", None)
        st.rerun()

# -- evaluation, export ---------------------------------------------------------------------------
if info["state"] == "done":
    st.subheader("Evaluation: tuned vs pretrained on the test story")
    with _ui.shown_errors():
        summary = runs.evaluation(run)
        if summary is None:
            st.caption("Encodes the tuned and the pretrained model (every layer) on the held-out story and "
                       "compares them voxel by voxel. Whisper tiny.en: about 5 minutes per model on 2 CPU "
                       "cores (the pretrained one is cached once computed).")
            mode = st.radio("Feature window mode", list(runs.EVAL_MODES), format_func=runs.EVAL_MODES.get,
                            key="tune_eval_mode", horizontal=True)
            _ui.job_panel(runs.evaluation_job(run, ctx.protocol, mode),
                          lambda: runs.launch_evaluation(run, ctx.protocol, mode), "the evaluation",
                          key=f"eval-{name}")
    if summary is not None:
        best = summary["layers"]["best"]
        st.caption(f"Best layers: pretrained **{best['layer_base']}**, tuned **{best['layer_other']}** · "
                   f"metric {summary['metric']} · protocol {summary['protocol']} · features "
                   f"{summary.get('feature_mode')} mode")
        st.dataframe(runs.evaluation_table(summary), hide_index=True)
        if st.button("Open in Compare", key="tune_open_compare"):
            st.session_state["compare_preselect"] = [summary["pretrained_result"], summary["tuned_result"]]
            st.switch_page("pages/compare.py")
    st.subheader("Exported model")
    card = runs.model_card(run)
    if card:
        st.caption(f"Use it anywhere as `{runs.checkpoint_spec(run)}` (also in the sidebar's model list), or "
                   "load it with `transformers.AutoModel.from_pretrained` on the `export/` folder.")
        st.download_button("Download the model folder (zip)", file_name=f"{name}-export.zip",
                           mime="application/zip", data=lambda: runs.export_zip(run), key="tune_zip")
        with st.expander("Model card"):
            st.markdown(card)
_ui.cli_hint(runs.cli_tune_command(info))
