"""Compare encoding results of one subject: per-voxel Δ, per-region mean Δ, share improved, Wilcoxon.

The paper's test (Moussa et al. 2025, Evaluation 1): a Wilcoxon signed-rank test of brain-tuned vs
pretrained per-voxel scores inside a region (``scipy.stats.wilcoxon``, two-sided, zero differences
dropped — scipy's ``zero_method="wilcox"``). A voxel enters a region's comparison when both results
score it (finite metric in both).
"""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

from core.errors import ConfigError, DataError

METRICS = ("cc_norm", "r")


def paired_stats(a: np.ndarray, b: np.ndarray) -> dict:
    """Statistics of ``b − a`` over voxels scored by both.

    Parameters
    ----------
    a, b : ``(n_voxels,)`` per-voxel scores (NaN = not scored).

    Returns
    -------
    ``{"n_voxels", "mean_a", "mean_b", "mean_delta", "share_improved", "wilcoxon_stat",
    "wilcoxon_p"}``; means NaN and p NaN when fewer than 2 voxels (or all differences 0).
    """
    from scipy.stats import wilcoxon

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    both = np.isfinite(a) & np.isfinite(b)
    d = b[both] - a[both]
    out = {"n_voxels": int(both.sum()), "mean_a": _mean(a[both]), "mean_b": _mean(b[both]),
           "mean_delta": _mean(d), "share_improved": float((d > 0).mean()) if d.size else float("nan"),
           "wilcoxon_stat": float("nan"), "wilcoxon_p": float("nan")}
    if d.size >= 2 and np.any(d != 0):
        res = wilcoxon(d, zero_method="wilcox", alternative="two-sided")
        out["wilcoxon_stat"], out["wilcoxon_p"] = float(res.statistic), float(res.pvalue)
    return out


def compare_maps(a: np.ndarray, b: np.ndarray, regions: Mapping[str, np.ndarray]) -> dict:
    """Per-voxel ``Δ = b − a`` ``(n_voxels,)`` float32 (NaN where either is NaN) and
    :func:`paired_stats` per region (``{name: (n_voxels,) bool}``)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 1:
        raise DataError(f"cannot compare maps of shapes {a.shape} and {b.shape}: the results must be "
                        "of the same subject and voxel set")
    delta = (b.astype(np.float64) - a.astype(np.float64)).astype(np.float32)
    table = {}
    for name, mask in regions.items():
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != a.shape:
            raise DataError(f"region {name!r} has {mask.size} voxels, the maps {a.size}")
        table[name] = paired_stats(np.where(mask, a, np.nan), np.where(mask, b, np.nan))
    return {"delta": delta, "regions": table}


def best_layer(summary: dict, metric: str = "cc_norm") -> str:
    """The layer of an encode summary with the highest mean ``metric`` over cortex."""
    layers = summary["layers"]
    return max(layers, key=lambda k: np.nan_to_num(layers[k][f"mean_{metric}"], nan=-np.inf))


def compare_results(base, other, regions: Mapping[str, np.ndarray], metric: str = "cc_norm",
                    layers: Optional[list] = None) -> dict:
    """Compare two :class:`core.encoding.result.EncodingResult` of one subject.

    Layers compared: ``layers`` (default: the layers both have, in ``other``'s order) plus
    ``"best"`` = each result's own best layer (``other``'s best vs ``base``'s best).

    Returns
    -------
    ``{"metric", "layers": {name: {"layer_base", "layer_other", "regions": {...}}}, "deltas":
    {name: (n_voxels,) float32}}``.
    """
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    if base.subject != other.subject:
        raise DataError(f"cannot compare results of different subjects ({base.subject!r} vs "
                        f"{other.subject!r})")
    if len(base.valid) != len(other.valid):
        raise DataError(f"cannot compare results on different voxel sets ({len(base.valid)} vs "
                        f"{len(other.valid)} voxels)")
    common = [x for x in other.layer_names() if x in base.layers] if layers is None else list(layers)
    pairs = {name: (name, name) for name in common}
    pairs["best"] = (best_layer(base.summary, metric), best_layer(other.summary, metric))
    out, deltas = {"metric": metric, "layers": {}}, {}
    for name, (la, lb) in pairs.items():
        if la not in base.layers or lb not in other.layers:
            raise ConfigError(f"layer {la!r}/{lb!r} is not in both results")
        res = compare_maps(getattr(base.layers[la], metric), getattr(other.layers[lb], metric), regions)
        out["layers"][name] = {"layer_base": la, "layer_other": lb, "regions": res["regions"]}
        deltas[name] = res["delta"]
    out["deltas"] = deltas
    return out


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if x.size else float("nan")
