"""Dataset views for the Data and Learn pages (part of the :mod:`core.studio` facade)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from core.errors import ConfigError
from core.studio.results import layer_names, scores, summary


# -- data page ----------------------------------------------------------------------------------

def story_table(dataset) -> pd.DataFrame:
    """One row per story: ``story, role, n_trs, minutes`` (role: test / val / train)."""
    rows = []
    for s in dataset.stories:
        role = "test" if s == dataset.test_story else "validation" if s == dataset.val_story else "train"
        rows.append({"story": s, "role": role, "n_trs": dataset.n_trs(s),
                     "minutes": round(dataset.n_trs_run(s) * dataset.tr / 60.0, 1)})
    return pd.DataFrame(rows)


def transcript(dataset, story: str) -> str:
    """The story's words joined with spaces."""
    return " ".join(dataset.words(story).labels)


def words_per_tr(dataset, story: str) -> pd.DataFrame:
    """One row per TR of the run (``R - 5`` stamps): ``tr, start_s, n_words, words, response_row``.

    TR ``k`` holds the words whose onset falls in its acquisition window
    (:func:`core.data.timing.tr_window`); ``response_row`` is ``k - 10`` for the rows kept by the
    ``[10:-5]`` trim, else -1.
    """
    from core.data import timing

    ev = dataset.words(story)
    n = len(dataset.tr_stamps(story))
    starts = np.array([timing.tr_window(k, dataset.tr)[0] for k in range(n)])
    idx = np.searchsorted(starts + dataset.tr, ev.onsets, side="right")
    counts = np.bincount(idx[(idx >= 0) & (idx < n)], minlength=n)
    words = [[] for _ in range(n)]
    for lab, k in zip(ev.labels, idx):
        if 0 <= k < n:
            words[k].append(lab)
    rows = np.arange(n) - timing.TRIM_START
    rows[(rows < 0) | (np.arange(n) >= n - timing.TRIM_END)] = -1
    return pd.DataFrame({"tr": np.arange(n), "start_s": starts, "n_words": counts,
                         "words": [" ".join(w) for w in words], "response_row": rows})


def response_preview(dataset, subject: str, story: str, voxels) -> pd.DataFrame:
    """Long table ``time_s, voxel, response`` of a few voxels' responses to ``story``."""
    voxels = [int(v) for v in voxels]
    n_vox = dataset.n_voxels(subject)
    bad = [v for v in voxels if not 0 <= v < n_vox]
    if bad:
        raise ConfigError(f"voxel indices {bad} out of range 0..{n_vox - 1}")
    from core.data import timing

    y = dataset.responses(subject, story)[:, voxels]
    t = timing.response_stamps(dataset.n_trs_run(story), dataset.tr)
    return pd.DataFrame({"time_s": np.repeat(t, len(voxels)), "voxel": np.tile(voxels, len(t)).astype(str),
                         "response": y.reshape(-1)})


def voxel_counts(dataset, subject: str) -> pd.DataFrame:
    """Voxel counts: total, kept, NaN, constant, and per ROI."""
    rep = dataset.voxel_report(subject)
    rows = [{"what": "all voxels", "n": rep.n_voxels}, {"what": "kept for analysis", "n": int(rep.valid.sum())},
            {"what": "dropped: NaN/inf", "n": len(rep.nan)}, {"what": "dropped: constant", "n": len(rep.constant)},
            {"what": "dropped: NaN/inf in test repeats", "n": len(rep.nonfinite_repeats)},
            {"what": "dropped: constant in a test repeat", "n": len(rep.constant_repeats)}]
    rows += [{"what": f"ROI {name}", "n": int(np.sum(m))} for name, m in dataset.rois(subject).items()
             if name != "cortex"]
    return pd.DataFrame(rows)


def noise_ceiling(dataset, subject: str, protocol: str = "project") -> np.ndarray:
    """cc_max ``(n_voxels,)`` float64 from the test-story repeats under ``protocol`` (NaN for
    dropped voxels, incl. those with non-finite repeats) — the same array as an encode's
    ``cc_max.npy`` (``core.pipelines.encode.subject_ceiling``); cached."""
    from core.encoding.params import EncodeParams
    from core.pipelines.encode import subject_ceiling

    return subject_ceiling(dataset, subject, EncodeParams.for_protocol(protocol))


def ceiling_flatmap(dataset, subject: str) -> Optional[bytes]:
    """PNG of the noise ceiling on the cortex (flatmap or fsaverage map), or None without a mapping."""
    from core.studio.results import map_png

    return map_png(dataset, subject, noise_ceiling(dataset, subject), vmin=0.0, vmax=1.0, cmap="viridis",
                   title=f"{subject} noise ceiling", label="cc_max")


def top_voxels(dataset, subject: str, n: int = 3) -> list:
    """Indices of the ``n`` voxels with the highest noise ceiling."""
    cc = noise_ceiling(dataset, subject)
    order = np.argsort(np.where(np.isfinite(cc), cc, -np.inf))[::-1]
    return [int(v) for v in order[:n]]


# -- learn page ---------------------------------------------------------------------------------

def _planted(dataset, subject: Optional[str] = None) -> Optional[tuple]:
    """``(type_names list, voxel_type (n_voxels,) int codes)`` of the simulated truth (of ``subject``
    where participants differ, ``demo-group``); None for real data."""
    gt = dataset.ground_truth(subject)
    if gt is None:
        return None
    return [str(n) for n in gt["type_names"]], np.asarray(gt["voxel_type"])


def ground_truth_counts(dataset, subject: str) -> Optional[pd.DataFrame]:
    """Planted voxels per ROI and type (demo only): ``roi, type, n_voxels, share`` for the ROIs
    holding planted voxels (``share`` = fraction of the ROI's voxels); None for real data."""
    planted = _planted(dataset, subject)
    if planted is None:
        return None
    names, vt = planted
    rows = []
    for roi, mask in dataset.rois(subject).items():
        if roi == "cortex" or not np.any(mask & (vt > 0)):
            continue
        for code, name in enumerate(names[1:], start=1):
            n = int(np.sum(mask & (vt == code)))
            rows.append({"roi": roi, "type": name, "n_voxels": n, "share": n / max(int(mask.sum()), 1)})
    return pd.DataFrame(rows, columns=["roi", "type", "n_voxels", "share"])


def ground_truth_flatmap(dataset, subject: str) -> Optional[bytes]:
    """PNG of the planted voxel types (none / acoustic / semantic / mixed) on the cortex."""
    from core.studio.results import map_png

    planted = _planted(dataset, subject)
    if planted is None:
        return None
    names, codes = planted
    vt = codes.astype(np.float32)
    vt[vt == 0] = np.nan
    names = names[1:]
    return map_png(dataset, subject, vt, vmin=0.5, vmax=len(names) + 0.5, cmap=_types_cmap(),
                   title="planted voxel types (" + ", ".join(f"{i + 1} {n}" for i, n in enumerate(names)) + ")",
                   label="planted type")


TYPE_COLORS = {"acoustic": "#f58518", "semantic": "#4c78a8", "mixed": "#b279a2"}  #: chart colours


@lru_cache(maxsize=1)
def _types_cmap() -> str:
    """Register (once) and name a 3-colour matplotlib colormap for acoustic / semantic / mixed."""
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap

    name = "bts_voxel_types"
    if name not in colormaps:
        colormaps.register(ListedColormap(list(TYPE_COLORS.values()), name=name))
    return name


def scores_by_type(dataset, result_dir: Path, metric: str = "cc_norm", subject: Optional[str] = None) -> Optional[pd.DataFrame]:
    """Mean ``metric`` per planted voxel type and layer (demo): ``layer, depth, type, value``.

    The check of the whole method on the demo: an acoustic space should score on acoustic voxels,
    a semantic one on semantic voxels. None for real data (no ground truth). ``subject``: the
    result's subject (default: read from the result).
    """
    planted = _planted(dataset, subject or summary(result_dir).get("subject"))
    if planted is None:
        return None
    names, vt = planted
    rows = []
    for depth, layer in enumerate(layer_names(result_dir)):
        vals = scores(result_dir, layer, metric)
        for code, name in enumerate(names):
            sel = (vt == code) & np.isfinite(vals)
            rows.append({"layer": layer, "depth": depth, "type": name,
                         "value": float(vals[sel].mean()) if sel.any() else float("nan")})
    return pd.DataFrame(rows)


def best_layer(result_dir: Path, metric: str = "cc_norm") -> str:
    """The layer with the highest mean ``metric`` over cortex (summary.json)."""
    layers = summary(result_dir)["layers"]
    return max(layers, key=lambda name: np.nan_to_num(layers[name][f"mean_{metric}"], nan=-np.inf))
