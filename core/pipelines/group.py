"""Group encoding: one feature source on many participants, fitted in parallel, plus group summaries.

``encode --subject all|S1,S2,…`` (:func:`encode_group`). Stages:

1. the joblib backend: ``loky`` (processes, default), ``threading``, or a cluster through joblib —
   ``dask`` (``distributed.Client(--scheduler)``: an address that does not answer within
   :data:`CONNECT_TIMEOUT` s is a one-line ConfigError before anything is computed or written) or
   ``ray`` (``ray.util.joblib``; not pinned here);
2. features once per story, here, into the content-addressed cache (``encode.feature_set``);
   workers only load them (on a cluster give the workers a shared ``BTS_CACHE_DIR``, or each
   recomputes them) and fit; skipped-story warnings are printed here, once;
3. ``joblib.Parallel`` over subjects, or subject × layer when there are fewer subjects than jobs
   (``granularity="auto"``). A task is ``encode.encode_subject`` itself (the single-subject
   ``encode`` result); per-layer parts are merged (layer fits are independent: same seed, same
   splits). Oversubscription: a parallel task runs torch and BLAS (threadpoolctl) on
   ``inner_threads`` threads (default 1), so n_jobs tasks use n_jobs cores; a serial run is left
   alone. CPU ridge gives the same bits for any thread count (tested): results equal serial;
4. group summaries (:func:`summarise_group`) and one atomic write of ``out_dir``::

    <subject>/        a single-subject encode result (summary.json, r_/cc_norm_/alpha_<layer>.npy, …)
    group.json        {"data", "features", "subjects", "layers", "metric", "execution",
                       "participants": {subject: {"n_voxels", "best_layer", "layers": {layer:
                           {"mean_r", "mean_cc_norm", "roi": {roi: mean cc_norm},
                            "roi_groups": {group: mean cc_norm}}}}},
                       "test", "regions": {layer | "best": {region: {"n_subjects", "subjects",
                           "mean", "per_subject", "n_positive", "wilcoxon_stat", "wilcoxon_p",
                           "min_possible_p", "note"}}},
                       "mean_maps": {"mesh", "n_vertices", "files": {layer: [mean, count]}} | null,
                       "mean_maps_note"}
    mean_cc_norm_<layer>.npy   (n_vertices,) float32 NaN-aware mean over participants (common mesh only)
    count_cc_norm_<layer>.npy  (n_vertices,) int32 participants with a finite value at each vertex

The test: Wilcoxon signed-rank across participants (``core.analysis.stats.across_subjects``,
``scipy.stats.wilcoxon``, two-sided, exact for small n) of each participant's region-mean cc_norm
against 0 (a model without predictive power); with n participants the smallest p is 2/2^n.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from core.encoding.params import EncodeParams
from core.errors import ConfigError, DataError
from core.progress import ProgressFn, report, sub_progress
from core.store import atomic_dir, save_json

BACKENDS = ("loky", "threading", "dask", "ray")
GRANULARITIES = ("auto", "subject", "layer")
CONNECT_TIMEOUT = 5.0  #: seconds a cluster scheduler has to answer
TEST = ("Wilcoxon signed-rank across participants (scipy.stats.wilcoxon, two-sided, exact for small n) "
        "of each participant's region-mean cc_norm against 0 (no prediction); smallest p = 2/2^n")


def resolve_subjects(dataset, subjects) -> list:
    """``"all"``, ``"S1,S2"`` or a sequence → the subjects, checked against ``dataset.subjects``."""
    if isinstance(subjects, str):
        subjects = list(dataset.subjects) if subjects.strip() == "all" else \
            [s.strip() for s in subjects.split(",") if s.strip()]
    subjects, unknown = list(subjects), [s for s in subjects if s not in dataset.subjects]
    if not subjects or unknown or len(set(subjects)) != len(subjects):
        why = f"unknown {unknown}" if unknown else "one is listed twice" if subjects else "none given"
        raise ConfigError(f"subjects {subjects}: {why}; give --subject all or some of: {', '.join(dataset.subjects)}")
    return subjects


# -- the parallel machinery ---------------------------------------------------------------------

@contextmanager
def joblib_backend(backend: str = "loky", scheduler: Optional[str] = None,
                   timeout: float = CONNECT_TIMEOUT):
    """``joblib.parallel_config`` for ``backend``; ``dask``/``ray`` connect to ``scheduler`` first
    (ConfigError naming it if it does not answer within ``timeout`` s) and disconnect after."""
    from joblib import parallel_config

    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend in ("loky", "threading"):
        if scheduler:
            raise ConfigError(f"--scheduler {scheduler} needs --backend dask or ray (not {backend})")
        with parallel_config(backend=backend):
            yield
        return
    if backend == "ray":  # not pinned here: ray.util.joblib, ray.init(address)
        try:
            import ray
            from ray.util.joblib import register_ray

            ray.init(address=scheduler or "auto", ignore_reinit_error=True)
        except ImportError:
            raise ConfigError("--backend ray needs ray: pip install 'ray[default]' (or use --backend dask)") from None
        except Exception as err:  # ray raises ConnectionError / RuntimeError / ValueError variously
            raise ConfigError(f"ray cluster {scheduler or 'auto'} does not answer ({type(err).__name__}); "
                              "start it (`ray start --head`) or give its address with --scheduler") from None
        register_ray()
        with parallel_config(backend="ray"):
            yield
        return
    if not scheduler:
        raise ConfigError("--backend dask needs --scheduler ADDRESS (e.g. tcp://HOST:8786 of `dask scheduler`)")
    from distributed import Client

    try:
        client = Client(scheduler, timeout=f"{float(timeout)}s", set_as_default=True)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"--scheduler {scheduler!r} is not a dask scheduler address ({err}); give "
                          "tcp://HOST:PORT of `dask scheduler`") from None
    except (OSError, TimeoutError) as err:
        raise ConfigError(f"dask scheduler {scheduler} does not answer within {float(timeout):g} s "
                          f"({type(err).__name__}); start it (`dask scheduler`) or give its tcp://HOST:PORT "
                          "with --scheduler") from None
    try:
        with parallel_config(backend="dask"):
            yield
    finally:
        client.close()


_ENV_LOCK = threading.Lock()
_ENV = {"depth": 0, "saved": None}


@contextmanager
def _task_env(inner_threads: Optional[int]):
    """In a task: ``core`` warnings muted (the parent printed them), torch and BLAS limited to
    ``inner_threads`` (if given); counted, so threads of one process share it and the last restores."""
    log = logging.getLogger("core")
    with _ENV_LOCK:
        if _ENV["depth"] == 0:
            saved = {"log": log.disabled}
            log.disabled = True
            if inner_threads:
                import torch
                from threadpoolctl import threadpool_limits

                saved["torch"] = torch.get_num_threads()
                torch.set_num_threads(int(inner_threads))
                saved["pools"] = threadpool_limits(limits=int(inner_threads))
            _ENV["saved"] = saved
        _ENV["depth"] += 1
    try:
        yield
    finally:
        with _ENV_LOCK:
            _ENV["depth"] -= 1
            if _ENV["depth"] == 0:
                saved, _ENV["saved"] = _ENV["saved"], None
                log.disabled = saved["log"]
                if "torch" in saved:
                    import torch

                    torch.set_num_threads(saved["torch"])
                    saved["pools"].restore_original_limits()


def _fit_task(dataset, subject: str, source, layers: list, params, roi_groups, inner_threads):
    """One task: :func:`encode_subject` of ``subject`` on ``layers`` (runs in a worker)."""
    from core.pipelines.encode import encode_subject

    with _task_env(inner_threads):
        return encode_subject(dataset, subject, source, layers, params, roi_groups)


def merge_layers(parts: Sequence) -> "object":
    """One :class:`EncodingResult` from per-layer results of one subject (in layer order); their
    ceilings and voxel masks must agree. Provenance ``seconds`` is the sum of the parts'."""
    first = parts[0]
    for p in parts[1:]:
        if not (np.array_equal(p.cc_max, first.cc_max, equal_nan=True) and np.array_equal(p.valid, first.valid)):
            raise DataError(f"{first.subject}: per-layer fits disagree on the ceiling or voxels; "
                            "rerun with granularity='subject'")
    merged = copy.copy(first)
    merged.layers = {k: v for p in parts for k, v in p.layers.items()}
    merged.summary = copy.deepcopy(first.summary)
    merged.summary["layers"] = {k: v for p in parts for k, v in p.summary["layers"].items()}
    if "seconds" in merged.provenance:
        merged.provenance["seconds"] = round(sum(p.provenance.get("seconds", 0.0) for p in parts), 2)
    return merged


def fit_subjects(dataset, subjects: Sequence[str], source, layers: Sequence[str],
                 params: EncodeParams = EncodeParams(), roi_groups: Optional[Mapping] = None,
                 n_jobs: Optional[int] = None, backend: str = "loky", scheduler: Optional[str] = None,
                 granularity: str = "auto", inner_threads: Optional[int] = None,
                 connect_timeout: float = CONNECT_TIMEOUT, progress: ProgressFn = None) -> tuple:
    """Encode ``source`` for each subject, fanned out with joblib (module docstring); nothing written.

    Parameters
    ----------
    n_jobs : parallel tasks (None: 1 for loky/threading, -1 = every worker for dask/ray).
    granularity : ``subject``, ``layer`` (one task per subject × layer) or ``auto`` (layer when
        there are several layers and fewer subjects than jobs).
    inner_threads : torch/BLAS threads per parallel task (None: 1; serial runs are left alone).

    Returns
    -------
    ``({subject: EncodingResult}, execution)``: backend, n_jobs, granularity, inner threads, seconds.
    """
    from joblib import Parallel, delayed

    from core.pipelines.encode import _warn_skipped, choose_stories, feature_set

    remote = backend in ("dask", "ray")
    n_jobs = (-1 if remote else 1) if n_jobs is None else int(n_jobs)
    if n_jobs == 0 or n_jobs < -1 or granularity not in GRANULARITIES:
        raise ConfigError(f"--n-jobs {n_jobs} / granularity {granularity!r}: give a positive number of jobs "
                          f"(or -1 for all) and a granularity of {', '.join(GRANULARITIES)}")
    parallel = remote or n_jobs != 1
    inner = (inner_threads or 1) if parallel else inner_threads
    layers = list(layers) if layers else list(source.layers())
    if granularity == "auto":
        granularity = "layer" if len(layers) > 1 and (n_jobs == -1 or len(subjects) < n_jobs) else "subject"
    t0 = time.time()
    with joblib_backend(backend, scheduler, connect_timeout):
        for i, subject in enumerate(subjects):  # features once per story, here, into the cache
            chosen = choose_stories(dataset, subject, params)
            step = sub_progress(progress, 0.3 * i / len(subjects), 0.3 * (i + 1) / len(subjects))
            feature_set(dataset, source, layers, chosen["train"], chosen["test"], chosen["skipped"], step)
            _warn_skipped(subject, chosen["skipped"])
        jobs = [(s, [x]) for s in subjects for x in layers] if granularity == "layer" else \
            [(s, layers) for s in subjects]
        report(progress, 0.3, f"fitting {len(jobs)} task(s) on {backend}")
        out = Parallel(n_jobs=n_jobs, return_as="generator")(
            delayed(_fit_task)(dataset, s, source, ls, params, roi_groups, inner) for s, ls in jobs)
        parts = {}
        for k, ((s, _), res) in enumerate(zip(jobs, out)):
            parts.setdefault(s, []).append(res)
            report(progress, 0.3 + 0.65 * (k + 1) / len(jobs), f"fitted {s} ({k + 1}/{len(jobs)})")
    results = {s: merge_layers(parts[s]) if len(parts[s]) > 1 else parts[s][0] for s in subjects}
    execution = {"backend": backend, "scheduler": scheduler, "n_jobs": n_jobs, "granularity": granularity,
                 "n_tasks": len(jobs), "inner_threads": inner, "seconds": round(time.time() - t0, 2)}
    return results, execution


# -- summaries ----------------------------------------------------------------------------------

def _best_layer(layers: Mapping[str, dict]) -> str:
    finite = {k: v["mean_cc_norm"] for k, v in layers.items() if np.isfinite(v["mean_cc_norm"])}
    return max(finite, key=finite.get) if finite else next(iter(layers))


def participant_table(results: Mapping[str, object]) -> dict:
    """``{subject: {"n_voxels", "best_layer", "layers": {layer: {"mean_r", "mean_cc_norm", "roi":
    {roi: mean cc_norm}, "roi_groups": {group: mean cc_norm}}}}}`` from the results' summaries."""
    def cells(row: dict) -> dict:
        return {"mean_r": row["mean_r"], "mean_cc_norm": row["mean_cc_norm"],
                **{k: {name: v["mean_cc_norm"] for name, v in row.get(k, {}).items()} for k in ("roi", "roi_groups")}}

    return {s: {"n_voxels": res.summary.get("n_voxels"), "best_layer": _best_layer(res.summary["layers"]),
                "layers": {layer: cells(row) for layer, row in res.summary["layers"].items()}}
            for s, res in results.items()}


def region_tests(table: Mapping[str, dict], layers: Sequence[str]) -> dict:
    """Per layer (and ``best``: each participant's best layer) and per region every participant
    has: the Wilcoxon test of :data:`TEST` (``core.analysis.stats.across_subjects`` against 0)."""
    from core.analysis.stats import across_subjects

    out = {}
    for layer in list(layers) + (["best"] if len(layers) > 1 else []):
        per_region = {}
        for s, row in table.items():
            cells = row["layers"][row["best_layer"] if layer == "best" else layer]
            for region, v in {**cells["roi"], **cells["roi_groups"]}.items():
                per_region.setdefault(region, {})[s] = float(v)
        regions = {}
        for region, means in per_region.items():
            if len(means) != len(table):
                continue  # a region not every participant has
            res = across_subjects({s: 0.0 for s in means}, means)
            regions[region] = {"n_subjects": res["n_subjects"], "subjects": res["subjects"], "mean": res["mean_b"],
                               "per_subject": means, "n_positive": res["n_improved"],
                               **{k: res[k] for k in ("wilcoxon_stat", "wilcoxon_p", "min_possible_p", "note")}}
        out[layer] = regions
    return out


def mean_maps(results: Mapping[str, object], spaces: Mapping[str, object], layers: Sequence[str]) -> tuple:
    """NaN-aware mean cc_norm over participants on their common mesh.

    Parameters
    ----------
    results : subject → EncodingResult (cc_norm ``(n_voxels_s,)`` per layer).
    spaces : subject → :class:`core.data.base.SurfaceSpace` or None.

    Returns
    -------
    ``(arrays, info, note)``: ``{"mean_cc_norm_<layer>.npy": (n_vertices,) float32,
    "count_cc_norm_<layer>.npy": (n_vertices,) int32}``, ``{"mesh", "n_vertices", "files"}`` (None
    without a common space) and a one-line note.
    """
    meshes = {(sp.mesh, sp.n_vertices) if sp is not None else None for sp in spaces.values()}
    if None in meshes or len(meshes) != 1:
        return {}, None, ("no group map: the participants have no common surface space (volume data in "
                          "native space); see the per-ROI tests")
    mesh, n_vertices = meshes.pop()
    arrays, files = {}, {}
    for layer in layers:
        stack = np.stack([spaces[s].to_mesh(res.layers[layer].cc_norm) for s, res in results.items()])
        count = np.isfinite(stack).sum(axis=0)
        mean = np.where(count > 0, np.where(np.isfinite(stack), stack, 0.0).sum(axis=0) / np.maximum(count, 1), np.nan)
        files[layer] = [f"mean_cc_norm_{layer}.npy", f"count_cc_norm_{layer}.npy"]
        arrays.update(zip(files[layer], (mean.astype(np.float32), count.astype(np.int32))))
    note = f"mean over {len(results)} participants on {mesh} (count map: participants per vertex)"
    return arrays, {"mesh": mesh, "n_vertices": int(n_vertices), "files": files}, note


def summarise_group(results: Mapping[str, object], spaces: Mapping[str, object]) -> tuple:
    """``(group.json dict, arrays)`` of per-subject results (module docstring)."""
    first = next(iter(results.values()))
    layers = list(first.summary["layers"])
    for s, res in results.items():
        if list(res.summary["layers"]) != layers or res.features != first.features:
            raise ConfigError(f"{s}'s result has features {res.features} / layers {list(res.summary['layers'])}; "
                              f"a group needs one feature source and layers ({first.features}: {layers})")
    table = participant_table(results)
    arrays, info, note = mean_maps(results, spaces, layers)
    summary = {"data": first.provenance.get("data"), "features": first.features, "subjects": list(results),
               "layers": layers, "metric": "cc_norm", "participants": table, "test": TEST,
               "regions": region_tests(table, layers), "mean_maps": info, "mean_maps_note": note}
    return summary, arrays


def _check_group_dir(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir())
                                                      and not (out_dir / "group.json").exists())):
        raise ConfigError(f"output folder {out_dir} exists and is not a group result (no group.json); it would "
                          "be replaced — choose a new or empty --out")
    return out_dir


def write_group(out_dir: Path, summary: dict, arrays: Mapping[str, np.ndarray],
                results: Optional[Mapping[str, object]] = None) -> None:
    """Publish ``out_dir`` atomically: ``group.json``, the map arrays and (given) ``<subject>/``."""
    with atomic_dir(Path(out_dir), replace=True) as tmp:
        for s, res in (results or {}).items():
            res.save(tmp / s, replace=True)
        for name, arr in arrays.items():
            np.save(tmp / name, arr)
        save_json(tmp / "group.json", summary)


def encode_group(dataset, subjects, source, layers: Optional[Sequence[str]], out_dir: Path,
                 params: EncodeParams = EncodeParams(), roi_groups: Optional[Mapping] = None,
                 n_jobs: Optional[int] = None, backend: str = "loky", scheduler: Optional[str] = None,
                 progress: ProgressFn = None, granularity: str = "auto", inner_threads: Optional[int] = None,
                 connect_timeout: float = CONNECT_TIMEOUT) -> dict:
    """Encode ``source`` for ``subjects`` (``"all"``, ``"S1,S2"`` or a list) in parallel and write
    ``out_dir`` (module docstring; replaced atomically, nothing written on failure).

    Parameters as :func:`core.pipelines.encode.encode` and :func:`fit_subjects`. Returns group.json.
    """
    out_dir = _check_group_dir(out_dir)
    subjects = resolve_subjects(dataset, subjects)
    results, execution = fit_subjects(dataset, subjects, source, layers, params, roi_groups, n_jobs, backend,
                                      scheduler, granularity, inner_threads, connect_timeout, progress)
    summary, arrays = summarise_group(results, {s: dataset.surface_space(s) for s in subjects})
    summary["execution"] = execution
    write_group(out_dir, summary, arrays, results)
    report(progress, 1.0, "done")
    return summary


def group_summary(result_dirs: Sequence[Path], out_dir: Path) -> dict:
    """``python -m core group-summary DIR [DIR …] --out OUT``: group.json (+ mean maps) of
    existing single-subject encode results of one dataset and feature source."""
    from core.data import load_dataset
    from core.encoding import EncodingResult

    out_dir = _check_group_dir(out_dir)
    results = {}
    for d in result_dirs:
        res = EncodingResult.load(d)
        if res.subject in results:
            raise ConfigError(f"subject {res.subject!r} appears twice ({d}); give one result per subject")
        results[res.subject] = res
    if not results:
        raise ConfigError("group-summary needs encode result folders, one per subject")
    data = {r.provenance.get("data") for r in results.values()}
    if len(data) != 1 or None in data:
        raise ConfigError(f"group-summary needs results of one dataset (provenance.data); got {sorted(map(str, data))}")
    ds = load_dataset(data.pop())
    summary, arrays = summarise_group(results, {s: ds.surface_space(s) for s in results})
    summary["results"] = {s: str(d) for s, d in zip(results, result_dirs)}
    write_group(out_dir, summary, arrays)
    return summary


def add_command(sub) -> None:
    """``group-summary`` (``encode --subject all|S1,S2`` is the fitting command)."""
    import json

    def run(args) -> int:
        print(json.dumps(group_summary([Path(d) for d in args.results], Path(args.out)), indent=1, default=str))
        return 0

    p = sub.add_parser("group-summary", help="group.json (per-participant table, per-ROI Wilcoxon across "
                                             "participants, mean map on a common mesh) of encode results")
    p.add_argument("results", nargs="+", help="single-subject encode result folders, one per subject")
    p.add_argument("--out", required=True, help="output folder (replaced atomically)")
    p.set_defaults(func=run)
