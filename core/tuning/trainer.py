"""The brain-tuning training loop on ``accelerate`` (+ ``peft`` LoRA), resumable.

:func:`train` fits a :class:`~core.tuning.model.BrainTuningModel` on the training samples of a
:class:`~core.tuning.samples.TuningData` (the validation story only for the per-epoch validation
loss; the test story is never read). Run folder layout (``run_dir``):

- ``metrics.jsonl`` — one ``{"kind": "step", "epoch", "step", "loss", "lr_backbone", "lr_head",
  "samples_per_s"}`` record per optimiser step, one ``{"kind": "epoch", "epoch", "train_loss",
  "val_loss"}`` per epoch (``core.jobs.append_metric``); a resumed run appends ``{"kind": "resume"}``
  and repeats the steps of the epoch that was interrupted.
- ``status.json`` — ``state`` running, ``epoch``, ``step``, ``samples_per_s``, ``eta_s`` (s),
  ``fraction`` (``core.jobs.runner.write_status``).
- ``checkpoints/epoch-NNN/`` — ``accelerator.save_state`` (model as safetensors, optimiser,
  scheduler, RNG states) plus ``state.json`` ``{epoch, step, best_epoch, best_val, bad_epochs,
  params}``, written last: a folder holding ``state.json`` is complete. The latest
  :data:`KEEP_LAST` are kept.
- ``checkpoints/best/model.safetensors`` — weights (backbone or LoRA-wrapped backbone + head) of the
  epoch with the lowest validation loss, with its ``state.json``.

Optimisation: micro-batches of ``params.micro_batch`` samples, ``params.grad_accum`` of them per
optimiser step (the last step of an epoch takes the leftover micro-batches; the loss is weighted so
every step averages its samples). The epoch's sample order is a permutation drawn from a
``torch.Generator`` seeded with ``seed + epoch``, so a resumed run sees the same order. Under
``accelerate launch`` / ``torchrun`` each process takes every ``num_processes``-th sample of it.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Optional

import torch

from core.errors import ConfigError, DataError
from core.progress import ProgressFn, report
from core.tuning.losses import get_loss
from core.tuning.schedule import build_optimizer

KEEP_LAST = 2  #: epoch checkpoints kept (the best one is kept apart)
WAV2VEC2_ATTENTION = ("q_proj", "k_proj", "v_proj", "out_proj")


# --------------------------------------------------------------------------- LoRA
def apply_lora(model, params) -> list:
    """Wrap ``model.backbone`` with a peft LoRA adapter (``params.lora_*``); returns the names of the
    adapted modules. Every backbone weight but the adapters is frozen; the head stays trainable.

    Raises ConfigError when a target name matches no module of the backbone (Whisper, wav2vec2 and
    HuBERT name their attention projections ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``).
    """
    from peft import LoraConfig, get_peft_model

    names = [n for n, _ in model.backbone.named_modules()]
    for t in params.lora_targets:
        if not any(n == t or n.endswith("." + t) for n in names):
            raise ConfigError(f"LoRA target {t!r} matches no module of the {model.family} backbone; "
                              f"use its attention projections, e.g. {','.join(WAV2VEC2_ATTENTION)}")
    cfg = LoraConfig(r=params.lora_r, lora_alpha=params.lora_alpha, lora_dropout=params.lora_dropout,
                     target_modules=list(params.lora_targets))
    model.backbone = get_peft_model(model.backbone, cfg)
    return [n for n in names if n.split(".")[-1] in params.lora_targets]


def is_lora(model) -> bool:
    """Whether ``model.backbone`` is a peft model."""
    return hasattr(model.backbone, "peft_config")


# --------------------------------------------------------------------------- checkpoints
def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def latest_checkpoint(run_dir: Path) -> Optional[Path]:
    """The complete ``checkpoints/epoch-NNN`` folder with the highest epoch (None when none)."""
    root = checkpoint_dir(run_dir)
    done = sorted(p for p in root.glob("epoch-[0-9][0-9][0-9]") if (p / "state.json").exists()) \
        if root.exists() else []
    return done[-1] if done else None


def read_state(ckpt: Path) -> dict:
    """``state.json`` of a checkpoint folder (DataError when unreadable)."""
    path = Path(ckpt) / "state.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"checkpoint state {path} is unreadable ({err}); delete that checkpoint folder "
                        "and resume again") from None


def check_same_params(saved: dict, params) -> None:
    """ConfigError naming the first parameter whose value differs from the saved run's."""
    now = params.to_dict()
    for name in sorted(set(saved) | set(now)):
        if saved.get(name) != now.get(name):
            raise ConfigError(f"cannot resume: parameter {name} was {saved.get(name)!r} in the saved run, "
                              f"now {now.get(name)!r}; use the same parameters or a new --out folder")


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


def save_weights(model, folder: Path) -> None:
    """Weights of ``model`` (backbone + head) as ``folder/model.safetensors``."""
    from safetensors.torch import save_model

    folder.mkdir(parents=True, exist_ok=True)
    save_model(model, str(folder / "model.safetensors"))


def load_weights(model, folder: Path) -> None:
    """Inverse of :func:`save_weights` (strict)."""
    from safetensors.torch import load_model

    load_model(model, str(Path(folder) / "model.safetensors"), device=str(model.device))


# --------------------------------------------------------------------------- training
def _accelerator(params):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    # one process may train several times (tests, the app's worker): the singletons keep the first
    # run's mixed precision / accumulation otherwise. The distributed PartialState is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    return Accelerator(mixed_precision="bf16" if params.precision == "bf16" else "no",
                       gradient_accumulation_steps=params.grad_accum,
                       cpu=not torch.cuda.is_available())


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """Sample order of ``epoch``: a permutation of ``n`` from a generator seeded ``seed + epoch``."""
    g = torch.Generator()
    g.manual_seed(int(seed) + int(epoch))
    return torch.randperm(n, generator=g)


def _batches(order, micro: int):
    return [order[i:i + micro] for i in range(0, len(order), micro)]


def _collate(split, idx):
    xs, ys = zip(*(split[int(j)] for j in idx))
    return torch.stack(xs), torch.stack(ys)


def evaluate(model, split, params, accelerator=None) -> float:
    """Mean loss over ``split`` (every sample weighted alike), eval mode, no gradients."""
    loss_fn = get_loss(params.loss, weight=params.cosine_l2_weight) if params.loss == "cosine_l2" \
        else get_loss(params.loss)
    was = model.training
    model.eval()
    total, n = 0.0, 0
    try:
        with torch.no_grad():
            for idx in _batches(torch.arange(len(split)), params.micro_batch):
                x, y = _collate(split, idx)
                ctx = accelerator.autocast() if accelerator is not None else _null()
                with ctx:
                    pred = model(x)
                total += float(loss_fn(pred.float(), y.to(pred.device))) * len(idx)
                n += len(idx)
    finally:
        model.train(was)
    return total / max(n, 1)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def train(run_dir, model, data, params, progress: ProgressFn = None, resume: bool = False,
          stop_after: Optional[int] = None) -> dict:
    """Brain-tune ``model`` on ``data`` with ``params``; checkpoints and metrics under ``run_dir``.

    Parameters
    ----------
    run_dir : run folder (created). model : :class:`BrainTuningModel` (its ``n_voxels`` must equal
        ``data``'s). data : :class:`TuningData`. params : :class:`TuneParams`; with
        ``params.lora`` the backbone is wrapped with LoRA first (:func:`apply_lora`).
    progress : ``progress(fraction, message)`` after every optimiser step (may raise to stop).
    resume : continue from the latest complete checkpoint (model, optimiser, scheduler, RNG, epoch
        and step counters, data order); refused (ConfigError) when its params differ.
    stop_after : end after this many epochs in total (an interruption, e.g. for tests); None = all.

    Returns
    -------
    dict : ``epochs_run``, ``steps``, ``best_epoch``, ``best_val``, ``last_train_loss``,
    ``stopped_early``, ``resumed_from`` (epoch or None), ``n_trainable``, ``n_frozen``. The model
    holds the **best** epoch's weights on return.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    from core.jobs.runner import append_metric, write_status

    if model.n_voxels != data.report["n_voxels"]:
        raise ConfigError(f"the model head predicts {model.n_voxels} voxels, the data has "
                          f"{data.report['n_voxels']}; build the model for this selection")
    if len(data.train) < 1 or len(data.val) < 1:
        raise ConfigError(f"tuning needs training and validation samples; got {len(data.train)} and "
                          f"{len(data.val)}; add stories")

    start_epoch, step, best_epoch, best_val, bad = 0, 0, None, math.inf, 0
    latest = latest_checkpoint(run_dir) if resume else None
    if resume and latest is not None:
        saved = read_state(latest)
        check_same_params(saved.get("params", {}), params)
    elif resume and (run_dir / "metrics.jsonl").exists():
        pass  # interrupted before the first checkpoint: start over
    if params.lora and not is_lora(model):
        apply_lora(model, params)

    accelerator = _accelerator(params)
    n_proc, rank = accelerator.num_processes, accelerator.process_index
    micro_per_epoch = math.ceil(len(range(rank, len(data.train), n_proc)) / params.micro_batch)
    steps_per_epoch = math.ceil(micro_per_epoch / params.grad_accum)
    backbone_params, head_params = model.parameter_groups()
    optimizer, scheduler = build_optimizer(backbone_params, head_params, params, steps_per_epoch)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    inner = accelerator.unwrap_model(model)
    loss_fn = get_loss(params.loss, weight=params.cosine_l2_weight) if params.loss == "cosine_l2" \
        else get_loss(params.loss)

    resumed_from = None
    if latest is not None:
        accelerator.load_state(str(latest))
        saved = read_state(latest)
        start_epoch, step = int(saved["epoch"]) + 1, int(saved["step"])
        best_epoch, bad = saved.get("best_epoch"), int(saved.get("bad_epochs", 0))
        best_val = math.inf if saved.get("best_val") is None else float(saved["best_val"])
        resumed_from = int(saved["epoch"])
        if accelerator.is_main_process:
            append_metric(run_dir, {"kind": "resume", "epoch": resumed_from, "step": step})

    n_trainable = sum(p.numel() for p in inner.parameters() if p.requires_grad)
    n_frozen = sum(p.numel() for p in inner.parameters() if not p.requires_grad)
    last_epoch = params.epochs if stop_after is None else min(params.epochs, int(stop_after))
    total_steps = steps_per_epoch * params.epochs
    main = accelerator.is_main_process
    t0, steps_here, samples_here = time.time(), 0, 0
    last_train, stopped_early, epoch = None, False, start_epoch - 1
    model.train()
    for epoch in range(start_epoch, last_epoch):
        order = epoch_order(len(data.train), params.seed, epoch)[rank::n_proc]
        micro = _batches(order, params.micro_batch)
        groups = [micro[i:i + params.grad_accum] for i in range(0, len(micro), params.grad_accum)]
        ep_loss, ep_n = 0.0, 0
        for group in groups:
            n_step = sum(len(b) for b in group)
            step_loss = 0.0
            for k, idx in enumerate(group):
                x, y = _collate(data.train, idx)
                sync = k == len(group) - 1
                ctx = _null() if sync or n_proc == 1 else accelerator.no_sync(model)
                with ctx:
                    with accelerator.autocast():
                        pred = model(x)
                    loss = loss_fn(pred.float(), y.to(pred.device))
                    # accelerator.backward divides by grad_accum: weight so the step averages samples
                    accelerator.backward(loss * (len(idx) / n_step) * params.grad_accum)
                step_loss += float(loss.detach()) * len(idx) / n_step
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            steps_here += 1
            samples_here += n_step * n_proc
            ep_loss += step_loss * n_step
            ep_n += n_step
            elapsed = max(time.time() - t0, 1e-9)
            sps = samples_here / elapsed
            eta = (total_steps - step) * elapsed / steps_here
            lrs = scheduler.get_last_lr()
            if main:
                append_metric(run_dir, {"kind": "step", "epoch": epoch, "step": step, "loss": step_loss,
                                        "lr_backbone": lrs[0], "lr_head": lrs[1], "samples_per_s": sps})
                write_status(run_dir, state="running", epoch=epoch, step=step, samples_per_s=sps,
                             eta_s=eta, fraction=step / total_steps,
                             message=f"epoch {epoch + 1}/{params.epochs} step {step}")
            report(progress, step / total_steps, f"epoch {epoch + 1}/{params.epochs} loss {step_loss:.4f}")
        last_train = ep_loss / max(ep_n, 1)
        val = evaluate(inner, data.val, params, accelerator)
        improved = val < best_val
        if improved:
            best_val, best_epoch, bad = val, epoch, 0
        else:
            bad += 1
        state = {"epoch": epoch, "step": step, "best_epoch": best_epoch,
                 "best_val": None if not math.isfinite(best_val) else best_val, "bad_epochs": bad,
                 "train_loss": last_train, "val_loss": val, "params": params.to_dict()}
        if main:
            append_metric(run_dir, {"kind": "epoch", "epoch": epoch, "train_loss": last_train,
                                    "val_loss": val})
            if improved:
                best = checkpoint_dir(run_dir) / "best"
                tmp = checkpoint_dir(run_dir) / "best.tmp"
                shutil.rmtree(tmp, ignore_errors=True)
                save_weights(inner, tmp)
                _write_json(tmp / "state.json", state)
                shutil.rmtree(best, ignore_errors=True)
                tmp.rename(best)
        _save_checkpoint(accelerator, run_dir, epoch, state)
        if params.patience and bad >= params.patience:
            stopped_early = True
            break
    accelerator.wait_for_everyone()
    best = checkpoint_dir(run_dir) / "best"
    if (best / "model.safetensors").exists():
        load_weights(inner, best)
    return {"epochs_run": epoch + 1, "steps": step, "best_epoch": best_epoch,
            "best_val": None if not math.isfinite(best_val) else best_val,
            "last_train_loss": last_train, "stopped_early": stopped_early, "resumed_from": resumed_from,
            "n_trainable": int(n_trainable), "n_frozen": int(n_frozen),
            "steps_per_epoch": steps_per_epoch}


def _save_checkpoint(accelerator, run_dir: Path, epoch: int, state: dict) -> None:
    root = checkpoint_dir(run_dir)
    final = root / f"epoch-{epoch:03d}"
    tmp = root / f"epoch-{epoch:03d}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _write_json(tmp / "state.json", state)  # last: marks the folder complete
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        done = sorted(p for p in root.glob("epoch-[0-9][0-9][0-9]") if (p / "state.json").exists())
        for old in done[:-KEEP_LAST]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
