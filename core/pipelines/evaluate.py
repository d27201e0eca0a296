"""``evaluate-run``: a tuning run's exported model vs its pretrained model, on the held-out test story.

Stages: read the run (``run.json``: data, subject, model; ``export/``) → encode the pretrained model
and the tuned one (``ckpt:<run>``) on every layer with the same protocol and window mode (cached
encodings, ``core.pipelines.encode.cached_encode``) → :func:`core.analysis.compare.compare_results`
over ROIs and ROI groups (and, on the demo, the planted voxel types) → ``<run>/evaluation/``::

    summary.json   {"run", "data", "subject", "pretrained", "tuned", "protocol", "feature_mode",
                    "pretrained_result", "tuned_result", "metric",
                    "layers": {layer | "best": {"layer_base", "layer_other",
                               "regions": {region: {"n_voxels", "mean_a", "mean_b", "mean_delta",
                                                    "share_improved", "wilcoxon_p", ...}}}}}
    delta_<layer>.npy   (n_voxels,) float32 per-voxel Δ metric (tuned − pretrained), NaN = unscored
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from core.errors import ConfigError
from core.progress import ProgressFn, report, sub_progress
from core.store import atomic_dir, check_result_dir, load_json, save_json


def read_run(run_dir: Path) -> dict:
    """``run.json`` of a tuning run folder (ConfigError naming the folder when it is not one)."""
    run_dir = Path(run_dir).expanduser()
    info = load_json(run_dir / "run.json", f"{run_dir} is not a tuning run folder (no run.json); give "
                     "the --out folder of `python -m core tune`", ConfigError)
    if not (run_dir / "export" / "config.json").is_file():
        raise ConfigError(f"tuning run {run_dir} has no export yet (unfinished or failed); resume it with "
                          f"`python -m core tune … --out {run_dir} --resume`")
    return info


def planted_regions(dataset, subject: Optional[str] = None) -> dict:
    """``{"planted:<type>": mask}`` of the simulated planted voxel types (of ``subject`` where
    participants differ, ``demo-group``; empty for real data)."""
    gt = dataset.ground_truth(subject)
    if gt is None:
        return {}
    vt = np.asarray(gt["voxel_type"])
    return {f"planted:{name}": vt == code for code, name in enumerate(gt["type_names"]) if code > 0}


def regions_of(dataset, subject: str) -> dict:
    """Regions a comparison reports: the subject's ROIs, the default ROI groups and (demo) the
    planted voxel types, as ``{name: (n_voxels,) bool}``."""
    from core.data.roi_groups import group_masks

    rois = dataset.rois(subject)
    return {**rois, **{g: v["mask"] for g, v in group_masks(rois).items()}, **planted_regions(dataset, subject)}


def compare_dirs(dirs: list, out_dir: Path, metric: str = "cc_norm", dataset=None) -> dict:
    """``python -m core compare BASE OTHER […] --out DIR``: each OTHER against BASE.

    The results must be of one subject on one dataset: the same content fingerprint in their
    provenance (cached results are shared between copies of a dataset at different paths), or
    else the same data spec; regions as :func:`regions_of` of ``dataset`` (default: the BASE's
    data spec, opened). Writes ``DIR/summary.json`` ``{"base", "metric", "subject", "data",
    "others": {folder: {layer: {...}}}}`` and ``DIR/delta_<k>_<layer>.npy`` (k = 1, 2, … for each
    OTHER) — per-voxel Δ (OTHER − BASE).
    """
    from core.analysis.compare import compare_results
    from core.data import load_dataset
    from core.encoding import EncodingResult

    if len(dirs) < 2:
        raise ConfigError("compare needs a baseline result and at least one other: BASE OTHER [OTHER …]")
    results = [EncodingResult.load(d) for d in dirs]
    prints = {r.provenance.get("dataset_fingerprint") for r in results}
    if None in prints:
        prints = {r.provenance.get("data") for r in results}
    if len(prints) != 1 or None in prints:
        specs = sorted({str(r.provenance.get("data")) for r in results})
        raise ConfigError(f"compare needs results of one dataset; got {len(prints)} different ones ({', '.join(specs)})")
    base = results[0]
    ds = dataset if dataset is not None else load_dataset(base.provenance.get("data"))
    regions = regions_of(ds, base.subject)
    summary = {"base": str(dirs[0]), "metric": metric, "subject": base.subject,
               "data": base.provenance.get("data"), "others": {}}
    arrays = {}
    for k, (d, other) in enumerate(zip(dirs[1:], results[1:]), start=1):
        cmp = compare_results(base, other, regions, metric)
        summary["others"][str(d)] = cmp["layers"]
        arrays.update({f"delta_{k}_{layer}.npy": v for layer, v in cmp["deltas"].items()})
    out_dir = check_result_dir(out_dir, "a comparison")
    with atomic_dir(out_dir, replace=True) as tmp:
        for name, arr in arrays.items():
            np.save(tmp / name, arr)
        save_json(tmp / "summary.json", summary)
    return summary


def compare_subjects(pairs: list, out_dir: Path, metric: str = "cc_norm", layer: str = "best") -> dict:
    """``python -m core compare-subjects BASE:OTHER [BASE:OTHER …] --out DIR``: model OTHER vs BASE
    across subjects — one (BASE, OTHER) pair of encode results per subject; per region (ROIs, ROI
    groups, planted types present in every subject) the per-subject means of ``metric`` at
    ``layer`` (``best`` = each result's best layer) and a Wilcoxon signed-rank test over subjects
    (:func:`core.analysis.stats.across_subjects`; with n subjects the smallest two-sided p is 2/2^n).

    Writes ``DIR/summary.json`` ``{"metric", "layer", "subjects", "pairs", "regions": {region:
    {... across_subjects ..., "per_subject": {subject: [base, other]}}}}`` and returns it.
    """
    from core.analysis.compare import compare_results
    from core.analysis.stats import across_subjects
    from core.data import load_dataset
    from core.encoding import EncodingResult

    if not pairs:
        raise ConfigError("compare-subjects needs BASE:OTHER pairs of encode results, one per subject")
    per_region_a, per_region_b, listed = {}, {}, []
    for base_dir, other_dir in pairs:
        base, other = EncodingResult.load(base_dir), EncodingResult.load(other_dir)
        if base.subject in listed:
            raise ConfigError(f"subject {base.subject!r} appears in two pairs; give one pair per subject")
        listed.append(base.subject)
        if not base.provenance.get("data") or base.provenance.get("data") != other.provenance.get("data"):
            raise ConfigError(f"{base_dir} and {other_dir} must be encode results of one dataset (provenance.data)")
        ds = load_dataset(base.provenance["data"])
        cmp = compare_results(base, other, regions_of(ds, base.subject), metric)
        row = cmp["layers"][layer] if layer in cmp["layers"] else None
        if row is None:
            raise ConfigError(f"layer {layer!r} is not in both results of {base.subject}; use best or a common layer")
        for region, stats in row["regions"].items():
            per_region_a.setdefault(region, {})[base.subject] = stats["mean_a"]
            per_region_b.setdefault(region, {})[base.subject] = stats["mean_b"]
    regions = {}
    for region in per_region_a:
        if len(per_region_a[region]) != len(listed):
            continue  # a region not every subject has
        res = across_subjects(per_region_a[region], per_region_b[region])
        res["per_subject"] = {s: [per_region_a[region][s], per_region_b[region][s]] for s in listed}
        regions[region] = res
    summary = {"metric": metric, "layer": layer, "subjects": listed,
               "pairs": [[str(a), str(b)] for a, b in pairs], "regions": regions}
    out_dir = check_result_dir(out_dir, "a comparison")
    with atomic_dir(out_dir, replace=True) as tmp:
        save_json(tmp / "summary.json", summary)
    return summary


def evaluate_run(run_dir: Path, protocol: str = "project", metric: str = "cc_norm",
                 mode: Optional[str] = None, progress: ProgressFn = None) -> dict:
    """Encode the run's tuned and pretrained models on the test story and compare them.

    Parameters
    ----------
    run_dir : a finished tuning run folder (``python -m core tune --out``).
    protocol : encoding protocol (``project`` | ``released``), the same for both models.
    metric : ``cc_norm`` (default) or ``r``.
    mode : layer-feature window mode for both models (``paper`` | ``fast``; default the dataset's:
        fast on the demo, paper elsewhere).

    Returns
    -------
    The summary written to ``<run_dir>/evaluation/summary.json`` (module docstring).
    """
    from core.analysis.compare import compare_results
    from core.data import load_dataset
    from core.encoding import EncodeParams, EncodingResult
    from core.features import source_for
    from core.models import parse_layers
    from core.pipelines.encode import cached_encode

    run_dir = Path(run_dir).expanduser().resolve()
    info = read_run(run_dir)
    ds = load_dataset(info["data"], progress=sub_progress(progress, 0.0, 0.02))
    subject = info["subject"]
    params = EncodeParams.for_protocol(protocol)
    results = {}
    for i, (name, spec) in enumerate((("pretrained", info["model"]), ("tuned", f"ckpt:{run_dir}"))):
        source = source_for(spec, info["data"], mode)
        results[name] = cached_encode(ds, subject, source, parse_layers(source, "all"), params,
                                      progress=sub_progress(progress, 0.02 + 0.45 * i, 0.47 + 0.45 * i))
    base, tuned = (EncodingResult.load(results[k]) for k in ("pretrained", "tuned"))
    report(progress, 0.95, "comparing")
    cmp = compare_results(base, tuned, regions_of(ds, subject), metric)
    prov = tuned.provenance
    summary = {"run": str(run_dir), "data": info["data"], "subject": subject, "pretrained": info["model"],
               "tuned": f"ckpt:{run_dir}", "control": info.get("control"), "protocol": protocol,
               "feature_mode": prov.get("feature_mode"), "metric": metric,
               "pretrained_result": str(results["pretrained"]), "tuned_result": str(results["tuned"]),
               "layers": cmp["layers"]}
    with atomic_dir(run_dir / "evaluation", replace=True) as tmp:
        for layer, delta in cmp["deltas"].items():
            np.save(tmp / f"delta_{layer}.npy", delta)
        save_json(tmp / "summary.json", summary)
    report(progress, 1.0, "done")
    return summary


def region_line(summary: dict, region: str, layer: str = "best") -> Optional[str]:
    """One readable line for ``region`` at ``layer`` of an evaluation summary (None if absent)."""
    row = summary["layers"].get(layer, {}).get("regions", {}).get(region)
    if row is None:
        return None
    return (f"{region}: {row['mean_a']:.3f} → {row['mean_b']:.3f} (Δ {row['mean_delta']:+.3f}, "
            f"{100 * row['share_improved']:.0f} % of {row['n_voxels']} voxels up, Wilcoxon p "
            f"{row['wilcoxon_p']:.2g})")
