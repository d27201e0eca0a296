"""Background job runner: a detached ``python -m core.jobs.worker`` per run folder.

See :mod:`core.jobs.runner` for the run-folder layout and :mod:`core.jobs.kinds` for what runs.
"""

from core.jobs.runner import (ACTIVE, STATES, cancel_job, job_dir, job_status, list_jobs, start_job,
                              wait_job)

__all__ = ["ACTIVE", "STATES", "cancel_job", "job_dir", "job_status", "list_jobs", "start_job", "wait_job"]
