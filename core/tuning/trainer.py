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
  :data:`core.tuning.checkpoints.KEEP_LAST` are kept.
- ``checkpoints/best/model.safetensors`` — weights (backbone or LoRA-wrapped backbone + head) of the
  epoch with the lowest validation loss, with its ``state.json``.

The stimulus control (:class:`core.tuning.stimulus.StimulusModel`, a model with an ``objective``)
runs the same loop: the model returns its own loss of ``(waveforms, label rows)``, there is no voxel
head (its objective's modules take the head's optimiser group) and ``model.set_epoch(epoch)`` is
called before each epoch (its masks are seeded per epoch and sample).

Optimisation: micro-batches of ``params.micro_batch`` samples, ``params.grad_accum`` of them per
optimiser step (the last step of an epoch takes the leftover micro-batches; the loss is weighted so
every step averages its samples). The epoch's sample order is a permutation drawn from a
``torch.Generator`` seeded with ``seed + epoch``, so a resumed run sees the same order.

Distributed data parallel (``accelerate launch`` / ``torchrun --nproc_per_node=N``, see
:func:`local_accum`): the effective batch stays ``params.batch_size``. Optimiser step ``k`` takes
the samples at positions ``k·batch_size … (k+1)·batch_size − 1`` of the epoch order, as one process
would; process ``r`` takes every ``N``-th of them (positions ≡ r mod N) in ``batch_size //
(micro_batch · N)`` micro-batches, so the union of all processes' micro-batches of a step is the
single-process step. Every process runs the same number of steps (a process left without a sample
in an epoch's last step runs a zero-weighted forward/backward, so the gradient all-reduce still
meets). Losses are weighted by samples over all processes; the logged step / epoch losses are
all-reduced sums divided by the step's sample count, the validation loss is sharded and reduced
likewise. Only the main process writes ``metrics.jsonl``, ``status.json`` and the ``best``
checkpoint; ``accelerator.save_state`` writes the model / optimiser once and one RNG file per
process. Dropout, LayerDrop and SpecAugment draw different random numbers per process, so only a
model without stochastic layers reproduces the single-process loss curve exactly.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Optional

import torch

from core.errors import ConfigError
from core.progress import ProgressFn, report
from core.tuning.checkpoints import (best_dir, check_same_params, latest_checkpoint, load_weights,
                                     read_state, save_best, save_checkpoint)
from core.tuning.losses import get_loss
from core.tuning.model import freeze_lower_layers
from core.tuning.schedule import build_optimizer

WAV2VEC2_ATTENTION = ("q_proj", "k_proj", "v_proj", "out_proj")


# --------------------------------------------------------------------------- LoRA
def apply_lora(model, params) -> list:
    """Wrap ``model.backbone`` with a peft LoRA adapter (``params.lora_*``); returns the names of the
    adapted modules. Every backbone weight but the adapters is frozen; the head stays trainable.

    Raises ConfigError when a target name matches no module of the backbone (Whisper, wav2vec2 and
    HuBERT name their attention projections ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``).
    The adapters' random initialisation is seeded by ``params.seed`` (reproducible runs, and every
    DDP process draws the same adapters).
    """
    from peft import LoraConfig, get_peft_model

    names = [n for n, _ in model.backbone.named_modules()]
    for t in params.lora_targets:
        if not any(n == t or n.endswith("." + t) for n in names):
            raise ConfigError(f"LoRA target {t!r} matches no module of the {model.family} backbone; "
                              f"use its attention projections, e.g. {','.join(WAV2VEC2_ATTENTION)}")
    cfg = LoraConfig(r=params.lora_r, lora_alpha=params.lora_alpha, lora_dropout=params.lora_dropout,
                     target_modules=list(params.lora_targets))
    with torch.random.fork_rng(devices=[]):  # adapters drawn from params.seed, not the global RNG state
        torch.manual_seed(int(params.seed))
        model.backbone = get_peft_model(model.backbone, cfg)
    return [n for n in names if n.split(".")[-1] in params.lora_targets]


def is_lora(model) -> bool:
    """Whether ``model.backbone`` is a peft model."""
    return hasattr(model.backbone, "peft_config")


# --------------------------------------------------------------------------- checkpoints
# --------------------------------------------------------------------------- training
def local_accum(params, n_proc: int) -> int:
    """Micro-batches per optimiser step on each of ``n_proc`` processes:
    ``batch_size // (micro_batch · n_proc)``, so the effective batch is ``batch_size`` whatever the
    number of processes. ConfigError when ``batch_size`` is not a multiple of ``micro_batch · n_proc``.
    """
    n_proc = max(int(n_proc), 1)
    per_round = params.micro_batch * n_proc
    if params.batch_size % per_round:
        raise ConfigError(f"batch_size={params.batch_size} is not a multiple of micro_batch × processes = "
                          f"{params.micro_batch} × {n_proc}; with {n_proc} processes use a batch size that "
                          f"is a multiple of {per_round}, or a smaller --micro-batch")
    return params.batch_size // per_round


def is_main_process() -> bool:
    """Whether this is the main (rank 0) process of an ``accelerate launch`` / ``torchrun`` job
    (True in a plain single process). Initialises the distributed state when launched so."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available()).is_main_process


def wait_for_everyone() -> None:
    """Barrier across the processes of a distributed launch (no-op in a single process)."""
    from accelerate import PartialState

    PartialState(cpu=not torch.cuda.is_available()).wait_for_everyone()


def _skips_layers(model) -> bool:
    """Whether a transformers config inside ``model`` asks for LayerDrop (``layerdrop`` /
    ``encoder_layerdrop`` > 0: wav2vec2 / HuBERT configs, the random wav2vec2 models)."""
    for m in model.modules():
        cfg = getattr(m, "config", None)
        if cfg is not None and any(float(getattr(cfg, k, 0) or 0) > 0 for k in ("layerdrop", "encoder_layerdrop")):
            return True
    return False


def _accelerator(params, model=None):
    from accelerate import Accelerator, PartialState
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import DistributedDataParallelKwargs

    # one process may train several times (tests, the app's worker): the singletons keep the first
    # run's mixed precision / accumulation otherwise. The distributed PartialState is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    cpu = not torch.cuda.is_available()
    n_proc = PartialState(cpu=cpu).num_processes
    # LayerDrop skips whole layers at random, differently on each process: DDP's reducer must not
    # wait for their gradients (else "Expected to have finished reduction in the prior iteration")
    ddp = DistributedDataParallelKwargs(find_unused_parameters=model is not None and _skips_layers(model))
    return Accelerator(mixed_precision="bf16" if params.precision == "bf16" else "no",
                       gradient_accumulation_steps=local_accum(params, n_proc), cpu=cpu,
                       kwargs_handlers=[ddp])


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


def _self_supervised(model) -> bool:
    """Whether ``model`` computes its own loss (:class:`core.tuning.stimulus.StimulusModel`)."""
    return getattr(model, "objective", None) is not None


def _loss_fn(model, params):
    """The loss on (prediction, target), or None for a self-supervised model."""
    if _self_supervised(model):
        return None
    if params.loss == "cosine_l2":
        return get_loss(params.loss, weight=params.cosine_l2_weight)
    return get_loss(params.loss)


def _forward_loss(model, loss_fn, x, y):
    """Scalar loss of a micro-batch: ``loss_fn(model(x), y)``, or ``model(x, y)`` (its own
    objective, ``y`` = label rows) when ``loss_fn`` is None."""
    if loss_fn is None:
        return model(x, y).float()
    pred = model(x)
    return loss_fn(pred.float(), y.to(pred.device))


def evaluate(model, split, params, accelerator=None) -> float:
    """Mean loss over ``split`` (every sample weighted alike), eval mode, no gradients. Under a
    distributed launch each process evaluates every ``num_processes``-th sample and the sums are
    all-reduced, so every process returns the same mean."""
    loss_fn = _loss_fn(model, params)
    n_proc = accelerator.num_processes if accelerator is not None else 1
    rank = accelerator.process_index if accelerator is not None else 0
    was = model.training
    model.eval()
    total, n = 0.0, 0
    try:
        with torch.no_grad():
            for idx in _batches(torch.arange(len(split))[rank::n_proc], params.micro_batch):
                x, y = _collate(split, idx)
                ctx = accelerator.autocast() if accelerator is not None else _null()
                with ctx:
                    loss = _forward_loss(model, loss_fn, x, y)
                total += float(loss) * len(idx)
                n += len(idx)
    finally:
        model.train(was)
    if n_proc > 1:
        total, n = _reduce_sum(accelerator, total, n)
    return total / max(n, 1)


def _reduce_sum(accelerator, *values):
    """Sums of ``values`` over all processes (float64 all-reduce)."""
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=accelerator.device)
    return tuple(float(v) for v in accelerator.reduce(t, reduction="sum"))


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

    if not _self_supervised(model) and model.n_voxels != data.report["n_voxels"]:
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
    if params.train_layers:
        freeze_lower_layers(model.backbone, model.family, params.train_layers)

    accelerator = _accelerator(params, model)
    n_proc, rank = accelerator.num_processes, accelerator.process_index
    accum = local_accum(params, n_proc)  # micro-batches per step on this process
    per_step = params.micro_batch * accum  # samples per step on this process (at most)
    # steps of the whole effective batch (params.batch_size = per_step · n_proc), as one process
    steps_per_epoch = math.ceil(len(data.train) / params.batch_size)
    backbone_params, head_params = model.parameter_groups()
    optimizer, scheduler = build_optimizer(backbone_params, head_params, params, steps_per_epoch)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    inner = accelerator.unwrap_model(model)
    loss_fn = _loss_fn(inner, params)

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
    n_all = len(data.train)
    for epoch in range(start_epoch, last_epoch):
        if hasattr(inner, "set_epoch"):  # the stimulus objective's masks depend on the epoch
            inner.set_epoch(epoch)
        full = epoch_order(n_all, params.seed, epoch)
        mine = full[rank::n_proc]  # this process's positions: ≡ rank (mod n_proc)
        ep_loss, ep_n = 0.0, 0
        for k_step in range(steps_per_epoch):
            # the step's samples over all processes (one process: all of them)
            n_step = min(params.batch_size, n_all - k_step * params.batch_size)
            group = _batches(mine[k_step * per_step:(k_step + 1) * per_step], params.micro_batch)
            # a process without a sample in this step still joins the gradient all-reduce
            dummy = not group
            if dummy:
                group = [full[:1]]
            local_sum = 0.0
            for k, idx in enumerate(group):
                x, y = _collate(data.train, idx)
                sync = k == len(group) - 1
                ctx = _null() if sync or n_proc == 1 else accelerator.no_sync(model)
                with ctx:
                    with accelerator.autocast():
                        loss = _forward_loss(model, loss_fn, x, y)
                    # weight so the step averages its samples over all processes: DDP averages the
                    # processes' gradients (× n_proc) and accelerator.backward divides by the
                    # accumulation steps (× gradient_accumulation_steps)
                    w = 0.0 if dummy else len(idx) / n_step * n_proc
                    accelerator.backward(loss * w * accelerator.gradient_accumulation_steps)
                if not dummy:
                    local_sum += float(loss.detach()) * len(idx)
            if n_proc > 1:
                (local_sum,) = _reduce_sum(accelerator, local_sum)
            step_loss = local_sum / n_step
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            steps_here += 1
            samples_here += n_step
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
                save_best(inner, run_dir, state)
        save_checkpoint(accelerator, run_dir, epoch, state)
        if params.patience and bad >= params.patience:
            stopped_early = True
            break
    accelerator.wait_for_everyone()
    best = best_dir(run_dir)
    if (best / "model.safetensors").exists():
        load_weights(inner, best)
    return {"epochs_run": epoch + 1, "steps": step, "best_epoch": best_epoch,
            "best_val": None if not math.isfinite(best_val) else best_val,
            "last_train_loss": last_train, "stopped_early": stopped_early, "resumed_from": resumed_from,
            "n_trainable": int(n_trainable), "n_frozen": int(n_frozen),
            "steps_per_epoch": steps_per_epoch}
