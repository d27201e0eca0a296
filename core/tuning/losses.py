"""Brain-tuning losses on predictions and targets ``(batch, n_voxels)``.

- ``"mse"`` — mean squared error over batch and voxels (paper-method.md "Model and loss").
- ``"pearson"`` — ``1 − r`` with ``r`` the Pearson correlation *across voxels* of one sample,
  averaged over the batch (multi-participant follow-up, best with ≤ 6 h of tuning data; its code
  ``SpatialCorrelationLoss``: eps 1e-8 inside the square root). Invariant to ``a·pred + b`` per
  sample with ``a > 0``.
- ``"cosine_l2"`` — ``mean(1 − cos(pred, target)) + λ·MSE`` (follow-up's "cosine + L2"; cosine per
  sample across voxels). ``λ = 1`` (default ``COSINE_L2_WEIGHT``): the follow-up's code adds its
  second term with weight 1, and that term is a Huber loss with δ = 0.6 (``SparseRobustLoss``),
  not a plain MSE; pass ``huber_delta=0.6`` to get exactly that.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

from core.errors import ConfigError

LOSSES = ("mse", "pearson", "cosine_l2")
COSINE_L2_WEIGHT = 1.0  #: λ of cosine_l2 (follow-up code: 1)
PEARSON_EPS = 1e-8  #: inside the sqrt of the Pearson denominator (follow-up code)


def _check(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape or pred.ndim != 2:
        raise ConfigError(f"loss needs pred and target of the same shape (batch, n_voxels); got "
                          f"{tuple(pred.shape)} and {tuple(target.shape)}")


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of ``(pred − target)²`` over batch and voxels (paper)."""
    _check(pred, target)
    return F.mse_loss(pred, target)


def pearson_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = PEARSON_EPS) -> torch.Tensor:
    """``mean_b (1 − r_b)``, ``r_b`` = Pearson r across voxels of sample ``b`` (follow-up)."""
    _check(pred, target)
    p = pred - pred.mean(1, keepdim=True)
    t = target - target.mean(1, keepdim=True)
    r = (p * t).sum(1) / torch.sqrt((p * p).sum(1) * (t * t).sum(1) + eps)
    return (1.0 - r).mean()


def cosine_l2_loss(pred: torch.Tensor, target: torch.Tensor, weight: float = COSINE_L2_WEIGHT,
                   huber_delta: Optional[float] = None) -> torch.Tensor:
    """``mean_b (1 − cos_b) + weight·MSE`` (or ``weight·Huber(δ)`` when ``huber_delta`` is given)."""
    _check(pred, target)
    cos = F.cosine_similarity(pred, target, dim=1)
    l2 = F.mse_loss(pred, target) if huber_delta is None else F.huber_loss(pred, target, delta=float(huber_delta))
    return (1.0 - cos).mean() + float(weight) * l2


def get_loss(name: str, **kwargs) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss function called ``name`` (one of :data:`LOSSES`); ``kwargs`` go to cosine_l2."""
    if name == "mse":
        return mse_loss
    if name == "pearson":
        return pearson_loss
    if name == "cosine_l2":
        return lambda p, t: cosine_l2_loss(p, t, **kwargs)
    raise ConfigError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
