"""``partition``: variance partitioning of two feature spaces per voxel (banded ridge, himalaya).

Dataset + two feature specs (``semantic:minilm,lowlevel:powspec``; a model layer as
``MSPEC#LAYER``) → the encode pipeline's stories, features and designs
(:mod:`core.pipelines.encode`) → :func:`core.analysis.partition.partition_arrays` → a folder::

    preference.npy          (n_voxels,) float32, > 0 prefers the FIRST space, < 0 the second
    unique_<a>.npy, unique_<b>.npy, shared.npy, r2_joint.npy, r2_<a>.npy, r2_<b>.npy
    summary.json            {"subject", "spaces", "names", "definition", "n_voxels",
                             "roi": {roi: {"preference", "unique_<a>", "unique_<b>", "shared",
                                           "r2_joint", "n_voxels"}},
                             "roi_groups": {group: {... same ..., "members"}},
                             "planted": {...} (demo only), "provenance": {...}}

``<a>``, ``<b>`` are the spaces' file-safe names (``semantic:minilm`` → ``semantic_minilm``;
``summary["names"]`` maps them). Means are over voxels with a finite value (NaN = dropped voxel).
Cached in ``<cache>/partitions/<key>/`` (key: dataset, subject, sources, params, grid, code version),
then copied to ``--out``.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from core.encoding.params import EncodeParams
from core.errors import ConfigError
from core.progress import ProgressFn, report, sub_progress
from core.store import atomic_dir, check_result_dir, key_hash, load_json, publish_copy, save_json

CODE_VERSION = "partition-v1"  #: bump when the meaning of a partition result changes
ARRAYS = ("preference", "shared", "r2_joint")


def safe_name(spec: str) -> str:
    """A file-safe name of a feature spec (``semantic:minilm`` → ``semantic_minilm``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", spec).strip("_")


def parse_spaces(text) -> list:
    """``"A,B"`` (or a list) → two distinct specs; one-line ConfigError otherwise."""
    items = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s and s.strip()]
    if len(items) != 2:
        raise ConfigError(f"--spaces takes exactly two feature spaces A,B (e.g. semantic:minilm,lowlevel:powspec); "
                          f"got {len(items)}: {', '.join(items) or 'none'}")
    if items[0] == items[1]:
        raise ConfigError(f"--spaces names {items[0]!r} twice; give two different spaces")
    return items


def _source_layer(spec: str, data_spec: str):
    """(source, layer) of ``FSPEC`` or ``MSPEC#LAYER``."""
    from core.features import source_for

    base, _, layer = spec.partition("#")
    source = source_for(base, data_spec)
    layers = list(source.layers())
    if layer:
        if layer not in layers:
            raise ConfigError(f"{base} has no layer {layer!r}; available: {', '.join(layers)}")
        return source, layer
    if len(layers) != 1:
        raise ConfigError(f"{base} has {len(layers)} layers; name one as {base}#LAYER "
                          f"(e.g. {base}#{layers[-1]})")
    return source, layers[0]


def _region_means(arrays: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray]) -> dict:
    out = {}
    for name, mask in masks.items():
        mask = np.asarray(mask, dtype=bool)
        row = {}
        for key, arr in arrays.items():
            vals = np.asarray(arr, dtype=np.float64)[mask]
            vals = vals[np.isfinite(vals)]
            row[key] = float(vals.mean()) if vals.size else float("nan")
        pref = np.asarray(arrays["preference"], dtype=np.float64)[mask]
        row["n_voxels"] = int(np.isfinite(pref).sum())
        out[name] = row
    return out


def partition_key(dataset, subject: str, sources: Sequence, layers: Sequence[str], params: EncodeParams,
                  roi_groups: Optional[Mapping] = None, n_gammas: int = None) -> str:
    from core.analysis.partition import N_GAMMAS, PARTITION_ALPHAS

    groups = None if roi_groups is None else {k: list(v) for k, v in roi_groups.items()}
    return key_hash(CODE_VERSION, dataset.fingerprint(), subject, [s.fingerprint() for s in sources],
                    list(layers), params.to_dict(), list(PARTITION_ALPHAS), n_gammas or N_GAMMAS, groups)


def compute_partition(dataset, subject: str, spaces: Sequence[str], params: EncodeParams = EncodeParams(),
                      roi_groups: Optional[Mapping] = None, n_gammas: Optional[int] = None,
                      progress: ProgressFn = None) -> tuple:
    """Partition ``spaces`` (A, B) for ``subject``: ``(arrays {file stem: (n_voxels,)}, summary)``."""
    from core.analysis.partition import N_GAMMAS, band_gammas, partition_arrays
    from core.data.roi_groups import group_masks
    from core.features.design import response_matrix
    from core.pipelines.encode import (_warn_skipped, choose_stories, feature_set, package_versions)
    from core.pipelines.evaluate import planted_regions

    t0 = time.time()
    spaces = parse_spaces(spaces)
    pairs = [_source_layer(s, dataset.spec) for s in spaces]
    chosen = choose_stories(dataset, subject, params)
    train, test, skipped = chosen["train"], chosen["test"], chosen["skipped"]
    fsets = []
    for i, (source, layer) in enumerate(pairs):
        fsets.append(feature_set(dataset, source, [layer], train, test, skipped,
                                 sub_progress(progress, 0.2 * i, 0.2 * (i + 1))))
    _warn_skipped(subject, skipped)
    designs = {spec: fs.designs(train, test, params, [layer], dataset)[layer]
               for spec, fs, (_, layer) in zip(spaces, fsets, pairs)}
    report(progress, 0.4, "responses")
    voxels = dataset.voxel_report(subject)
    y_train = response_matrix(dataset, subject, train)
    y_test = np.asarray(dataset.repeats(subject))[:, params.test_start:, :].mean(axis=0)
    n_g = int(n_gammas or N_GAMMAS)
    res = partition_arrays(designs, y_train, y_test, valid=voxels.valid, alphas=_alphas(),
                           gammas=band_gammas(n_g), n_boots=params.n_boots, chunk_len=params.chunk_len,
                           held_frac=params.held_frac, seed=params.seed,
                           progress=sub_progress(progress, 0.4, 0.98))
    a, b = (safe_name(s) for s in spaces)
    arrays = {"preference": res["preference"], f"unique_{a}": res["unique_a"], f"unique_{b}": res["unique_b"],
              "shared": res["shared"], "r2_joint": res["r2_joint"], f"r2_{a}": res["r2_a"],
              f"r2_{b}": res["r2_b"], "gamma_" + a: res["gamma_a"]}
    table_arrays = {k: arrays[k] for k in ("preference", f"unique_{a}", f"unique_{b}", "shared", "r2_joint")}
    rois = dataset.rois(subject)
    groups = group_masks(rois, roi_groups, strict=roi_groups is not None)
    summary = {
        "subject": subject, "spaces": list(spaces), "names": {a: spaces[0], b: spaces[1]},
        "definition": ("R² on the test story vs the repeat mean; unique_A = R²_AB − R²_B, unique_B = "
                       "R²_AB − R²_A, shared = R²_A + R²_B − R²_AB; preference = (unique_A − unique_B) / "
                       "(|unique_A| + |unique_B| + 1e-6): > 0 prefers " + spaces[0] + ", < 0 " + spaces[1]),
        "n_voxels": int(voxels.valid.sum()),
        "roi": _region_means(table_arrays, rois),
        "roi_groups": {g: {**row, "members": list(groups[g]["members"])}
                       for g, row in _region_means(table_arrays, {g: v["mask"] for g, v in groups.items()}).items()},
    }
    planted = planted_regions(dataset, subject)
    if planted:
        summary["planted"] = _region_means(table_arrays, planted)
    summary["provenance"] = {
        "data": dataset.spec, "dataset_fingerprint": dataset.fingerprint(),
        "sources": {s: {"layer": layer, "fingerprint": src.fingerprint()} for s, (src, layer) in zip(spaces, pairs)},
        "model": "himalaya BandedRidgeCV (random_search over band weights) + RidgeCV per space",
        "alphas_himalaya": list(_alphas()), "n_gammas": n_g,
        "protocol": params.protocol, "params": params.to_dict(), "train_stories": train,
        "test_story": test[0], "skipped": skipped,
        "roi_groups": {g: v["members"] for g, v in groups.items()},
        "code_version": CODE_VERSION, "packages": package_versions(), "seconds": round(time.time() - t0, 2),
    }
    return arrays, summary


def _alphas():
    from core.analysis.partition import PARTITION_ALPHAS

    return PARTITION_ALPHAS


def _write(folder: Path, arrays: Mapping[str, np.ndarray], summary: dict, replace: bool) -> None:
    with atomic_dir(folder, replace=replace) as tmp:
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", np.asarray(arr, dtype=np.float32))
        save_json(tmp / "summary.json", summary)


def partition(dataset, subject: str, spaces: Sequence[str], params: EncodeParams = EncodeParams(),
              out_dir: Optional[Path] = None, roi_groups: Optional[Mapping] = None,
              n_gammas: Optional[int] = None, progress: ProgressFn = None) -> dict:
    """Variance partitioning of ``spaces`` (A, B) for ``subject``, cached, and copied to ``out_dir``.

    Returns the summary (module docstring); ``summary["cache_dir"]`` is the cached folder.
    """
    from core.settings import get_settings

    spaces = parse_spaces(spaces)
    if out_dir is not None:
        out_dir = check_result_dir(out_dir, "a partition result")
    pairs = [_source_layer(s, dataset.spec) for s in spaces]
    key = partition_key(dataset, subject, [p[0] for p in pairs], [p[1] for p in pairs], params, roi_groups,
                        n_gammas)
    cache = get_settings().cache_root / "partitions" / key
    if not (cache / "summary.json").exists():
        arrays, summary = compute_partition(dataset, subject, spaces, params, roi_groups, n_gammas, progress)
        _write(cache, arrays, summary, replace=False)
    summary = load_json(cache / "summary.json", f"{cache} is incomplete; delete it and run again")
    if out_dir is not None:
        publish_copy(cache, out_dir)
    report(progress, 1.0, "done")
    return {**summary, "cache_dir": str(cache)}


def _cmd(args) -> int:
    import json

    from core.cli import _tqdm_progress, encode_params_of, roi_groups_of
    from core.data import load_dataset

    spaces = parse_spaces(args.spaces)
    params, groups = encode_params_of(args), roi_groups_of(args)
    with _tqdm_progress("partition", not args.quiet) as progress:
        ds = load_dataset(args.data, progress=progress)
        summary = partition(ds, args.subject, spaces, params, Path(args.out), groups, args.n_gammas, progress)
    print(json.dumps({k: summary[k] for k in ("subject", "spaces", "n_voxels", "roi", "roi_groups")},
                     indent=1, default=str))
    return 0


def add_command(sub) -> None:
    p = sub.add_parser("partition", help="variance partitioning of two feature spaces per voxel (banded ridge): "
                                         "unique / shared variance and a preference map")
    from core.cli import add_study_args

    add_study_args(p)
    p.add_argument("--spaces", required=True,
                   help="two feature specs A,B (e.g. semantic:minilm,lowlevel:powspec; a model layer as "
                        "MSPEC#LAYER); preference > 0 means A-preferring")
    p.add_argument("--n-gammas", type=int, default=None, help="band weightings tried per alpha (default 11)")
    p.set_defaults(func=_cmd)
