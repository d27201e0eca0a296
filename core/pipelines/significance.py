"""``significance``: per-voxel block-permutation p-values of test r, BH-FDR q-values, per-ROI counts.

Two ways in:

- :func:`significance` — dataset + feature source: re-encodes through the encode pipeline's pieces
  (:mod:`core.pipelines.encode`: stories, features, designs) with
  ``fit_encoding(..., keep_predictions=True)``, then tests each layer's test-story prediction;
- :func:`significance_from_result` — an encode result folder that holds ``pred_<layer>.npy``
  (``EncodingResult.save`` of a fit with ``keep_predictions``): no refit.

Definitions in :mod:`core.analysis.stats`. Output folder::

    p_<layer>.npy, q_<layer>.npy   (n_voxels,) float32, NaN = not tested (dropped voxel)
    significant_<layer>.npy        (n_voxels,) bool (q ≤ alpha)
    r_<layer>.npy                  (n_voxels,) float32, the observed test r
    summary.json   {"subject", "features", "n_perm", "block_trs", "alpha", "seed", "test",
                    "layers": {layer: {"n_tested", "n_significant", "share", "mean_r",
                               "roi": {roi: {"n_tested", "n_significant", "share"}},
                               "roi_groups": {...}, "planted": {...} (demo)}},
                    "provenance": {...}}
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from core.analysis.stats import ALPHA, BLOCK_TRS, N_PERM
from core.encoding.params import EncodeParams
from core.errors import ConfigError, DataError
from core.progress import ProgressFn, report, sub_progress
from core.store import atomic_dir, check_result_dir, save_json

CODE_VERSION = "significance-v1"
TEST_DEFINITION = ("one-sided block permutation of the test story's measured response (repeat mean): "
                   "blocks of block_trs TRs shuffled, r recomputed with the fixed prediction; p_method "
                   "normal: upper tail of a normal fitted to the voxel's permutation null, empirical: "
                   "(1 + #{r_perm >= r}) / (1 + n_perm); Benjamini-Hochberg q over tested voxels")


def _check_out(out_dir: Path) -> Path:
    return check_result_dir(out_dir, "a significance result")


def layer_significance(predictions: Mapping[str, np.ndarray], y_test: np.ndarray, valid: np.ndarray,
                     regions: Mapping[str, Mapping[str, np.ndarray]], n_perm: int = N_PERM,
                     block_trs: int = BLOCK_TRS, alpha: float = ALPHA, seed: int = 0,
                     progress: ProgressFn = None, method: str = "normal") -> tuple:
    """Test every layer's prediction ``(n_test, n_valid)`` against ``y_test (n_test, n_voxels)``.

    regions : ``{"roi": {...}, "roi_groups": {...}, ...}`` masks per table.
    Returns ``(arrays {file stem: array}, layers table)``.
    """
    from core.analysis.stats import region_significance, significance_arrays

    valid = np.asarray(valid, dtype=bool)
    n_vox = valid.size
    arrays, table = {}, {}
    for i, (layer, pred) in enumerate(predictions.items()):
        report(progress, i / len(predictions), f"permutations {layer}")
        pred = np.asarray(pred)
        if pred.shape != (y_test.shape[0], int(valid.sum())):
            raise DataError(f"layer {layer}: prediction {pred.shape} does not match the test story "
                            f"({y_test.shape[0]} TRs, {int(valid.sum())} kept voxels)")
        res = significance_arrays(pred, y_test[:, valid], n_perm, block_trs, alpha, seed, method)
        full = {k: np.full(n_vox, np.nan) for k in ("p", "q", "r")}
        for k in full:
            full[k][valid] = res[k]
        sig = np.zeros(n_vox, dtype=bool)
        sig[valid] = res["significant"]
        tested = np.isfinite(full["p"])
        arrays.update({f"p_{layer}": full["p"].astype(np.float32), f"q_{layer}": full["q"].astype(np.float32),
                       f"r_{layer}": full["r"].astype(np.float32), f"significant_{layer}": sig})
        n_t = int(tested.sum())
        row = {"n_tested": n_t, "n_significant": int(sig.sum()), "share": sig.sum() / n_t if n_t else float("nan"),
               "mean_r": float(np.nanmean(full["r"])) if n_t else float("nan")}
        for name, masks in regions.items():
            row[name] = region_significance(sig, tested, masks)
        table[layer] = row
    report(progress, 1.0, "tested")
    return arrays, table


def _regions(dataset, subject: str, roi_groups: Optional[Mapping]) -> tuple:
    from core.data.roi_groups import group_masks
    from core.pipelines.evaluate import planted_regions

    rois = dataset.rois(subject)
    groups = group_masks(rois, roi_groups, strict=roi_groups is not None)
    regions = {"roi": rois, "roi_groups": {g: v["mask"] for g, v in groups.items()}}
    planted = planted_regions(dataset, subject)
    if planted:
        regions["planted"] = planted
    return regions, {g: v["members"] for g, v in groups.items()}


def _write(out_dir: Path, arrays: Mapping[str, np.ndarray], summary: dict) -> None:
    with atomic_dir(out_dir, replace=True) as tmp:
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", arr)
        save_json(tmp / "summary.json", summary)


def significance(dataset, subject: str, source, layers: Optional[Sequence[str]], out_dir: Path,
                 params: EncodeParams = EncodeParams(), n_perm: int = N_PERM, block_trs: int = BLOCK_TRS,
                 alpha: float = ALPHA, seed: int = 0, roi_groups: Optional[Mapping] = None,
                 progress: ProgressFn = None, method: str = "normal") -> dict:
    """Encode ``source`` (``layers``) for ``subject`` keeping the test predictions, then test them.

    Writes ``out_dir`` (module docstring) and returns the summary.
    """
    from core.data.roi_groups import group_masks
    from core.encoding.fit import fit_encoding
    from core.features.design import response_matrix
    from core.pipelines.encode import _warn_skipped, choose_stories, feature_set, package_versions

    t0 = time.time()
    out_dir = _check_out(out_dir)
    layers = list(layers) if layers else list(source.layers())
    chosen = choose_stories(dataset, subject, params)
    train, test, skipped = chosen["train"], chosen["test"], chosen["skipped"]
    feats = feature_set(dataset, source, layers, train, test, skipped, sub_progress(progress, 0.0, 0.3))
    _warn_skipped(subject, skipped)
    voxels = dataset.voxel_report(subject)
    rois = dataset.rois(subject)
    repeats = np.asarray(dataset.repeats(subject))
    result = fit_encoding(feats.designs(train, test, params, layers, dataset),
                          response_matrix(dataset, subject, train), repeats, params, valid=voxels.valid,
                          rois=rois, roi_groups=group_masks(rois, roi_groups, strict=roi_groups is not None),
                          subject=subject, features=source.spec, keep_predictions=True,
                          progress=sub_progress(progress, 0.3, 0.6))
    y_test = repeats[:, params.test_start:, :].mean(axis=0)
    regions, members = _regions(dataset, subject, roi_groups)
    arrays, table = layer_significance({k: v.prediction for k, v in result.layers.items()}, y_test, voxels.valid,
                                     regions, n_perm, block_trs, alpha, seed, sub_progress(progress, 0.6, 0.98),
                                     method)
    summary = {"subject": subject, "features": source.spec, "n_perm": int(n_perm), "block_trs": int(block_trs),
               "alpha": float(alpha), "seed": int(seed), "p_method": method, "test": TEST_DEFINITION, "layers": table,
               "provenance": {"data": dataset.spec, "dataset_fingerprint": dataset.fingerprint(),
                              **feats.provenance, "protocol": params.protocol, "params": params.to_dict(),
                              "train_stories": train, "test_story": test[0], "skipped": skipped,
                              "roi_groups": members, "code_version": CODE_VERSION,
                              "packages": package_versions(), "seconds": round(time.time() - t0, 2)}}
    _write(out_dir, arrays, summary)
    report(progress, 1.0, "done")
    return summary


def significance_from_result(result_dir: Path, out_dir: Path, n_perm: int = N_PERM,
                             block_trs: int = BLOCK_TRS, alpha: float = ALPHA, seed: int = 0,
                             roi_groups: Optional[Mapping] = None, progress: ProgressFn = None,
                             method: str = "normal") -> dict:
    """Test the predictions saved in an encode result folder (``pred_<layer>.npy``), no refit."""
    from core.data import load_dataset
    from core.encoding.result import EncodingResult

    result_dir = Path(result_dir)
    out_dir = _check_out(out_dir)
    res = EncodingResult.load(result_dir)
    preds = {k: v.prediction for k, v in res.layers.items() if v.prediction is not None}
    if not preds:
        raise DataError(f"{result_dir} holds no test predictions (pred_<layer>.npy); run significance with "
                        f"--data/--subject/--features (it re-encodes) instead")
    prov = res.provenance
    if not prov.get("data"):
        raise DataError(f"{result_dir}/summary.json has no provenance.data; cannot find the test story")
    ds = load_dataset(prov["data"])
    params = EncodeParams.from_dict(prov.get("params"))
    y_test = np.asarray(ds.repeats(res.subject))[:, params.test_start:, :].mean(axis=0)
    regions, members = _regions(ds, res.subject, roi_groups)
    arrays, table = layer_significance(preds, y_test, res.valid, regions, n_perm, block_trs, alpha, seed, progress,
                                       method)
    summary = {"subject": res.subject, "features": res.features, "n_perm": int(n_perm),
               "block_trs": int(block_trs), "alpha": float(alpha), "seed": int(seed), "p_method": method, "test": TEST_DEFINITION,
               "layers": table, "provenance": {"result": str(result_dir), "data": prov["data"],
                                               "roi_groups": members, "code_version": CODE_VERSION}}
    _write(out_dir, arrays, summary)
    return summary


def _cmd(args) -> int:
    import json

    from core.cli import _resolve_features, _tqdm_progress, encode_params_of, roi_groups_of
    from core.data import load_dataset

    groups = roi_groups_of(args)
    with _tqdm_progress("significance", not args.quiet) as progress:
        if args.result:
            if args.data or args.subject or args.features or args.model:
                raise ConfigError("--result takes no --data/--subject/--features/--model (they are the result's)")
            summary = significance_from_result(Path(args.result), Path(args.out), args.n_perm, args.block_trs,
                                               args.alpha, args.seed, groups, progress, args.p_method)
        else:
            if not args.data or not args.subject:
                raise ConfigError("give --data and --subject (with --features or --model/--layers), or --result DIR")
            params = encode_params_of(args)
            ds = load_dataset(args.data, progress=progress)
            source, layers = _resolve_features(args)
            summary = significance(ds, args.subject, source, layers, Path(args.out), params, args.n_perm,
                                   args.block_trs, args.alpha, args.seed, groups, progress, args.p_method)
    out = {k: summary[k] for k in ("subject", "features", "n_perm", "block_trs", "alpha", "p_method")}
    out["layers"] = {k: {kk: v[kk] for kk in ("n_tested", "n_significant", "share", "mean_r")}
                     for k, v in summary["layers"].items()}
    print(json.dumps(out, indent=1, default=str))
    return 0


def add_command(sub) -> None:
    p = sub.add_parser("significance", help="per-voxel block-permutation significance of test r with "
                                            "Benjamini-Hochberg FDR")
    from core.cli import add_study_args

    add_study_args(p, subject_required=False, model_args=True)
    p.add_argument("--result", help="instead of re-encoding: an encode result folder holding pred_<layer>.npy")
    p.add_argument("--n-perm", dest="n_perm", type=int, default=N_PERM, help=f"permutations (default {N_PERM})")
    p.add_argument("--block-trs", dest="block_trs", type=int, default=BLOCK_TRS,
                   help=f"permutation block length in TRs (default {BLOCK_TRS})")
    p.add_argument("--alpha", type=float, default=ALPHA, help=f"FDR level (default {ALPHA})")
    p.add_argument("--p-method", dest="p_method", choices=("normal", "empirical"), default="normal",
                   help="p-value from the permutations: normal (a normal fitted to each voxel's permutation "
                        "null; default) or empirical (counts; never below 1/(n_perm+1), too coarse for FDR "
                        "over many voxels)")
    p.set_defaults(func=_cmd)
