"""``TuneParams``: every number of brain-tuning, with the paper's defaults (paper-method.md).

Presets (:func:`preset`):

- ``paper`` — the defaults: targets ``ceiling>0.4``, MSE, zero-initialised head, Adam with backbone
  lr 5e-5 (5 warm-up epochs, linear decay to 0) and head lr 1e-4 (× max(0.8^epoch, 0.1)), 30
  epochs, effective batch 128. For real data (ds003020).
- ``demo`` — what a measured probe on the simulated demo brain showed to work in minutes on 2 CPU
  cores (``reference/tuning-probe.md``): head lr **1e-3** (with the paper's 1e-4 and mixed
  acoustic + semantic targets, semantic voxels got *worse*: best-layer r .314 → .243), targets the
  **semantic ROI group** (``roi:semantic``: Broca, sPMv, IPS, RSC, FO; +0.04 cc_norm, control
  −0.002), a **constant** lr (the probe's; the paper's 5 warm-up epochs do not fit 3 epochs),
  **3 epochs**, **batch 16**, no early stopping (``patience=0``: validation MSE barely moves on
  the demo because most target voxels are noise, while the encoding gain is large), only the **top 2
  transformer layers** train (``train_layers=2``; the gain is in the top layers), and **bf16**
  autocast where the machine multiplies bf16 natively (:func:`native_bf16`; fp32 elsewhere):
  whisper-tiny.en trains 2.2× faster than fp32 with every layer (``bench/tuning.py``), so a demo run
  fits in about 4 minutes on 2 CPU cores; the gains this costs are in the README.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Tuple

from core.errors import ConfigError
from core.tuning.losses import COSINE_L2_WEIGHT, LOSSES
from core.tuning.model import HEAD_INITS, WHISPER_INPUTS
from core.tuning.schedule import SCHEDULES

PRECISIONS = ("fp32", "bf16")
PRESETS = ("paper", "demo")


@dataclass(frozen=True)
class TuneParams:
    """Brain-tuning parameters (defaults: the paper, paper-method.md, unless marked).

    Targets and samples
        targets : voxel spec of :func:`core.tuning.targets.select_targets` (paper ``ceiling>0.4``).
        delays : TR delays concatenated per sample (released code: 0–4 → 10 s). shift_s : TR stamp
        shift in s (released: 1.0).
    Model
        head_init : ``zeros`` (paper/released) | ``random`` | ``ridge``. whisper_input : ``window``
        | ``pad30`` (:mod:`core.tuning.model`).
        loss : ``mse`` (paper) | ``pearson`` | ``cosine_l2`` (follow-up); cosine_l2_weight λ (1.0).
    Optimisation
        schedule : ``paper`` (Adam, two groups) | ``followup`` (AdamW) | ``constant``.
        backbone_lr 5e-5, head_lr 1e-4, warmup_epochs 5, head_decay 0.8, head_decay_floor 0.1
        (paper); followup_lr 1e-4, warmup_fraction 0.1 (follow-up), weight_decay 0.01 (AdamW's torch
        default; follow-up, unstated).
        epochs 30; batch_size 128 = the effective batch (paper); micro_batch 16 per forward pass
        (memory only; project default), grad_accum = batch_size // micro_batch.
        patience : epochs without validation-loss improvement before stopping (0 = never; project
        default 5 — the paper stops "when validation loss saturates or diverges", the released
        code never stops early).
        train_layers : train only the top N transformer layers (0 = all, the paper;
        :func:`core.tuning.model.freeze_lower_layers`; project option).
    LoRA (follow-up)
        lora False; lora_r 8, lora_alpha 32, lora_dropout 0.1, lora_targets q/k/v/out projections.
    Run
        precision : ``fp32`` | ``bf16`` (autocast). seed 0.
    """

    targets: str = "ceiling>0.4"
    delays: Tuple[int, ...] = (0, 1, 2, 3, 4)
    shift_s: float = 1.0
    head_init: str = "zeros"
    whisper_input: str = "window"
    loss: str = "mse"
    cosine_l2_weight: float = COSINE_L2_WEIGHT
    schedule: str = "paper"
    backbone_lr: float = 5e-5
    head_lr: float = 1e-4
    warmup_epochs: int = 5
    head_decay: float = 0.8
    head_decay_floor: float = 0.1
    followup_lr: float = 1e-4
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    epochs: int = 30
    batch_size: int = 128
    micro_batch: int = 16
    patience: int = 5
    train_layers: int = 0
    lora: bool = False
    lora_r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    lora_targets: Tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "out_proj")
    precision: str = "fp32"
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "delays", tuple(int(d) for d in self.delays))
        object.__setattr__(self, "lora_targets", tuple(str(t) for t in self.lora_targets))
        self.validate()

    @property
    def grad_accum(self) -> int:
        """Micro-batches per optimiser step: ``batch_size // micro_batch``."""
        return self.batch_size // self.micro_batch

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field and its allowed values."""
        choices = {"head_init": HEAD_INITS, "whisper_input": WHISPER_INPUTS, "loss": LOSSES,
                   "schedule": SCHEDULES, "precision": PRECISIONS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}={getattr(self, name)!r} is not one of {', '.join(allowed)}")
        for name in ("backbone_lr", "head_lr", "followup_lr"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not v > 0 or v != v:
                raise ConfigError(f"{name}={v!r} must be a positive number")
        for name in ("epochs", "batch_size", "micro_batch", "lora_r", "lora_alpha"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name}={v!r} must be an integer ≥ 1")
        for name in ("warmup_epochs", "patience", "seed", "train_layers"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"{name}={v!r} must be an integer ≥ 0")
        if self.batch_size % self.micro_batch:
            raise ConfigError(f"batch_size={self.batch_size} is not a multiple of micro_batch="
                              f"{self.micro_batch}; the effective batch is micro_batch × grad_accum")
        if self.schedule == "paper" and self.warmup_epochs > self.epochs:
            raise ConfigError(f"warmup_epochs={self.warmup_epochs} exceeds epochs={self.epochs}; "
                              "lower it or use schedule='constant'")
        for name, lo, hi in (("head_decay", 0.0, 1.0), ("head_decay_floor", 0.0, 1.0),
                             ("warmup_fraction", 0.0, 1.0), ("lora_dropout", 0.0, 1.0)):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not lo <= v <= hi:
                raise ConfigError(f"{name}={v!r} must be in [{lo}, {hi}]")
        for name in ("weight_decay", "cosine_l2_weight", "shift_s"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not v >= 0:
                raise ConfigError(f"{name}={v!r} must be a number ≥ 0")
        if not self.delays or min(self.delays) < 0 or len(set(self.delays)) != len(self.delays):
            raise ConfigError(f"delays={self.delays} must be distinct TR counts ≥ 0 (paper: 0,1,2,3,4)")
        if not self.lora_targets:
            raise ConfigError("lora_targets is empty; name the modules (paper: q_proj,k_proj,v_proj,out_proj)")
        if not str(self.targets).strip():
            raise ConfigError("targets is empty; e.g. ceiling>0.4 (paper) or roi:semantic (demo)")

    def to_dict(self) -> dict:
        """JSON-able dict (tuples as lists) of every field."""
        d = asdict(self)
        d["delays"], d["lora_targets"] = list(self.delays), list(self.lora_targets)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TuneParams":
        """Inverse of :meth:`to_dict`; an unknown key is a :class:`ConfigError` naming it."""
        names = {f.name for f in fields(cls)}
        bad = sorted(set(d) - names)
        if bad:
            raise ConfigError(f"unknown tuning parameter(s) {', '.join(bad)}; valid: {', '.join(sorted(names))}")
        return cls(**d)

    def replace(self, **changes) -> "TuneParams":
        """A copy with ``changes`` (validated); unknown names → :class:`ConfigError`."""
        bad = sorted(set(changes) - {f.name for f in fields(self)})
        if bad:
            raise ConfigError(f"unknown tuning parameter(s) {', '.join(bad)}")
        return replace(self, **changes)


DEMO_CHANGES = dict(head_lr=1e-3, targets="roi:semantic", schedule="constant", epochs=3,
                    batch_size=16, micro_batch=8, patience=0, train_layers=2)  #: see the module docstring


def native_bf16() -> bool:
    """Whether this machine multiplies bf16 natively: a CUDA GPU with bf16, or a CPU with AVX512-BF16
    or AMX (elsewhere bf16 autocast is emulated and slower than fp32)."""
    import torch

    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    try:  # torch's own CPU feature probes (private, hence the fallback)
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:
        return False


def preset(name: str = "paper", **overrides) -> TuneParams:
    """``paper`` (the defaults) or ``demo`` (:data:`DEMO_CHANGES`), then ``overrides``.

    A ``micro_batch`` given without ``batch_size`` keeps the preset's effective batch, rounded to a
    multiple of the micro-batch (at least one micro-batch).
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown tuning preset {name!r}; choose one of {', '.join(PRESETS)}")
    base = (TuneParams() if name == "paper" else
            TuneParams(**DEMO_CHANGES, precision="bf16" if native_bf16() else "fp32"))
    overrides = dict(overrides)
    mb = overrides.get("micro_batch")
    if isinstance(mb, int) and not isinstance(mb, bool) and mb >= 1 and "batch_size" not in overrides:
        overrides["batch_size"] = max(base.batch_size // mb, 1) * mb
    return base.replace(**overrides) if overrides else base
