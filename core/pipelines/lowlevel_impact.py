"""``lowlevel-impact``: a model's alignment with and without what low-level spaces explain (paper
Evaluation 2; :mod:`core.analysis.lowlevel_impact` for the definitions).

Stages: stories (``core.pipelines.encode.choose_stories``) → the model's FeatureSet and the removed
low-level spaces' features (concatenated along columns when several) on every story used (train +
test) → per layer, :func:`core.analysis.lowlevel_impact.residualize` over all those stories → the
full encoding (``cached_encode``, shared with ``encode``) and the residual one
(:func:`core.encoding.fit.fit_encoding` on ``FeatureSet.from_arrays``) → per-voxel percent drop of
cc_norm and per-region drops. Cached under ``<cache>/lowlevel_impact/<key>/`` (content-addressed),
copied to ``--out``::

    summary.json  {"subject", "model", "remove", "metric": "cc_norm",
                   "layers": {layer: {"mean_full", "mean_resid", "roi": {roi: {"full", "resid",
                              "drop_percent", "n_voxels"}}, "roi_groups": {...}, "planted": {...}}},
                   "provenance": {...}}
    drop_<layer>.npy   (n_voxels,) float32 percent drop of cc_norm (NaN: unscored or cc_norm ≤ 0)
    full_<layer>.npy, resid_<layer>.npy   (n_voxels,) float32 cc_norm of the full / residual features

A voxel the full features score but whose residual prediction is constant (the residual design is
all zero: the removed spaces explain the layer completely) gets residual cc_norm 0 (drop 100 %),
not NaN.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from core.errors import ConfigError
from core.progress import ProgressFn, report, sub_progress
from core.store import atomic_dir, check_result_dir, key_hash, load_json, publish_copy, save_json

CODE_VERSION = "lowlevel-impact-v1"  #: bump when the meaning of the result changes
METRIC = "cc_norm"


def _remove_sources(remove: Sequence[str]) -> list:
    from core.features import SPACE_PREFIXES, resolve_source

    specs = [str(s).strip() for s in (remove or []) if str(s).strip()]
    if not specs:
        raise ConfigError("--remove needs at least one feature space, e.g. --remove lowlevel:powspec")
    if len(set(specs)) != len(specs):
        raise ConfigError(f"--remove lists a space twice: {specs}")
    bad = [s for s in specs if s.partition(":")[0] not in SPACE_PREFIXES]
    if bad:
        raise ConfigError(f"--remove takes feature spaces (lowlevel:<name>, semantic:<name>), not {bad}")
    return [resolve_source(s) for s in specs]


def impact_key(dataset, subject: str, source, layers: Sequence[str], removed: Sequence, params,
               roi_groups: Optional[Mapping], alphas, n_folds: int) -> str:
    """Cache key: the full encoding's key, the removed spaces' fingerprints, the CV settings, the
    code version."""
    from core.pipelines.encode import encode_key

    return key_hash(CODE_VERSION, encode_key(dataset, subject, source, layers, params, roi_groups),
                    [(r.spec, r.fingerprint()) for r in removed], np.asarray(alphas).tolist(), int(n_folds))


def lowlevel_impact(dataset, subject: str, model_source, layers: Optional[Sequence[str]],
                    remove: Sequence[str], params=None, out_dir: Optional[Path] = None,
                    progress: ProgressFn = None, roi_groups: Optional[Mapping] = None,
                    alphas=None, n_folds: Optional[int] = None) -> dict:
    """Residualise ``model_source``'s ``layers`` on the ``remove`` spaces, refit, report the drop.

    Parameters
    ----------
    dataset, subject : as for ``encode``. model_source : any feature source (a model or a space).
    layers : its layers (None = all). remove : feature specs (``lowlevel:powspec`` …), ≥ 1.
    params : :class:`core.encoding.params.EncodeParams` (default: the project protocol).
    out_dir : where to copy the result (new, empty, or an earlier lowlevel-impact result); None =
        only the cache.
    roi_groups : group → member ROIs (None: the defaults).
    alphas, n_folds : residualisation CV (default: :mod:`core.analysis.lowlevel_impact`'s released values).

    Returns
    -------
    The summary dict (also ``summary.json``), with ``"result_dir"`` the cache folder.
    """
    from core.analysis import lowlevel_impact as li
    from core.encoding.params import EncodeParams
    from core.settings import get_settings

    params = params or EncodeParams()
    alphas = li.DEFAULT_ALPHAS if alphas is None else np.asarray(alphas, dtype=np.float64)
    n_folds = li.N_FOLDS if n_folds is None else int(n_folds)
    removed = _remove_sources(remove)
    layers = list(layers) if layers else list(model_source.layers())
    if out_dir is not None:
        out_dir = check_result_dir(out_dir, "a lowlevel-impact result")
    key = impact_key(dataset, subject, model_source, layers, removed, params, roi_groups, alphas, n_folds)
    cached = get_settings().cache_root / "lowlevel_impact" / key
    if not (cached / "summary.json").exists():
        _compute(dataset, subject, model_source, layers, removed, params, roi_groups, alphas, n_folds,
                 cached, progress)
    summary = load_json(cached / "summary.json", f"{cached} is incomplete; delete it and run again")
    if out_dir is not None:
        publish_copy(cached, out_dir)
    report(progress, 1.0, "done")
    return {**summary, "result_dir": str(cached)}


def _compute(dataset, subject, source, layers, removed, params, roi_groups, alphas, n_folds,
             final: Path, progress: ProgressFn) -> None:
    from core.analysis.lowlevel_impact import percent_drop, region_drop, residualize
    from core.data.roi_groups import group_masks
    from core.encoding.fit import fit_encoding, nanmean
    from core.encoding.result import EncodingResult
    from core.features.design import response_matrix
    from core.features.featureset import FeatureSet
    from core.pipelines.encode import (CODE_VERSION as ENCODE_VERSION, _warn_skipped, cached_encode,
                                       choose_stories, feature_set, package_versions)
    from core.pipelines.evaluate import planted_regions

    t0 = time.time()
    chosen = choose_stories(dataset, subject, params)
    train, test, skipped = chosen["train"], chosen["test"], chosen["skipped"]
    report(progress, 0.0, "model features")
    feats = feature_set(dataset, source, layers, train, test, skipped, sub_progress(progress, 0.0, 0.3))
    _warn_skipped(subject, skipped)
    stories = list(train) + list(test)
    low_parts = []
    for i, src in enumerate(removed):
        fs = FeatureSet.from_source(dataset, src, None, stories,
                                    sub_progress(progress, 0.3 + 0.1 * i / len(removed),
                                                 0.3 + 0.1 * (i + 1) / len(removed)))
        low_parts.append(fs.layers[fs.layer_names()[0]])
    lowlevel = {s: np.concatenate([p[s] for p in low_parts], axis=1) for s in stories}

    report(progress, 0.4, "full encoding")
    full_dir = cached_encode(dataset, subject, source, layers, params, roi_groups,
                             sub_progress(progress, 0.4, 0.6))
    full = EncodingResult.load(full_dir)

    resid = {}
    for j, layer in enumerate(layers):
        report(progress, 0.6 + 0.1 * j / len(layers), f"residualise {layer}")
        resid[layer] = residualize(feats.layers[layer], lowlevel, stories, alphas, n_folds)
    resid_fs = FeatureSet.from_arrays(f"{source.spec} - [{', '.join(r.spec for r in removed)}]", resid)
    voxels = dataset.voxel_report(subject)
    rois = dataset.rois(subject)
    groups = group_masks(rois, roi_groups, strict=roi_groups is not None)
    report(progress, 0.7, "residual encoding")
    res = fit_encoding(resid_fs.designs(train, test, params, layers, dataset),
                       response_matrix(dataset, subject, train), dataset.repeats(subject), params,
                       valid=voxels.valid, rois=rois, roi_groups=groups, subject=subject,
                       features=resid_fs.spec, progress=sub_progress(progress, 0.7, 0.98))
    planted = planted_regions(dataset, subject)
    table = {}
    with atomic_dir(final, replace=False) as tmp:
        for layer in layers:
            a_full = np.asarray(full.layers[layer].cc_norm, dtype=np.float32)
            a_resid = np.asarray(res.layers[layer].cc_norm, dtype=np.float32)
            # a voxel scored with the full features whose residual prediction is constant (r
            # undefined: the residual design is all 0, fully explained) has no alignment left: 0
            flat = np.isnan(res.layers[layer].r) & voxels.valid & np.isfinite(a_full)
            a_resid = np.where(flat, np.float32(0.0), a_resid)
            np.save(tmp / f"drop_{layer}.npy", percent_drop(a_full, a_resid).astype(np.float32))
            np.save(tmp / f"full_{layer}.npy", a_full)
            np.save(tmp / f"resid_{layer}.npy", a_resid)
            g = region_drop(a_full, a_resid, {k: v["mask"] for k, v in groups.items()})
            for name, row in g.items():
                row["members"] = list(groups[name]["members"])
            table[layer] = {"mean_full": nanmean(a_full), "mean_resid": nanmean(a_resid),
                            "roi": region_drop(a_full, a_resid, rois), "roi_groups": g}
            if planted:
                table[layer]["planted"] = region_drop(a_full, a_resid, planted)
        summary = {
            "subject": subject, "model": source.spec, "remove": [r.spec for r in removed],
            "metric": METRIC, "layers": table,
            "provenance": {
                "data": dataset.spec, "dataset_fingerprint": dataset.fingerprint(), **feats.provenance,
                "remove_fingerprints": {r.spec: r.fingerprint() for r in removed},
                "lowlevel_columns": {r.spec: int(p[stories[0]].shape[1]) for r, p in zip(removed, low_parts)},
                "residualise": {"alphas": np.asarray(alphas).tolist(), "n_folds": int(n_folds),
                                "stories": stories, "method": "sklearn RidgeCV per fold (LOO alpha per "
                                "feature), standardised low-level columns; folds by story (>= 3 stories)"},
                "full_result": str(full_dir), "protocol": params.protocol, "params": params.to_dict(),
                "train_stories": train, "test_story": test[0], "skipped": skipped,
                "roi_groups": {k: v["members"] for k, v in groups.items()},
                "code_version": CODE_VERSION, "encode_code_version": ENCODE_VERSION,
                "packages": package_versions(), "seconds": round(time.time() - t0, 2),
            },
        }
        save_json(tmp / "summary.json", summary)


# -- CLI ----------------------------------------------------------------------------------------

def _cmd(args) -> int:
    import json

    from core.cli import _resolve_features, _tqdm_progress, encode_params_of, roi_groups_of
    from core.data import load_dataset

    params = encode_params_of(args)
    remove = [s for s in (args.remove or "").split(",") if s.strip()]
    if not remove:
        raise ConfigError("--remove needs at least one feature space, e.g. --remove lowlevel:powspec")
    groups = roi_groups_of(args)
    with _tqdm_progress("lowlevel-impact", not args.quiet) as progress:
        _remove_sources(remove)  # fail fast, before loading models or data
        ds = load_dataset(args.data, progress=progress)
        source, layers = _resolve_features(args)
        summary = lowlevel_impact(ds, args.subject, source, layers, remove, params, Path(args.out),
                                  progress, roi_groups=groups, n_folds=args.folds)
    out = {k: summary[k] for k in ("subject", "model", "remove", "metric")}
    out["layers"] = {layer: {"mean_full": v["mean_full"], "mean_resid": v["mean_resid"],
                             "roi_groups": {g: r["drop_percent"] for g, r in v["roi_groups"].items()}}
                     for layer, v in summary["layers"].items()}
    out["out"] = args.out
    print(json.dumps(out, indent=1))
    return 0


def add_command(sub) -> None:
    """``python -m core lowlevel-impact …`` (added by ``core.cli._add_pipeline_commands``)."""
    p = sub.add_parser("lowlevel-impact", help="residualise model features on low-level spaces, refit, "
                                               "report the percent drop of cc_norm per voxel and ROI")
    from core.cli import add_study_args

    add_study_args(p, model_args=True)
    p.add_argument("--remove", required=True,
                   help="low-level spaces to regress out, comma-separated (e.g. lowlevel:powspec,"
                        "lowlevel:diphones,lowlevel:triphones,lowlevel:articulation)")
    p.add_argument("--folds", type=int, default=10, help="residualisation CV folds (released: 10)")
    p.set_defaults(func=_cmd)
