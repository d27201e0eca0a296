"""Brain-tuning runs for the app: launch, list, follow, cancel, resume, delete, evaluate, export.

A run the app starts is a ``tune`` job (:mod:`core.jobs`): its job folder ``<runs_root>/tune-<key>/``
holds the job's ``status.json``/``log.txt`` and the tuning run itself in ``tune/`` (the ``--out`` of
``python -m core tune``: ``run.json``, ``status.json`` with epoch / step / samples/s / ETA,
``metrics.jsonl``, ``checkpoints/``, ``export/``, after evaluation ``evaluation/``). Every function
takes the job folder. Nothing here computes: it reads run folders and starts jobs.
"""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path
from typing import Optional

import pandas as pd

from core.errors import ConfigError, JobError

PRESET_NOTES = {
    "demo": "demo — measured on the simulated brain: semantic-ROI targets, head lr 1e-3, constant lr, "
            "3 epochs, batch 16, top 2 layers, bf16 where native (~4 min on 2 CPU cores; the paper's settings "
            "made the demo's semantic voxels worse)",
    "paper": "paper — the paper's defaults for real data: ceiling > 0.4 targets, head lr 1e-4, warm-up "
             "+ decay, 30 epochs, batch 128, early stopping (hours on a CPU)",
}
CONTROLS = {"": "none (brain-tuned)", "random-story": "random-story (another story's fMRI)",
            "chunk-shuffle": "chunk-shuffle (15-TR chunks swapped)",
            "representation:semantic:minilm": "LM-tuned (MiniLM word embeddings as targets)"}


def tune_dir(run: Path) -> Path:
    """The tuning run folder (``--out``) inside a job folder."""
    return Path(run) / "tune"


def launch_tune(data: str, subject: str, model: str, preset: str = "demo", lora: bool = False,
                control: Optional[str] = None, epochs: Optional[int] = None, seed: int = 0,
                targets: Optional[str] = None) -> Path:
    """Start (or join: the same settings are the same run) a background tuning job; its folder.

    The settings are checked here (a bad preset / epochs / targets / control is a ConfigError at
    once, not a failed job); data, subject and model are checked by the job itself."""
    from core.jobs import start_job
    from core.tuning.controls import parse_control
    from core.tuning.params import PRESETS, preset as make_params

    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    overrides = {"seed": int(seed)}
    if epochs:
        overrides["epochs"] = int(epochs)
    if lora:
        overrides["lora"] = True
    if targets and targets.strip():
        overrides["targets"] = targets.strip()
    make_params(preset, **overrides).validate()
    if control:
        parse_control(control)
    params = {"data": data, "subject": subject, "model": model, "preset": preset,
              "params": overrides, "control": control or None, "resume": False}
    return start_job("tune", params)


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def run_info(run: Path) -> dict:
    """One run: the job's status (``state``, ``message``, ``error``, ``params``) merged with the
    trainer's (``epoch``, ``step``, ``samples_per_s``, ``eta_s``) and the evaluation's state."""
    from core.jobs import job_status

    run = Path(run)
    status = job_status(run)
    trainer = _read(tune_dir(run) / "status.json")
    p = status.get("params", {})
    info = {"run": str(run), "name": run.name, "state": status["state"], "message": status.get("message"),
            "error": status.get("error") or trainer.get("error"), "fraction": status.get("fraction") or 0.0,
            "data": p.get("data"), "subject": p.get("subject"), "model": p.get("model"),
            "preset": p.get("preset"), "control": p.get("control") or "", "params": p.get("params", {}),
            "epoch": trainer.get("epoch"), "step": trainer.get("step"),
            "samples_per_s": trainer.get("samples_per_s"), "eta_s": trainer.get("eta_s"),
            "exported": (tune_dir(run) / "export").is_dir() and status["state"] == "done"}
    jobs = [j for j in (evaluation_job(run, mode=m) for m in EVAL_MODES) if j]
    ev = next((j for j in jobs if j["state"] != "done"), jobs[0] if jobs else None)
    info["evaluation"] = ev["state"] if ev else ("done" if (tune_dir(run) / "evaluation" / "summary.json").exists()
                                                 else None)
    return info


def tune_runs(data: Optional[str] = None, subject: Optional[str] = None) -> list:
    """The app's tuning runs (newest first), optionally only those of ``data`` / ``subject``."""
    from core.jobs import list_jobs

    out = []
    for j in list_jobs("tune"):
        info = run_info(Path(j["run_dir"]))
        if (data is None or info["data"] == data) and (subject is None or info["subject"] == subject):
            out.append(info)
    return out


def runs_table(runs: list) -> pd.DataFrame:
    """One row per run for the page's table."""
    rows = [{"run": r["name"], "state": r["state"], "subject": r["subject"], "model": r["model"],
             "preset": r["preset"], "control": r["control"] or "none",
             "lora": bool(r["params"].get("lora")), "seed": r["params"].get("seed"),
             "epoch": None if r["epoch"] is None else r["epoch"] + 1,  # 1-based, as the progress line
             "evaluated": r["evaluation"] == "done"} for r in runs]
    return pd.DataFrame(rows, columns=["run", "state", "subject", "model", "preset", "control", "lora",
                                       "seed", "epoch", "evaluated"])


def progress_line(info: dict) -> str:
    """``epoch 2 · step 40 · 3.1 samples/s · ETA 1 min 20 s`` (what is known so far)."""
    parts = []
    if info.get("epoch") is not None:
        parts.append(f"epoch {info['epoch'] + 1}")
    if info.get("step") is not None:
        parts.append(f"step {info['step']}")
    if info.get("samples_per_s"):
        parts.append(f"{info['samples_per_s']:.1f} samples/s")
    if info.get("eta_s") is not None and info["state"] == "running":
        m, s = divmod(int(round(info["eta_s"])), 60)
        parts.append(f"ETA {m} min {s:02d} s" if m else f"ETA {s} s")
    return " · ".join(parts) or (info.get("message") or info["state"])


def loss_curves(run: Path) -> tuple:
    """``(steps, epochs)`` DataFrames from the run's metrics: steps ``step, loss, epoch`` (training
    loss per optimiser step) and epochs ``epoch, split, loss`` (train / validation per epoch)."""
    from core.jobs import read_metrics

    path = tune_dir(run)
    records = read_metrics(path) if (path / "metrics.jsonl").exists() else []
    steps = pd.DataFrame([{"step": r["step"], "loss": r["loss"], "epoch": r["epoch"]}
                          for r in records if r.get("kind") == "step"], columns=["step", "loss", "epoch"])
    rows = []
    for r in records:
        if r.get("kind") == "epoch":
            for split, key in (("train", "train_loss"), ("validation", "val_loss")):
                if r.get(key) is not None:
                    rows.append({"epoch": r["epoch"] + 1, "split": split, "loss": r[key]})
    return steps, pd.DataFrame(rows, columns=["epoch", "split", "loss"])


def _job_key(run: Path) -> str:
    job = _read(Path(run) / "job.json")
    if job.get("kind") != "tune" or "key" not in job:
        raise JobError(f"{run} is not a tuning run of the app (no tune job.json); pick a run from the list")
    return job["key"]


def cancel_run(run: Path) -> dict:
    """Stop a queued/running tuning job (its last epoch checkpoint stays: it can be resumed)."""
    from core.jobs import cancel_job

    _job_key(run)
    return cancel_job(Path(run))


def resume_run(run: Path) -> Path:
    """Continue a stopped run from its last checkpoint (same settings; ``tune --resume``)."""
    from core.jobs import job_status, start_job

    key, status = _job_key(run), job_status(Path(run))
    if status["state"] != "failed":
        raise JobError(f"run {Path(run).name} is {status['state']}; only a stopped or failed run can be resumed")
    params = dict(status["params"], resume=(tune_dir(run) / "run.json").exists())
    return start_job("tune", params, key=key)


def delete_run(run: Path) -> None:
    """Delete a finished or stopped run folder (its checkpoints and export). Refused while it runs."""
    from core.jobs import ACTIVE, job_status

    run = Path(run)
    _job_key(run)
    if job_status(run)["state"] in ACTIVE:
        raise JobError(f"run {run.name} is still running; cancel it before deleting it")
    if any(j and j["state"] in ACTIVE for j in (evaluation_job(run, mode=m) for m in EVAL_MODES)):
        raise JobError(f"run {run.name} is being evaluated; wait for the evaluation or cancel it first")
    shutil.rmtree(run)


# -- evaluation ---------------------------------------------------------------------------------

EVAL_MODES = {None: "the dataset's default (fast on the demo, the paper's elsewhere)",
              "fast": "fast (1 s windows; minutes on a CPU)", "paper": "paper (16 s windows every 0.1 s; slow on a CPU)"}


def _evaluate_params(run: Path, protocol: str, mode: Optional[str]) -> dict:
    return {"run": str(tune_dir(run)), "protocol": protocol, "mode": mode}


def launch_evaluation(run: Path, protocol: str = "project", mode: Optional[str] = None) -> Path:
    """Start (or join) the job that encodes the tuned and the pretrained model on the test story
    and compares them (``python -m core evaluate-run [--mode]``); ``mode`` = the layer-feature
    window mode (:data:`EVAL_MODES`)."""
    from core.jobs import job_status, start_job

    if mode not in EVAL_MODES:
        raise ConfigError(f"unknown feature window mode {mode!r}; choose fast or paper")
    if job_status(Path(run))["state"] != "done":
        raise JobError(f"run {Path(run).name} has not finished; evaluate it once it is done")
    return start_job("evaluate", _evaluate_params(run, protocol, mode))


def evaluation_job(run: Path, protocol: str = "project", mode: Optional[str] = None) -> Optional[dict]:
    """Status of the run's evaluation job (with these settings), if one was started."""
    from core.jobs import job_dir, job_status
    from core.jobs.kinds import job_key

    folder = job_dir("evaluate", job_key("evaluate", _evaluate_params(run, protocol, mode)))
    return job_status(folder) if (folder / "status.json").exists() else None


def evaluation(run: Path) -> Optional[dict]:
    """The run's evaluation summary (``evaluation/summary.json``), None before it exists."""
    path = tune_dir(run) / "evaluation" / "summary.json"
    return _read(path) if path.exists() else None


def evaluation_table(summary: dict, layer: str = "best") -> pd.DataFrame:
    """Regions (ROI groups, planted types on the demo) at ``layer``: pretrained vs tuned mean,
    mean Δ, share improved, Wilcoxon p."""
    rows = summary["layers"].get(layer, {}).get("regions", {})
    return pd.DataFrame([{"region": k, "pretrained": v["mean_a"], "tuned": v["mean_b"], "Δ": v["mean_delta"],
                          "share improved": v["share_improved"], "Wilcoxon p": v["wilcoxon_p"],
                          "n_voxels": v["n_voxels"]} for k, v in rows.items()])


# -- export -------------------------------------------------------------------------------------

def export_dir(run: Path) -> Path:
    return tune_dir(run) / "export"


def model_card(run: Path) -> Optional[str]:
    """The exported model card (README.md with YAML metadata), None before export."""
    path = export_dir(run) / "README.md"
    return path.read_text() if path.exists() else None


def export_zip(run: Path) -> bytes:
    """The exported model folder (HF model, head, model card) as zip bytes."""
    from core.studio.results import viewer_zip

    if not export_dir(run).is_dir():
        raise JobError(f"run {Path(run).name} has no export yet; it appears when the run finishes")
    return viewer_zip(export_dir(run))


def checkpoint_spec(run: Path) -> str:
    """The ``ckpt:`` model spec of the run's tuned model (usable in every command and the sidebar)."""
    return f"ckpt:{tune_dir(run)}"


def cli_tune_command(info: dict) -> str:
    """The CLI call that reproduces a run (its own ``--out`` folder)."""
    cmd = ["python", "-m", "core", "tune", "--data", info["data"], "--subject", info["subject"],
           "--model", info["model"], "--preset", info["preset"] or "demo", "--out", "RUN_DIR"]
    p = info.get("params") or {}
    if p.get("epochs"):
        cmd += ["--epochs", str(p["epochs"])]
    if p.get("seed") is not None:
        cmd += ["--seed", str(p["seed"])]
    if p.get("lora"):
        cmd.append("--lora")
    if p.get("targets"):
        cmd += ["--targets", p["targets"]]
    if info.get("control"):
        cmd += ["--control", info["control"]]
    return shlex.join(cmd) + "\npython -m core evaluate-run RUN_DIR"


# -- the Learn page's view of several runs ---------------------------------------------------------

LEARN_REGIONS = ("planted:semantic", "planted:acoustic", "semantic", "auditory")  #: demo truth first


def run_label(info: dict) -> str:
    """``whisper-tiny.en · tuned · seed 0`` / ``… · random-story control · seed 1``."""
    model = (info.get("model") or "?").split(":")[-1]
    kind = f"{info['control']} control" if info.get("control") else "brain-tuned"
    lora = " · LoRA" if (info.get("params") or {}).get("lora") else ""
    return f"{model} · {kind}{lora} · seed {(info.get('params') or {}).get('seed', 0)}"


def gain_table(infos: list, regions=LEARN_REGIONS, layer: str = "best") -> pd.DataFrame:
    """Mean Δ cc_norm (tuned − pretrained) per region for each evaluated run, in
    :func:`core.viz.charts.roi_bar_chart`'s format (``roi``, ``group`` = run label, ``value``,
    ``n_voxels``); plus ``pretrained``, ``tuned`` means and ``wilcoxon_p``."""
    rows = []
    for info in infos:
        summary = evaluation(Path(info["run"]))
        if summary is None:
            continue
        table = summary["layers"].get(layer, {}).get("regions", {})
        for region in regions:
            v = table.get(region)
            if v is not None:
                rows.append({"roi": region, "group": run_label(info), "value": v["mean_delta"],
                             "pretrained": v["mean_a"], "tuned": v["mean_b"], "wilcoxon_p": v["wilcoxon_p"],
                             "n_voxels": v["n_voxels"]})
    return pd.DataFrame(rows, columns=["roi", "group", "value", "pretrained", "tuned", "wilcoxon_p", "n_voxels"])
