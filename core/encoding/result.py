"""``EncodingResult``: the scores of one encoding (per layer), saved in the ``encode`` file contract.

A folder written by :meth:`EncodingResult.save` (DESIGN.md, ``encode``)::

    summary.json   {"subject", "features", "n_voxels", "n_voxels_total", "dropped",
                    "layers": {name: {"mean_r", "mean_cc_norm",
                                      "roi": {roi: {"mean_cc_norm", "mean_r", "n_voxels", "n_voxels_r"}},
                                      "roi_groups": {group: {... same ..., "members": [roi, ...]}}}},
                    "provenance": {...}}
    r_<layer>.npy, cc_norm_<layer>.npy, alpha_<layer>.npy    (n_voxels,) float32, NaN = dropped
    cc_max.npy     (n_voxels,) float64
    weights_<layer>.npy  (n_delayed_features, n_kept_voxels) float32     optional
    pred_<layer>.npy     (n_test_trs, n_kept_voxels) float32            optional

``n_voxels`` of an ROI counts the voxels that entered its ``mean_cc_norm`` (finite cc_norm);
``n_voxels_r`` those that entered ``mean_r``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from core.errors import DataError
from core.store import atomic_dir, load_json, save_json


@dataclass
class LayerScores:
    """Per-voxel scores of one layer.

    r, cc_norm, alpha : ``(n_voxels,)`` float32 (NaN = dropped or excluded voxel).
    weights : optional ``(n_delayed_features, n_kept_voxels)`` float32 ridge weights.
    prediction : optional ``(n_test_trs, n_kept_voxels)`` float32 test-story prediction.
    """

    r: np.ndarray
    cc_norm: np.ndarray
    alpha: np.ndarray
    weights: Optional[np.ndarray] = None
    prediction: Optional[np.ndarray] = None


@dataclass
class EncodingResult:
    """Scores of one feature source (all its layers) on one subject.

    subject : subject id. features : feature / model spec. cc_max : ``(n_voxels,)`` float64.
    layers : layer name → :class:`LayerScores`, in model order.
    valid : ``(n_voxels,)`` bool, voxels kept (not dropped as NaN / constant).
    summary : the ``summary.json`` dict (layer means, ROI and ROI-group tables, provenance).
    """

    subject: str
    features: str
    cc_max: np.ndarray
    layers: dict
    valid: np.ndarray
    summary: dict = field(default_factory=dict)

    @property
    def provenance(self) -> dict:
        return self.summary.get("provenance", {})

    def layer_names(self) -> list:
        return list(self.layers)

    def save(self, out_dir: Path, replace: bool = True) -> Path:
        """Write the folder atomically (``replace``: an existing result is replaced; False keeps an
        existing folder, for content-addressed caches). Returns ``out_dir``."""
        out_dir = Path(out_dir)
        with atomic_dir(out_dir, replace=replace) as tmp:
            np.save(tmp / "cc_max.npy", np.asarray(self.cc_max, dtype=np.float64))
            for name, ls in self.layers.items():
                np.save(tmp / f"r_{name}.npy", np.asarray(ls.r, dtype=np.float32))
                np.save(tmp / f"cc_norm_{name}.npy", np.asarray(ls.cc_norm, dtype=np.float32))
                np.save(tmp / f"alpha_{name}.npy", np.asarray(ls.alpha, dtype=np.float32))
                for field_, stem in _OPTIONAL.items():
                    if getattr(ls, field_) is not None:
                        np.save(tmp / f"{stem}_{name}.npy", getattr(ls, field_))
            save_json(tmp / "valid.json", {"dropped": np.flatnonzero(~self.valid).tolist()})
            save_json(tmp / "summary.json", self.summary)
        return out_dir

    @classmethod
    def load(cls, result_dir: Path, arrays: bool = True) -> "EncodingResult":
        """Read a folder written by :meth:`save` (or by an older ``encode``); ``arrays=False``
        reads only the summary (layers hold no arrays)."""
        d = Path(result_dir)
        summary = load_json(d / "summary.json", f"{d} is not an encoding result (no summary.json); run "
                            "`python -m core encode` to make one")
        layers = {}
        cc_max = np.zeros(0)
        if arrays:
            cc_max = _load(d / "cc_max.npy")
            for name in summary.get("layers", {}):
                opt = {field_: np.load(d / f"{stem}_{name}.npy") for field_, stem in _OPTIONAL.items()
                       if (d / f"{stem}_{name}.npy").exists()}
                layers[name] = LayerScores(r=_load(d / f"r_{name}.npy"), cc_norm=_load(d / f"cc_norm_{name}.npy"),
                                           alpha=_load(d / f"alpha_{name}.npy"), **opt)
        else:
            layers = {name: None for name in summary.get("layers", {})}
        n_total = int(summary.get("n_voxels_total", len(cc_max)))
        valid = np.ones(n_total, dtype=bool)
        if (d / "valid.json").exists():
            valid[json.loads((d / "valid.json").read_text())["dropped"]] = False
        return cls(subject=summary.get("subject", ""), features=summary.get("features", ""),
                   cc_max=cc_max, layers=layers, valid=valid, summary=summary)


_OPTIONAL = {"weights": "weights", "prediction": "pred"}  #: LayerScores field → file stem


def _load(path: Path) -> np.ndarray:
    if not path.exists():
        raise DataError(f"{path} is missing; the encoding folder is incomplete — encode again")
    return np.load(path)


def region_table(r: np.ndarray, ccn: np.ndarray, masks: Mapping[str, np.ndarray]) -> dict:
    """Per-region means: ``{name: {"mean_cc_norm", "mean_r", "n_voxels", "n_voxels_r"}}``.

    ``n_voxels`` counts the voxels that entered ``mean_cc_norm`` (finite cc_norm), ``n_voxels_r``
    those that entered ``mean_r`` (finite r). Means are NaN for an empty selection.
    """
    from core.encoding.scores import roi_summary

    by_r, by_ccn = roi_summary(r, masks), roi_summary(ccn, masks)
    return {name: {"mean_cc_norm": by_ccn[name]["mean"], "mean_r": by_r[name]["mean"],
                   "n_voxels": by_ccn[name]["n_voxels"], "n_voxels_r": by_r[name]["n_voxels"]}
            for name in masks}
