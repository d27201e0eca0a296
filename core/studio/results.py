"""Encode results as tables, maps and downloads (part of the :mod:`core.studio` facade)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from core.errors import ConfigError, DataError
from core.store import key_hash

METRICS = {"cc_norm": "cc_norm (r / noise ceiling)", "r": "r (Pearson, test story)"}
SCORE_CMAP = "inferno"  #: colormap of score maps (flatmaps and the WebGL viewer)
DIFF_CMAP = "RdBu_r"  #: diverging colormap of difference / preference maps (centred at 0)


# -- encode folders -----------------------------------------------------------------------------

def summary(result_dir: Path) -> dict:
    """``summary.json`` of an encode folder."""
    return json.loads((Path(result_dir) / "summary.json").read_text())


def result_badge(result_dir: Path) -> str:
    """One line saying how a result was made: protocol, feature window mode, stories, skips.

    Results written before protocols existed read as the project protocol (what they used).
    """
    prov = summary(result_dir).get("provenance", {})
    mode = prov.get("feature_mode")
    window = prov.get("feature_protocol") or {}
    parts = [f"protocol **{prov.get('protocol', 'project')}**"]
    if mode:
        if window.get("window_s") is not None and window.get("step_s") is not None:
            parts.append(f"features **{mode}** mode ({float(window['window_s']):g} s windows every "
                         f"{float(window['step_s']):g} s)")
        else:
            parts.append(f"features **{mode}** mode")
    else:
        parts.append("feature space (no window mode)")
    train = prov.get("train_stories") or []
    parts.append(f"{len(train)} training stories, test **{prov.get('test_story', '?')}**")
    skipped = prov.get("skipped") or []
    if skipped:
        parts.append(f"{len(skipped)} story(ies) skipped: " + ", ".join(s["story"] for s in skipped[:5]))
    return " · ".join(parts)


def group_table(result_dir: Path, layer: str) -> pd.DataFrame:
    """One row per ROI group at ``layer``: ``group, members, n_voxels, mean_r, mean_cc_norm``."""
    groups = summary(result_dir)["layers"][layer].get("roi_groups", {})
    return pd.DataFrame([{"group": g, "members": ", ".join(v.get("members", [])), "n_voxels": v["n_voxels"],
                          "mean_r": v["mean_r"], "mean_cc_norm": v["mean_cc_norm"]} for g, v in groups.items()],
                        columns=["group", "members", "n_voxels", "mean_r", "mean_cc_norm"])


def layer_names(result_dir: Path) -> list:
    """Layers of an encode folder, in model order."""
    return list(summary(result_dir)["layers"])


def scores(result_dir: Path, layer: str, metric: str) -> np.ndarray:
    """Per-voxel scores ``(n_voxels,)`` (NaN = dropped / excluded voxel) of ``metric`` at ``layer``."""
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    path = Path(result_dir) / f"{metric}_{layer}.npy"
    if not path.exists():
        raise DataError(f"{path} is missing; the encode folder is incomplete — run the encode again")
    return np.load(path)


def layer_table(result_dir: Path) -> pd.DataFrame:
    """One row per layer: ``layer, depth, mean_r, mean_cc_norm`` (from summary.json)."""
    layers = summary(result_dir)["layers"]
    return pd.DataFrame([{"layer": name, "depth": i, "mean_r": v["mean_r"],
                          "mean_cc_norm": v["mean_cc_norm"]} for i, (name, v) in enumerate(layers.items())])


def layer_roi_table(result_dir: Path, metric: str, rois: Optional[list] = None) -> pd.DataFrame:
    """Long table ``layer`` (int depth), ``layer_name``, ``roi``, ``value`` (per-ROI mean of
    ``metric``) — one row per (layer, ROI), for ``rois`` (default all): the layer curve's input."""
    layers = summary(result_dir)["layers"]
    rows = [{"layer": i, "layer_name": name, "roi": roi, "value": stats[f"mean_{metric}"],
             "n_voxels": stats["n_voxels"]}
            for i, (name, v) in enumerate(layers.items()) for roi, stats in v["roi"].items()
            if rois is None or roi in rois]
    return pd.DataFrame(rows, columns=["layer", "layer_name", "roi", "value", "n_voxels"])


def top_rois(result_dir: Path, layer: str, metric: str, n: int = 5) -> list:
    """``"cortex"`` and the ``n`` ROIs with the highest mean ``metric`` at ``layer``."""
    table = roi_table(result_dir, layer)
    others = table[table["roi"] != "cortex"].sort_values(f"mean_{metric}", ascending=False)
    return (["cortex"] if "cortex" in set(table["roi"]) else []) + list(others["roi"][:n])


def roi_chart_table(result_dir: Path, layer: str, metric: str) -> pd.DataFrame:
    """One row per ROI at ``layer``: ``roi, value`` (mean ``metric``), ``n_voxels`` — the ROI bar
    chart's input."""
    table = roi_table(result_dir, layer)
    return table.rename(columns={f"mean_{metric}": "value"})[["roi", "value", "n_voxels"]]


def roi_table(result_dir: Path, layer: str) -> pd.DataFrame:
    """One row per ROI at ``layer``: ``roi, n_voxels, mean_r, mean_cc_norm`` (from summary.json)."""
    rois = summary(result_dir)["layers"][layer]["roi"]
    return pd.DataFrame([{"roi": name, "n_voxels": v["n_voxels"], "mean_r": v["mean_r"],
                          "mean_cc_norm": v["mean_cc_norm"]} for name, v in rois.items()])


def voxel_table(result_dir: Path, layer: str, rois: Optional[dict] = None) -> pd.DataFrame:
    """One row per voxel at ``layer``: ``voxel, r, cc_norm, cc_max, alpha`` (+ one bool column per
    ROI when ``rois`` is given) — the CSV download."""
    d = Path(result_dir)
    table = pd.DataFrame({"voxel": np.arange(len(np.load(d / f"r_{layer}.npy"))),
                          "r": np.load(d / f"r_{layer}.npy"),
                          "cc_norm": np.load(d / f"cc_norm_{layer}.npy"),
                          "cc_max": np.load(d / "cc_max.npy")})
    if (d / f"alpha_{layer}.npy").exists():
        table["alpha"] = np.load(d / f"alpha_{layer}.npy")
    for name, mask in (rois or {}).items():
        if name != "cortex":
            table[f"in_{name}"] = np.asarray(mask, dtype=bool)
    return table


def color_range(values: np.ndarray) -> tuple:
    """(vmin, vmax) for a score map: 0 to the 99th percentile of finite values, rounded up to 0.05."""
    finite = values[np.isfinite(values)]
    top = float(np.percentile(finite, 99)) if finite.size else 1.0
    return 0.0, max(0.05, float(np.ceil(top / 0.05) * 0.05))


# -- flatmaps -----------------------------------------------------------------------------------

def flatmap_available(dataset, subject: str) -> bool:
    """Whether the subject's values can be drawn on a cortex: a pycortex mapping (volumes) or a
    standard surface (nilearn, e.g. fsaverage5)."""
    return dataset.surface(subject) is not None or dataset.surface_space(subject) is not None


def map_png(dataset, subject: str, values: np.ndarray, *, vmin: float, vmax: float, cmap: str,
            title: str = "", label: str = "", threshold: Optional[float] = None,
            view: str = "flat") -> Optional[bytes]:
    """PNG bytes of per-voxel ``values`` ``(n_voxels,)`` on the subject's cortex with ROI outlines:
    a pycortex flatmap for volume datasets, a nilearn fsaverage map (``view`` flat | inflated) for
    surface datasets; None when the subject has neither. Values below ``threshold`` are hidden."""
    mapping = dataset.surface(subject)
    if mapping is not None:
        from core.viz.flatmap import flatmap_png

        return flatmap_png(values, mapping, vmin=vmin, vmax=vmax, cmap=cmap, threshold=threshold,
                           title=title, with_rois=True, colorbar_label=label)
    space = dataset.surface_space(subject)
    if space is None:
        return None
    from core.viz.surface import surface_map_png

    shown = np.asarray(values, dtype=np.float64)
    if threshold is not None:
        shown = np.where(shown >= threshold, shown, np.nan)
    return surface_map_png(shown, space, view=view, cmap=cmap, vmin=vmin, vmax=vmax,
                           rois=dataset.rois(subject), title=title)


def score_flatmap(dataset, subject: str, result_dir: Path, layer: str, metric: str,
                  threshold: float, title: str = "") -> Optional[bytes]:
    """PNG bytes of ``metric`` at ``layer`` on the cortex (values below ``threshold`` hidden), or
    None when the subject has no cortex mapping."""
    values = scores(result_dir, layer, metric)
    vmin, vmax = color_range(values)
    return map_png(dataset, subject, values, vmin=vmin, vmax=vmax, cmap=SCORE_CMAP, title=title,
                   label=metric, threshold=threshold)


def difference_png(dataset, subject: str, delta: np.ndarray, title: str = "", label: str = "Δ") -> Optional[bytes]:
    """A difference map: diverging colours centred at 0 (symmetric range, the 99th percentile of |Δ|)."""
    finite = np.abs(np.asarray(delta, dtype=np.float64))
    finite = finite[np.isfinite(finite)]
    m = float(np.percentile(finite, 99)) if finite.size else 1.0
    m = m if m > 0 else 1.0
    return map_png(dataset, subject, delta, vmin=-m, vmax=m, cmap=DIFF_CMAP, title=title, label=label)


def mesh_rois(dataset, subject: str) -> Optional[dict]:
    """The subject's ROIs as full-mesh masks ``{name: (n_vertices,) bool}`` (surface datasets; None
    for volumes) — outlines for maps of values over every mesh vertex (group means)."""
    space = dataset.surface_space(subject)
    if space is None:
        return None
    return {k: space.to_mesh(np.asarray(m, dtype=np.float64), fill=0.0) > 0
            for k, m in dataset.rois(subject).items() if k != "cortex"}


def webgl_available(dataset, subject: str) -> bool:
    """Whether the static pycortex WebGL viewer can be exported (volume datasets with a pycortex-db)."""
    return dataset.surface(subject) is not None


def surface_view(dataset, subject: str, result_dir: Path, layer: str, metric: str,
                 threshold: Optional[float] = None) -> Optional[str]:
    """Self-contained interactive 3-D HTML (nilearn ``view_surf``, no network) of ``metric`` at
    ``layer`` on the inflated fsaverage surface; None for datasets not on a standard surface."""
    space = dataset.surface_space(subject)
    if space is None:
        return None
    from core.viz.surface import surface_view_html

    values = scores(result_dir, layer, metric)
    vmin, vmax = color_range(values)
    return surface_view_html(values, space, cmap=SCORE_CMAP, vmin=vmin, vmax=vmax,
                             threshold=threshold or None, title=f"{layer} · {metric}")


def export_viewer(dataset, subject: str, result_dir: Path, layer: str, metric: str,
                  threshold: Optional[float] = None) -> Path:
    """Write a static WebGL viewer of ``metric`` at ``layer`` (voxels below ``threshold`` hidden)
    to ``<cache>/webgl/<key>/``; return the folder (kept: a second export is instant)."""
    from core.settings import get_settings
    from core.viz.webgl import export_webgl

    mapping = dataset.surface(subject)
    if mapping is None:
        raise DataError(f"subject {subject} has no cortex mapping (no pycortex-db); no 3D viewer")
    out = get_settings().cache_root / "webgl" / key_hash(str(result_dir), layer, metric, threshold)
    if not (out / "index.html").exists():
        values = scores(result_dir, layer, metric)
        vmin, vmax = color_range(values)
        export_webgl(values, mapping, out, title=f"{layer} {metric}", name=f"{layer}_{metric}",
                     vmin=vmin, vmax=vmax, cmap=SCORE_CMAP, threshold=threshold)
    return out


def viewer_zip(viewer_dir: Path) -> bytes:
    """The WebGL viewer folder as zip bytes (for a download)."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(Path(viewer_dir).rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(viewer_dir).as_posix())
    return buf.getvalue()


