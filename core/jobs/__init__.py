"""Background job runner: a detached ``python -m core.jobs.worker`` per run folder.

See :mod:`core.jobs.runner` for the run-folder layout (status, log, metrics, the device slot) and
:mod:`core.jobs.kinds` for what runs (and which kinds are heavy).
"""

from core.jobs.kinds import is_heavy, register_kind
from core.jobs.runner import (ACTIVE, STATES, append_metric, cancel_job, current_run_dir, job_dir,
                              job_status, list_jobs, read_metrics, slot_holder, start_job, wait_job)

__all__ = ["ACTIVE", "STATES", "append_metric", "cancel_job", "current_run_dir", "is_heavy", "job_dir",
           "job_status", "list_jobs", "read_metrics", "register_kind", "slot_holder", "start_job",
           "wait_job"]
