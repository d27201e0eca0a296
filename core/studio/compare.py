"""The Compare page's engine calls: a subject's encoding results, their comparison (``python -m core
compare``, cached), difference maps, layer curves, and the analyses computed for the same models."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from core.errors import ConfigError
from core.store import key_hash


def _summary(path: Path) -> Optional[dict]:
    try:
        return json.loads((Path(path) / "summary.json").read_text())
    except (OSError, ValueError):
        return None


def result_label(features: str) -> str:
    """A short label of a result's features: a checkpoint reads ``tuned <run> [control]``."""
    if not features.startswith("ckpt:"):
        return features
    path = Path(features[5:])
    run = path.parent.name if path.name == "tune" else path.name
    try:
        info = json.loads((path / "run.json").read_text())
    except (OSError, ValueError):
        info = {}
    control = info.get("control")
    base = info.get("model", "")
    return f"tuned {base} · {run}" + (f" · control {control}" if control else "")


def subject_results(dataset, subject: str) -> list:
    """Encoding results in the cache for ``subject`` of ``dataset`` (same content fingerprint), as
    ``{"dir", "features", "label", "protocol", "layers"}`` dicts, sorted by label."""
    from core.settings import get_settings

    root = get_settings().cache_root / "encodings"
    if not root.is_dir():
        return []
    fp, out = dataset.fingerprint(), []
    for d in root.iterdir():
        s = _summary(d)
        if not s or s.get("subject") != subject:
            continue
        prov = s.get("provenance", {})
        if prov.get("dataset_fingerprint") != fp:
            continue
        out.append({"dir": str(d), "features": s.get("features", "?"), "label": result_label(s.get("features", "?")),
                    "protocol": prov.get("protocol", "project"), "layers": list(s.get("layers", {}))})
    return sorted(out, key=lambda r: (r["label"], r["protocol"]))


def comparison(dirs: list, metric: str = "cc_norm", dataset=None) -> tuple:
    """``compare`` of ``dirs[1:]`` against ``dirs[0]`` (cached under ``<cache>/compare/<key>``) on
    ``dataset`` (the open one whose regions are reported); returns ``(summary, folder)``."""
    from core.pipelines.evaluate import compare_dirs
    from core.settings import get_settings

    if len(dirs) < 2 or len(set(map(str, dirs))) != len(dirs):
        raise ConfigError("pick two or three different results to compare")
    stamps = [(str(d), (Path(d) / "summary.json").stat().st_mtime_ns) for d in dirs]
    out = get_settings().cache_root / "compare" / key_hash("compare", stamps, metric)
    cached = _summary(out)
    if cached is not None:
        return cached, out
    return compare_dirs([Path(d) for d in dirs], out, metric, dataset), out


def comparison_layers(summary: dict, k: int) -> list:
    """Layer names compared for the ``k``-th other result (1-based), ``best`` first."""
    layers = list(summary["others"].values())[k - 1]
    return ["best"] + [x for x in layers if x != "best"]


def comparison_table(summary: dict, k: int, layer: str) -> pd.DataFrame:
    """Regions at ``layer`` for the ``k``-th other result: base and other mean, mean Δ, share of
    voxels improved, Wilcoxon p (two-sided, paired over voxels), n_voxels."""
    rows = list(summary["others"].values())[k - 1][layer]["regions"]
    return pd.DataFrame([{"region": name, "A": v["mean_a"], "B": v["mean_b"], "mean Δ": v["mean_delta"],
                          "share improved": v["share_improved"], "Wilcoxon p": v["wilcoxon_p"],
                          "n_voxels": v["n_voxels"]} for name, v in rows.items()],
                        columns=["region", "A", "B", "mean Δ", "share improved", "Wilcoxon p", "n_voxels"])


def delta_values(folder: Path, k: int, layer: str) -> np.ndarray:
    """Per-voxel Δ ``(n_voxels,)`` (other − base) of the ``k``-th other result at ``layer``."""
    return np.load(Path(folder) / f"delta_{k}_{layer}.npy")


def layer_curves(dirs: list, labels: list, region: str = "cortex", metric: str = "cc_norm") -> pd.DataFrame:
    """Mean ``metric`` in ``region`` (an ROI, an ROI group, or ``cortex``) per layer of each result,
    in :func:`core.viz.charts.layer_curve`'s format: ``layer`` (depth index, one x axis across
    models), ``roi`` (= region), ``group`` (the model's label), ``value``, ``name`` (layer name)."""
    rows = []
    for d, label in zip(dirs, labels):
        s = _summary(d) or {"layers": {}}
        for depth, (layer, v) in enumerate(s["layers"].items()):
            if region == "cortex":
                value = v.get(f"mean_{metric}")
            else:
                reg = v.get("roi", {}).get(region) or v.get("roi_groups", {}).get(region) or {}
                value = reg.get(f"mean_{metric}")
            rows.append({"layer": depth, "roi": region, "group": label, "value": value, "name": layer})
    return pd.DataFrame(rows, columns=["layer", "roi", "group", "value", "name"])


def regions_in(dirs: list) -> list:
    """Regions every result summarises (``cortex`` first, then ROI groups, then ROIs)."""
    sets = []
    for d in dirs:
        s = _summary(d) or {"layers": {}}
        layer = next(iter(s["layers"].values()), {})
        sets.append(list(layer.get("roi_groups", {})) + list(layer.get("roi", {})))
    common = [r for r in sets[0] if all(r in other for other in sets[1:])] if sets else []
    return ["cortex"] + [r for r in common if r != "cortex"]


def cli_compare_command(dirs: list, metric: str = "cc_norm") -> str:
    return shlex.join(["python", "-m", "core", "compare", *map(str, dirs), "--metric", metric,
                       "--out", "COMPARE_DIR"])
