"""What a job can run: one function per kind, ``fn(params, progress) -> result`` (JSON-able).

Kinds and their params:

- ``"encode"``: ``{"data": SPEC, "subject": S, "source": FSPEC|MSPEC, "layers": [..] | None,
  "mode": None | "paper" | "fast" (models; default per dataset), "params": {EncodeParams fields}}`` → the :func:`core.encoding.run.cached_encode` folder (str).
  Same numbers as ``python -m core encode --data SPEC --subject S (--features FSPEC | --model MSPEC
  --layers L) --out DIR``.
- ``"dataset"``: ``{"data": SPEC}`` → opens (for ``demo``: builds, first time ~minutes) the
  dataset into the cache; result = its root folder (str). Same as ``python -m core datasets
  describe --data SPEC``.
"""

from __future__ import annotations

from typing import Callable, Dict

from core.progress import ProgressFn, sub_progress
from core.store import key_hash


def encode_params(params: dict):
    """``EncodeParams`` from a job's ``params["params"]`` (lists back to tuples)."""
    from core.encoding.run import EncodeParams

    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in (params.get("params") or {}).items()}
    return EncodeParams(**fields)


def run_encode(params: dict, progress: ProgressFn = None) -> str:
    """Encode job: open the dataset, resolve the source, ``cached_encode``; return the folder."""
    from core.data import load_dataset
    from core.encoding.run import cached_encode
    from core.features import source_for

    ds = load_dataset(params["data"], progress=sub_progress(progress, 0.0, 0.05))
    source = source_for(params["source"], params["data"], params.get("mode"))
    out = cached_encode(ds, params["subject"], source, params.get("layers") or None,
                        encode_params(params), progress=sub_progress(progress, 0.05, 1.0))
    return str(out)


def run_dataset(params: dict, progress: ProgressFn = None) -> str:
    """Dataset job: open (build, for the demo) the dataset; return its root folder."""
    from core.data import load_dataset

    return str(load_dataset(params["data"], progress=progress).root)


KINDS: Dict[str, Callable[[dict, ProgressFn], object]] = {
    "encode": run_encode,
    "dataset": run_dataset,
}


def job_key(kind: str, params: dict) -> str:
    """Identity of a job: for an encode, the cache key of its result; else a hash of the params."""
    if kind == "encode":
        from core.data import load_dataset
        from core.encoding.run import encode_key
        from core.features import source_for

        ds = load_dataset(params["data"])
        source = source_for(params["source"], params["data"], params.get("mode"))
        layers = params.get("layers") or source.layers()
        return encode_key(ds, params["subject"], source, layers, encode_params(params))
    return key_hash(kind, params)
