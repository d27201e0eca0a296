"""What a job can run: one function per kind, ``fn(params, progress) -> result`` (JSON-able).

Kinds and their params:

- ``"encode"``: ``{"data": SPEC, "subject": S, "source": FSPEC|MSPEC, "layers": [..] | None,
  "mode": None | "paper" | "fast" (models; default per dataset), "precision": None | "fp32" |
  "bf16" (models), "protocol": "project" |
  "released" (default project), "params": {EncodeParams fields overriding the protocol's},
  "roi_groups": None | {group: [roi, ...]}}`` → the :func:`core.pipelines.encode.cached_encode` folder (str).
  Same numbers as ``python -m core encode --data SPEC --subject S (--features FSPEC | --model MSPEC
  --layers L) --out DIR``.
- ``"dataset"``: ``{"data": SPEC}`` → opens (for ``demo``: builds, first time ~minutes) the
  dataset into the cache; result = its root folder (str). Same as ``python -m core datasets
  describe --data SPEC``.
- ``"tune"``: ``{"data", "subject", "model", "out" (default <run dir>/tune), "preset", "params",
  "control", "resume"}`` → the export folder (str). Same as ``python -m core tune``.
- ``"evaluate"``, ``"partition"``, ``"lowlevel-impact"``, ``"preference"``, ``"probe"``,
  ``"significance"``: the analyses, :mod:`core.jobs.analysis_kinds`.

Heavy kinds (:data:`HEAVY`: ``encode``, ``dataset``, ``tune`` and the analyses) run one at a time per device: their worker
waits for the device slot (``core.jobs.worker.device_slot``) before running. Light kinds run at
once. More kinds (a test's, a plugin's) are added with :func:`register_kind`, whose ``module`` the
worker process imports before looking the kind up.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

from core.errors import JobError
from core.jobs.analysis_kinds import ANALYSIS_KINDS
from core.progress import ProgressFn, sub_progress
from core.store import key_hash


def encode_params(params: dict):
    """``EncodeParams`` of a job: ``params["protocol"]`` (default project) with the overrides of
    ``params["params"]`` (``EncodeParams.to_dict`` fields)."""
    from core.encoding.params import EncodeParams

    fields = dict(params.get("params") or {})
    protocol = params.get("protocol") or fields.pop("protocol", None) or "project"
    fields.pop("protocol", None)
    base = EncodeParams.for_protocol(protocol).to_dict()
    return EncodeParams.from_dict({**base, **fields})


def run_encode(params: dict, progress: ProgressFn = None) -> str:
    """Encode job: open the dataset, resolve the source, ``cached_encode``; return the folder."""
    from core.data import load_dataset
    from core.pipelines.encode import cached_encode
    from core.features import source_for

    ds = load_dataset(params["data"], progress=sub_progress(progress, 0.0, 0.05))
    source = source_for(params["source"], params["data"], params.get("mode"), params.get("precision"))
    out = cached_encode(ds, params["subject"], source, params.get("layers") or None,
                        encode_params(params), params.get("roi_groups"),
                        progress=sub_progress(progress, 0.05, 1.0))
    return str(out)


def run_dataset(params: dict, progress: ProgressFn = None) -> str:
    """Dataset job: open (build, for the demo) the dataset; return its root folder."""
    from core.data import load_dataset

    return str(load_dataset(params["data"], progress=progress).root)


def run_tune(params: dict, progress: ProgressFn = None) -> str:
    """Tune job (heavy): ``{"data", "subject", "model", "out" (default: <run dir>/tune), "preset"
    (demo), "params" ({TuneParams overrides}), "control", "resume"}`` → the export folder (str).
    Same as ``python -m core tune``."""
    from pathlib import Path

    from core.jobs.runner import current_run_dir
    from core.pipelines.tune import tune

    out = params.get("out") or (Path(current_run_dir()) / "tune" if current_run_dir() else None)
    if out is None:
        raise JobError("a tune job needs params['out'] (the run folder) outside a job worker")
    summary = tune(params["data"], params["subject"], params["model"], Path(out),
                   params.get("params") or None, params.get("preset") or "demo",
                   params.get("control"), bool(params.get("resume")), progress)
    return summary["export"] or summary["out"]


KINDS: Dict[str, Callable[[dict, ProgressFn], object]] = {
    "encode": run_encode,
    "dataset": run_dataset,
    "tune": run_tune,
    **ANALYSIS_KINDS,
}
HEAVY = {"encode", "dataset", "tune", *ANALYSIS_KINDS}  #: kinds holding a device slot while they run (one per device)
MODULES: Dict[str, str] = {}  #: kind → module registering it (imported by the worker), if not built in


def register_kind(name: str, fn: Callable[[dict, ProgressFn], object], *, heavy: bool = False,
                  module: Optional[str] = None) -> None:
    """Add the job kind ``name`` running ``fn(params, progress) -> result`` (JSON-able; a path for
    :func:`core.jobs.start_job` to tell whether a done run's result still exists).

    Parameters
    ----------
    name : the kind, as given to ``start_job``; a built-in kind cannot be replaced.
    fn : the function the worker calls.
    heavy : whether the job must hold the device slot while it runs (see :data:`HEAVY`).
    module : importable name of the module whose import registers the kind (default
        ``fn.__module__``); the worker, a fresh process, imports it (``job.json`` records it).
    """
    if name in KINDS and name not in MODULES:
        raise JobError(f"job kind {name!r} is built in; register the new kind under another name")
    KINDS[name] = fn
    MODULES[name] = module or fn.__module__
    if heavy:
        HEAVY.add(name)
    else:
        HEAVY.discard(name)


def is_heavy(kind: str) -> bool:
    """Whether jobs of ``kind`` hold the device slot (one heavy job per device at a time)."""
    return kind in HEAVY


def job_key(kind: str, params: dict) -> str:
    """Identity of a job: for an encode, the cache key of its result; else a hash of the params."""
    if kind == "encode":
        from core.data import load_dataset
        from core.pipelines.encode import encode_key
        from core.features import source_for

        ds = load_dataset(params["data"])
        source = source_for(params["source"], params["data"], params.get("mode"), params.get("precision"))
        layers = params.get("layers") or source.layers()
        return encode_key(ds, params["subject"], source, layers, encode_params(params),
                          params.get("roi_groups"))
    return key_hash(kind, params)

