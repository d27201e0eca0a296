"""Job kinds for the analyses the app launches: one function per kind, ``fn(params, progress) -> str``
(the folder holding the result's ``summary.json``), each the same computation as its CLI command.

- ``"evaluate"``: ``{"run": RUN_DIR, "protocol", "mode"}`` → ``<RUN_DIR>/evaluation`` (``python -m core
  evaluate-run RUN_DIR [--mode fast|paper]``): the tuned and the pretrained model encoded and compared.
- ``"partition"``: ``{"data", "subject", "spaces": [A, B], "protocol"}`` → the cached partition folder
  (``python -m core partition``).
- ``"lowlevel-impact"``: ``{"data", "subject", "source", "layers", "remove": [FSPEC, …], "protocol"}``
  → the cached folder (``python -m core lowlevel-impact``).
- ``"preference"``: ``{"data", "source", "layers"}`` → ``<run dir>/result`` (``python -m core
  preference``).
- ``"probe"``: ``{"task", "source", "layers", "data"}`` → ``<run dir>/result`` (``python -m core probe``).
- ``"significance"``: ``{"data", "subject", "source", "layers", "protocol"}`` (re-encodes keeping the
  test predictions) or ``{"result": ENCODE_DIR}`` (an encode holding them) → ``<run dir>/result``
  (``python -m core significance``).

- ``"encode-group"``: ``{"data", "subjects": "all" | [S, …], "source", "layers", "protocol", "n_jobs"}`` →
  ``<run dir>/result`` (``python -m core encode --subject all --n-jobs N``): every participant
  fitted in parallel (joblib) plus ``group.json`` and the group mean maps.

All are heavy (they hold the device slot: an analysis and a tuning run never fight for the cores).
The job's identity is a hash of its params (``core.jobs.kinds.job_key``), so the same request joins
the same run folder and a finished one is its cache.
"""

from __future__ import annotations

from pathlib import Path

from core.errors import JobError
from core.progress import ProgressFn, sub_progress


def _out() -> Path:
    from core.jobs.runner import current_run_dir

    run = current_run_dir()
    if run is None:
        raise JobError("an analysis job writes into its run folder; run it through core.jobs.start_job")
    return Path(run) / "result"


def _dataset(params: dict, progress: ProgressFn):
    from core.data import load_dataset

    return load_dataset(params["data"], progress=sub_progress(progress, 0.0, 0.03))


def _params(params: dict):
    from core.encoding.params import EncodeParams

    return EncodeParams.for_protocol(params.get("protocol") or "project")


def run_evaluate(params: dict, progress: ProgressFn = None) -> str:
    from core.pipelines.evaluate import evaluate_run

    run = Path(params["run"])
    evaluate_run(run, params.get("protocol") or "project", mode=params.get("mode"), progress=progress)
    return str(run / "evaluation")


def run_partition(params: dict, progress: ProgressFn = None) -> str:
    from core.pipelines.partition import partition

    ds = _dataset(params, progress)
    summary = partition(ds, params["subject"], list(params["spaces"]), _params(params),
                        progress=sub_progress(progress, 0.03, 1.0))
    return str(summary["cache_dir"])


def run_lowlevel_impact(params: dict, progress: ProgressFn = None) -> str:
    from core.features import source_for
    from core.pipelines.lowlevel_impact import lowlevel_impact

    ds = _dataset(params, progress)
    source = source_for(params["source"], params["data"])
    summary = lowlevel_impact(ds, params["subject"], source, params.get("layers") or None,
                              list(params["remove"]), _params(params),
                              progress=sub_progress(progress, 0.03, 1.0))
    return str(summary["result_dir"])


def run_preference(params: dict, progress: ProgressFn = None) -> str:
    from core.pipelines.preference import preference

    ds = _dataset(params, progress)
    out = _out()
    preference(ds, params["source"], params.get("layers") or None, out,
               progress=sub_progress(progress, 0.03, 1.0))
    return str(out)


def run_probe(params: dict, progress: ProgressFn = None) -> str:
    from core.pipelines.probe import probe

    dataset = _dataset(params, progress) if str(params["task"]).startswith("demo:") else None
    out = _out()
    probe(params["task"], params["source"], params.get("layers") or None, out, dataset=dataset,
          progress=sub_progress(progress, 0.03, 1.0))
    return str(out)


def run_significance(params: dict, progress: ProgressFn = None) -> str:
    from core.features import source_for
    from core.pipelines.significance import significance, significance_from_result

    out = _out()
    if params.get("result"):
        significance_from_result(Path(params["result"]), out, progress=progress)
        return str(out)
    ds = _dataset(params, progress)
    significance(ds, params["subject"], source_for(params["source"], params["data"]),
                 params.get("layers") or None, out, _params(params),
                 progress=sub_progress(progress, 0.03, 1.0))
    return str(out)


def run_encode_group(params: dict, progress: ProgressFn = None) -> str:
    from core.features import source_for
    from core.pipelines.group import encode_group

    ds = _dataset(params, progress)
    out = _out()
    encode_group(ds, params.get("subjects") or "all", source_for(params["source"], params["data"]),
                 params.get("layers") or None, out, _params(params), n_jobs=params.get("n_jobs"),
                 progress=sub_progress(progress, 0.03, 1.0))
    return str(out)


ANALYSIS_KINDS = {
    "encode-group": run_encode_group,
    "evaluate": run_evaluate,
    "partition": run_partition,
    "lowlevel-impact": run_lowlevel_impact,
    "preference": run_preference,
    "probe": run_probe,
    "significance": run_significance,
}
