"""The ``tune`` pipeline: Dataset + model spec → brain-tuned checkpoint (``out_dir/export``).

Stages: open the dataset → select target voxels (``params.targets``,
:func:`core.tuning.targets.select_targets`) → :class:`~core.tuning.samples.TuningData` (training
stories; the validation story; never the test story) → optional control (random-fMRI: a transform of
the training targets; representation: another feature space's targets, :func:`apply_control`) →
:class:`~core.tuning.model.BrainTuningModel` → with ``head_init="ridge"`` a ridge head fitted on the
pretrained pooled features (:func:`core.tuning.heads.init_ridge_head`; skipped on resume, the
checkpoint holds the head) → :func:`core.tuning.trainer.train` → :func:`core.tuning.export.export`.

The run folder ``out_dir`` holds ``run.json`` (data, subject, model, control — a resume must match
them), ``status.json`` (``state`` running / done / failed, with ``error``), ``metrics.jsonl``,
``checkpoints/`` and ``export/``, and ``summary.json`` (the returned summary) at the end.

Controls: :mod:`core.tuning.controls`. The ``stimulus`` control replaces the middle stages: no
target selection and no responses read; :func:`core.tuning.stimulus_data.stimulus_data` (the same
clips) → :class:`core.tuning.stimulus.StimulusModel` (the model's own objective; ``prepare`` adds
its labels: Whisper transcript tokens, HuBERT MFCC k-means ids) → the same trainer and export.

Under ``torchrun --nproc_per_node=N`` / ``accelerate launch`` every process runs this function (DDP,
see :mod:`core.tuning.trainer`); only the main process writes ``run.json``, ``status.json``,
``export/`` and ``summary.json``, and every process returns the same summary.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional


from core.errors import ConfigError, StudioError
from core.progress import ProgressFn, report, sub_progress
from core.tuning.controls import (REPRESENTATION, STIMULUS, apply_control, parse_control,
                                  representation_source)


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` looks like a tuning run folder (run.json or status.json)."""
    return (path / "run.json").exists() or (path / "status.json").exists()


def _check_out(out: Path, resume: bool, run_info: dict) -> None:
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a run folder; give a new folder")
    if not is_run_dir(out):
        raise ConfigError(f"--out {out} exists and is not a tuning run folder (no run.json / status.json); "
                          "give a new or empty folder")
    if not resume:
        raise ConfigError(f"--out {out} already holds a tuning run; pass --resume to continue it or "
                          "give a new folder")
    try:
        saved = json.loads((out / "run.json").read_text())
    except (OSError, ValueError):
        return
    for k, v in run_info.items():
        if saved.get(k) != v:
            raise ConfigError(f"cannot resume: {k} was {saved.get(k)!r} in the saved run, now {v!r}; "
                              "use the same settings or a new --out folder")


def _stimulus_setup(ds, subject: str, model_spec: str, p, device):
    """``(data, model, voxels, selection report, control report)`` of the stimulus control."""
    import numpy as np

    from core.tuning.stimulus import StimulusModel
    from core.tuning.stimulus_data import stimulus_data

    data = stimulus_data(ds, subject, p.delays, p.shift_s)
    model = StimulusModel.from_spec(model_spec, device=device, seed=p.seed, whisper_input=p.whisper_input)
    ctl = {"control": STIMULUS, "kind": STIMULUS, **model.prepare(data, ds)}
    sel = {"criterion": None, "n_selected": 0, "note": "stimulus control: no voxel targets"}
    return data, model, np.zeros(0, np.int64), sel, ctl


def tune(data_spec: str, subject: str, model_spec: str, out_dir, params=None, preset: str = "demo",
         control: Optional[str] = None, resume: bool = False, progress: ProgressFn = None,
         stop_after: Optional[int] = None, device: Optional[str] = None) -> dict:
    """Brain-tune ``model_spec`` on ``subject`` of ``data_spec``; return the run summary.

    Parameters
    ----------
    data_spec : ``demo``, ``ds003020:<path>``, …  subject : e.g. ``S1``, ``UTS01``.
    model_spec : ``random:``, ``hf:``, ``bundled:`` model spec.
    out_dir : the run folder (new, empty, or an existing run with ``resume=True``).
    params : :class:`TuneParams`, or a dict of overrides of ``preset``, or None (the preset).
    preset : ``demo`` | ``paper`` (:func:`core.tuning.params.preset`).
    control : None, ``random-story``, ``chunk-shuffle``, ``stimulus`` (the model's own
        self-supervised loss, no voxel targets: ``n_voxels`` = ``n_targets`` = 0) or
        ``representation:<feature spec>[#<layer>]`` (:mod:`core.tuning.controls`; a representation
        control's targets are ``n_targets`` features).
    resume : continue the run in ``out_dir`` (same parameters).
    stop_after : end after this many epochs (interruption; None = all). device : torch device.

    Returns
    -------
    dict : ``out``, ``export``, ``data``, ``subject``, ``model``, ``control``, ``n_voxels`` (selected),
    ``n_targets`` (head outputs), ``targets`` (selection report), ``control_report``, ``head_report``
    (``params.head_init``; for ``ridge`` the :func:`core.tuning.heads.ridge_head` report), ``n_train``, ``n_val``, ``train_stories``,
    ``val_stories``, the trainer's numbers (``epochs_run``, ``steps``, ``best_epoch``, ``best_val``,
    ``last_train_loss``, ``stopped_early``, ``resumed_from``, ``n_trainable``) and ``seconds``.
    """
    from core.data import load_dataset
    from core.jobs.runner import write_status
    from core.models import model_info
    from core.tuning import BrainTuningModel, TuneParams, TuningData, select_targets
    from core.tuning import preset as make_preset
    from core.tuning.export import export
    from core.tuning.heads import init_ridge_head
    from core.tuning.checkpoints import latest_checkpoint
    from core.tuning.trainer import is_main_process, train, wait_for_everyone

    if isinstance(params, TuneParams):
        p = params
    else:
        p = make_preset(preset, **dict(params or {}))
    ctl_spec = parse_control(control)
    if ctl_spec is not None and ctl_spec["kind"] == REPRESENTATION:  # a bad spec/layer fails here
        representation_source(ctl_spec["spec"], ctl_spec["layer"], data_spec)
    stimulus = ctl_spec is not None and ctl_spec["kind"] == STIMULUS
    out = Path(out_dir).expanduser()
    run_info = {"data": data_spec, "subject": subject, "model": model_spec, "control": control}
    main = is_main_process()  # one process of a distributed launch writes the run's files
    _check_out(out, resume, run_info)
    wait_for_everyone()  # every process has checked --out before the main process writes into it
    minfo = model_info(model_spec)  # a spec that does not exist fails here, before any data is read
    if stimulus:
        from core.tuning.stimulus import check_family

        check_family(minfo.family, model_spec)
        if p.head_init != "zeros":
            raise ConfigError(f"head_init={p.head_init!r} does not apply to the stimulus control (it has no "
                              "voxel head); drop --head-init")
    t0 = time.time()
    ds = load_dataset(data_spec, progress=sub_progress(progress, 0.0, 0.05))
    resuming = bool(resume) and latest_checkpoint(out) is not None
    if stimulus:
        data, model, voxels, sel, ctl = _stimulus_setup(ds, subject, model_spec, p, device)
        ridge = False
    else:
        voxels, sel = select_targets(ds, subject, p.targets)
        data = TuningData.build(ds, subject, voxels, p.delays, p.shift_s)
        ctl = apply_control(data, control, p.seed, dataset=ds, progress=sub_progress(progress, 0.05, 0.06))
    n_out = int(data.report["n_voxels"])  # voxels, or a representation control's feature count
    report(progress, 0.06, f"{n_out} targets ({len(voxels)} voxels selected), "
                           f"{len(data.train)} training samples")
    if not stimulus:
        ridge = p.head_init == "ridge"
        # a ridge head is fitted after construction (zeros until then); a resumed run loads its head
        model = BrainTuningModel.from_spec(model_spec, n_out, device=device,
                                           head_init="zeros" if ridge else p.head_init,
                                           seed=p.seed, whisper_input=p.whisper_input)
    out.mkdir(parents=True, exist_ok=True)
    if main:
        (out / "run.json").write_text(json.dumps({**run_info, "preset": preset}, indent=1))
        write_status(out, state="running", fraction=0.0, message="ridge head" if ridge and not resuming
                     else "training", error=None, started=t0)
    try:
        head_report = {"head_init": None if stimulus else p.head_init}
        train_from = 0.06
        if ridge and resuming:
            head_report["ridge"] = "not refitted: the head is loaded from the resumed checkpoint"
        elif ridge:
            train_from = 0.2
            head_report = init_ridge_head(model, data.train, progress=sub_progress(progress, 0.06, 0.2),
                                          seed=p.seed)
            if main:
                write_status(out, state="running", message="training")
        res = train(out, model, data, p, progress=sub_progress(progress, train_from, 0.95), resume=resume,
                    stop_after=stop_after)
        finished = res["epochs_run"] >= p.epochs or res["stopped_early"]
        summary = {"out": str(out), "export": None, **run_info, "n_voxels": int(len(voxels)),
                   "n_targets": n_out, "targets": sel, "control_report": ctl, "head_report": head_report,
                   **{k: data.report[k] for k in ("n_train", "n_val", "train_stories", "val_stories")},
                   **res, "params": p.to_dict()}
        if finished:
            report(progress, 0.96, "exporting")
            path = out / "export"
            if main:
                path = export(out, model, p, {**run_info, "targets": sel, "control_report": ctl,
                                              "head_report": head_report,
                                              "val_loss": res["best_val"], "best_epoch": res["best_epoch"],
                                              "data_report": data.report})
            summary["export"] = str(path)
        summary["seconds"] = time.time() - t0
        if main:
            (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
        wait_for_everyone()  # the export and summary exist when any process returns
    except StudioError as err:
        if main:
            write_status(out, state="failed", error=str(err), message="failed")
        raise
    except BaseException as err:
        if main:
            write_status(out, state="failed", error=f"internal error: {type(err).__name__}: {err}",
                         message="failed")
        raise
    if main and finished:
        write_status(out, state="done", fraction=1.0, message="done", result=summary["export"])
    elif main:
        write_status(out, state="failed", message="stopped",
                     error=f"stopped after epoch {res['epochs_run']} of {p.epochs}; resume to continue")
    report(progress, 1.0, "done")
    return summary
