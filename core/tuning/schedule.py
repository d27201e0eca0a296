"""Optimiser and learning-rate schedules of brain-tuning (torch.optim + ``LambdaLR``).

``schedule="paper"`` (paper-method.md "Model and loss"): Adam with two parameter groups, backbone
lr 5e-5 and head lr 1e-4. The backbone's lr is multiplied by :func:`warmup_linear` — linear warm-up
over ``warmup_epochs`` (5) epochs then linear decay to 0 at the last epoch, per optimiser step; the
head's by :func:`head_decay` — ``max(0.8^epoch, 0.1)`` with ``epoch = step // steps_per_epoch``.

``schedule="followup"`` (multi-participant follow-up): AdamW, lr 1e-4 for both groups (LoRA/backbone
and head), :func:`warmup_linear` with 10 % of all steps as warm-up, linear decay to 0.

``schedule="constant"``: Adam, constant lrs (the demo probe of ``tuning-probe.md``).

The warm-up factor is 0 at step 0 (as transformers' ``get_linear_schedule_with_warmup``): the first
update of the backbone is a no-op. The scheduler is stepped once per optimiser step (after gradient
accumulation), so ``steps_per_epoch`` counts optimiser steps.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch.optim.lr_scheduler import LambdaLR

from core.errors import ConfigError

SCHEDULES = ("paper", "followup", "constant")


def warmup_linear(step: int, warmup_steps: int, total_steps: int) -> float:
    """``step/warmup`` during warm-up, then ``(total − step)/(total − warmup)`` down to 0 (never < 0)."""
    if step < warmup_steps:
        return step / warmup_steps
    if total_steps <= warmup_steps:
        return 1.0
    return max(0.0, (total_steps - step) / (total_steps - warmup_steps))


def head_decay(step: int, steps_per_epoch: int, rate: float = 0.8, floor: float = 0.1) -> float:
    """``max(rate^epoch, floor)``, ``epoch = step // steps_per_epoch`` (paper: 0.8, 0.1)."""
    return max(rate ** (step // steps_per_epoch), floor)


def build_optimizer(backbone_params: Sequence, head_params: Sequence, params, steps_per_epoch: int
                    ) -> Tuple[torch.optim.Optimizer, LambdaLR]:
    """``(optimizer, scheduler)`` for ``params`` (a :class:`core.tuning.params.TuneParams`).

    Parameter group 0 is the backbone (or LoRA adapters), group 1 the head. ``steps_per_epoch`` =
    optimiser steps per epoch (≥ 1).
    """
    spe = int(steps_per_epoch)
    if spe < 1:
        raise ConfigError(f"steps_per_epoch={steps_per_epoch!r} must be ≥ 1 (too few samples for one batch?)")
    if params.schedule not in SCHEDULES:
        raise ConfigError(f"schedule {params.schedule!r} is not one of {', '.join(SCHEDULES)}")
    backbone_params, head_params = list(backbone_params), list(head_params)
    if not head_params:
        raise ConfigError("the head has no parameters to train")
    total = spe * int(params.epochs)
    if params.schedule == "followup":
        groups = [{"params": backbone_params, "lr": params.followup_lr},
                  {"params": head_params, "lr": params.followup_lr}]
        opt = torch.optim.AdamW(groups, lr=params.followup_lr, weight_decay=params.weight_decay)
        warm = int(round(params.warmup_fraction * total))
        fn = lambda s: warmup_linear(s, warm, total)  # noqa: E731
        return opt, LambdaLR(opt, [fn, fn])
    groups = [{"params": backbone_params, "lr": params.backbone_lr},
              {"params": head_params, "lr": params.head_lr}]
    opt = torch.optim.Adam(groups, lr=params.backbone_lr)
    if params.schedule == "constant":
        return opt, LambdaLR(opt, [lambda s: 1.0, lambda s: 1.0])
    warm = int(params.warmup_epochs) * spe
    return opt, LambdaLR(opt, [lambda s: warmup_linear(s, warm, total),
                               lambda s: head_decay(s, spe, params.head_decay, params.head_decay_floor)])
