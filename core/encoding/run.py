"""End-to-end voxelwise encoding of one feature source on one subject (the ``encode`` command).

Dataset + feature source → TR features (cached) → delayed, z-scored design → ridge with per-voxel
bootstrap-CV alpha on the training stories → prediction of the held-out test story → per-voxel r
against the mean of the test repeats, noise ceiling cc_max (Schoppe) and cc_norm → ROI summaries.
Writes the DESIGN.md ``encode`` contract into ``out_dir`` atomically::

    summary.json                {"subject", "features", "n_voxels", "layers": {name: {"mean_r",
                                 "mean_cc_norm", "roi": {roi: {"mean_cc_norm", "n_voxels", ...}}}},
                                 "provenance": {...}}
    r_<layer>.npy, cc_norm_<layer>.npy, alpha_<layer>.npy   (n_voxels,) float32, NaN = dropped voxel
    cc_max.npy                  (n_voxels,) float64
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from core.progress import ProgressFn, report, sub_progress
from core.store import atomic_dir, key_hash, save_json

CODE_VERSION = "encode-v1"  #: bump when the meaning of an encoding result changes


@dataclass(frozen=True)
class EncodeParams:
    """Encoding parameters; defaults are the paper's (Moussa et al. 2025, Evaluation 1).

    delays : FIR delays in TRs (1–4). alphas : ridge grid ``logspace(1, 4, 15)``.
    n_boots : bootstraps (3). chunk_len : TRs per CV chunk (20). held_frac : chunks held out (0.25).
    min_cc_max : voxels with a smaller noise ceiling get no cc_norm (excluded, not divided by ~0).
    seed : bootstrap seed.
    """

    delays: tuple = (1, 2, 3, 4)
    alphas: tuple = tuple(np.logspace(1, 4, 15).tolist())
    n_boots: int = 3
    chunk_len: int = 20
    held_frac: float = 0.25
    min_cc_max: float = 0.1
    seed: int = 0
    train_on_val: bool = field(default=True)  #: encoding uses train + validation stories


def package_versions() -> dict:
    """Versions of the packages that determine the numbers (for provenance)."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("numpy", "scipy", "torch", "himalaya", "transformers", "h5py", "pycortex"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def encode(dataset, subject: str, source, layers: Optional[Sequence[str]], out_dir: Path,
           params: EncodeParams = EncodeParams(), progress: ProgressFn = None) -> dict:
    """Fit and score an encoding model per layer; write results to ``out_dir``; return the summary.

    Parameters
    ----------
    dataset : core.data.base.Dataset
    subject : subject id (e.g. "S1" for the demo, "UTS01").
    source : a FeatureSource (``core.features.resolve_source(spec)``).
    layers : layer names of ``source`` (None = all).
    out_dir : output folder; replaced atomically when complete.
    """
    from core.encoding.ceiling import cc_norm as _cc_norm, noise_ceiling
    from core.encoding.ridge import bootstrap_ridge
    from core.encoding.scores import pearson_columns, roi_summary
    from core.features.design import design_matrix, response_matrix
    from core.features.pipeline import tr_features

    t0 = time.time()
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "summary.json").exists():
        from core.errors import ConfigError

        raise ConfigError(f"output folder {out_dir} exists and is not an encode result (no summary.json); "
                          f"it would be replaced — choose a new or empty --out")
    if subject not in dataset.subjects:
        from core.errors import DataError

        raise DataError(f"unknown subject {subject!r}; available: {', '.join(dataset.subjects)}")
    layers = list(layers) if layers else list(source.layers())
    split = dataset.split(subject)
    train = split["train"] + (split["val"] if params.train_on_val else [])
    test = split["test"]
    if not train or not test:
        from core.errors import DataError

        raise DataError(f"subject {subject!r} needs training stories and the test story "
                        f"{dataset.test_story!r}; found train={train}, test={test}")

    report(progress, 0.0, "features")
    feats = tr_features(dataset, source, layers, stories=train + test,
                        progress=sub_progress(progress, 0.0, 0.5))
    report(progress, 0.5, "responses")
    voxels = dataset.voxel_report(subject)
    valid = voxels.valid
    y_train = response_matrix(dataset, subject, train)[:, valid]
    repeats = dataset.repeats(subject)
    cc_max = noise_ceiling(repeats)
    cc_max[~valid] = np.nan
    y_test = repeats.mean(axis=0)[:, valid]
    rois = dataset.rois(subject)
    n_vox = dataset.n_voxels(subject)

    summary = {"subject": subject, "features": source.spec, "n_voxels": int(valid.sum()),
               "n_voxels_total": int(n_vox), "dropped": voxels.summary(), "layers": {}}
    arrays = {"cc_max.npy": cc_max}
    for i, layer in enumerate(layers):
        lo, hi = 0.5 + 0.5 * i / len(layers), 0.5 + 0.5 * (i + 1) / len(layers)
        report(progress, lo, f"ridge {layer}")
        x_train = design_matrix(feats[layer], train, params.delays)
        x_test = design_matrix(feats[layer], test, params.delays)
        fit = bootstrap_ridge(x_train, y_train, alphas=np.asarray(params.alphas), n_boots=params.n_boots,
                              chunk_len=params.chunk_len, held_frac=params.held_frac, seed=params.seed,
                              progress=sub_progress(progress, lo, hi))
        pred = x_test @ fit.weights
        r = np.full(n_vox, np.nan, dtype=np.float32)
        r[valid] = pearson_columns(pred, y_test)
        alpha = np.full(n_vox, np.nan, dtype=np.float32)
        alpha[valid] = fit.alphas
        ccn = _cc_norm(r, cc_max, min_cc_max=params.min_cc_max).astype(np.float32)
        roi_r = roi_summary(r, rois)
        roi_ccn = roi_summary(ccn, rois)
        summary["layers"][layer] = {
            "mean_r": float(np.nanmean(r)),
            "mean_cc_norm": float(np.nanmean(ccn)) if np.isfinite(ccn).any() else float("nan"),
            "roi": {name: {"mean_cc_norm": roi_ccn[name]["mean"], "mean_r": roi_r[name]["mean"],
                           "n_voxels": roi_r[name]["n_voxels"]} for name in rois},
        }
        arrays.update({f"r_{layer}.npy": r, f"cc_norm_{layer}.npy": ccn, f"alpha_{layer}.npy": alpha})
    summary["provenance"] = {
        "data": dataset.spec, "dataset_fingerprint": dataset.fingerprint(),
        "features": source.spec, "source_fingerprint": source.fingerprint(),
        "train_stories": train, "test_story": test[0], "n_repeats": int(repeats.shape[0]),
        "params": asdict(params), "code_version": CODE_VERSION, "packages": package_versions(),
        "seconds": round(time.time() - t0, 2),
    }
    with atomic_dir(Path(out_dir)) as tmp:
        for name, arr in arrays.items():
            np.save(tmp / name, arr)
        save_json(tmp / "summary.json", summary)
    report(progress, 1.0, "done")
    return summary


def encode_key(dataset, subject: str, source, layers: Sequence[str], params: EncodeParams) -> str:
    """Cache key of an encoding result (dataset, subject, source weights/params, layers, params)."""
    return key_hash(CODE_VERSION, dataset.fingerprint(), subject, source.fingerprint(), list(layers),
                    asdict(params))


def cached_encode(dataset, subject: str, source, layers: Optional[Sequence[str]] = None,
                  params: EncodeParams = EncodeParams(), progress: ProgressFn = None) -> Path:
    """Encode into ``<cache>/encodings/<key>/`` unless it is already there; return the folder."""
    from core.settings import get_settings

    layers = list(layers) if layers else list(source.layers())
    out = get_settings().cache_root / "encodings" / encode_key(dataset, subject, source, layers, params)
    if not (out / "summary.json").exists():
        encode(dataset, subject, source, layers, out, params, progress)
    return out
