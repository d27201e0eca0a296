"""Background jobs: one run folder per job, one detached worker process per run.

A run folder ``<runs_root>/<kind>-<key>/`` holds::

    job.json     {"kind", "params", "key", "created"}         — what to run (written once per start)
    status.json  {"state", "fraction", "message", "error", "result", "updated"}
                 state ∈ queued | running | done | failed       — rewritten atomically by the worker
    pid          the worker's process id
    log.txt      the worker's stdout/stderr and progress lines

:func:`start_job` is idempotent: the run folder is named by the job's key (for an encode, the
``encode_key`` of its result), so starting the same job while it is queued, running or done returns
the existing folder; only a failed run, a vanished worker or a done run whose result folder was
deleted is started afresh. The app polls
:func:`job_status`; nothing here blocks on the work itself.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

from core.errors import JobError
from core.settings import CACHE_ENV, REPO_ROOT, get_settings
from core.store import save_json

STATES = ("queued", "running", "done", "failed")
ACTIVE = ("queued", "running")
_CHILDREN: dict = {}  #: pid → Popen of workers started by this process (reaped on poll)


def runs_root() -> Path:
    """The folder holding every run folder (``get_settings().runs_root``)."""
    root = get_settings().runs_root
    root.mkdir(parents=True, exist_ok=True)
    return root


def job_dir(kind: str, key: str) -> Path:
    """Run folder of the job ``kind`` with ``key``."""
    return runs_root() / f"{kind}-{key}"


def start_job(kind: str, params: dict, key: Optional[str] = None) -> Path:
    """Start ``kind`` with ``params`` in a detached worker unless the same job exists; return its folder.

    Parameters
    ----------
    kind : a job kind of :data:`core.jobs.kinds.KINDS` (``"encode"``, ``"dataset"``).
    params : JSON-serialisable parameters of that kind (see ``core.jobs.kinds``).
    key : the job's identity; default ``core.jobs.kinds.job_key(kind, params)`` (for an encode the
        cache key of its result, so two requests for the same encoding share one job).

    Returns
    -------
    Path — the run folder; poll it with :func:`job_status`.
    """
    from core.jobs.kinds import KINDS, job_key

    if kind not in KINDS:
        raise JobError(f"unknown job kind {kind!r}; expected one of {', '.join(sorted(KINDS))}")
    key = key or job_key(kind, params)
    run_dir = job_dir(kind, key)
    run_dir.mkdir(parents=True, exist_ok=True)
    with _locked(run_dir):
        if (run_dir / "status.json").exists():
            status = job_status(run_dir)
            if status["state"] in ACTIVE or (status["state"] == "done" and _result_exists(status)):
                return run_dir
        save_json(run_dir / "job.json", {"kind": kind, "params": params, "key": key,
                                         "created": time.time()})
        write_status(run_dir, state="queued", fraction=0.0, message="queued", error=None, result=None)
        (run_dir / "log.txt").write_text("")
        _spawn(run_dir)
    return run_dir


def job_status(run_dir: Path) -> dict:
    """The run's status dict (``state``, ``fraction``, ``message``, ``error``, ``result``, plus
    ``run_dir``, ``kind`` and ``params`` from job.json).

    A queued/running run whose worker process has gone without writing a final state is marked
    failed (so a killed worker never leaves the app polling forever).
    """
    run_dir = Path(run_dir)
    status = read_status(run_dir)
    if status["state"] in ACTIVE:
        pid = _read_pid(run_dir)
        if pid is not None and not _alive(pid):
            status = read_status(run_dir)  # the worker may have finished between the two reads
            if status["state"] in ACTIVE:
                write_status(run_dir, state="failed", error="the job's worker stopped unexpectedly; "
                             f"see {run_dir / 'log.txt'}", message="stopped")
                status = read_status(run_dir)
    status["run_dir"] = str(run_dir)
    try:
        job = json.loads((run_dir / "job.json").read_text())
        status["kind"], status["params"] = job["kind"], job["params"]
    except (OSError, ValueError, KeyError):
        status["kind"], status["params"] = run_dir.name.split("-")[0], {}
    return status


def cancel_job(run_dir: Path) -> dict:
    """Stop a queued/running job (SIGTERM to its worker's process group); mark it failed."""
    run_dir = Path(run_dir)
    status = job_status(run_dir)
    if status["state"] not in ACTIVE:
        return status
    pid = _read_pid(run_dir)
    if pid is not None and _alive(pid):
        try:
            os.killpg(pid, signal.SIGTERM)  # the worker leads its own session (start_new_session)
        except ProcessLookupError:
            pass
        proc = _CHILDREN.get(pid)
        if proc is not None:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(pid, signal.SIGKILL)
    write_status(run_dir, state="failed", error="cancelled by the user", message="cancelled")
    return job_status(run_dir)


def read_status(run_dir: Path) -> dict:
    """``status.json`` of ``run_dir`` (JobError when the folder is not a run folder)."""
    path = Path(run_dir) / "status.json"
    try:
        status = json.loads(path.read_text())
    except FileNotFoundError:
        raise JobError(f"{run_dir} is not a job run folder (no status.json); start the job again")
    except json.JSONDecodeError as err:
        raise JobError(f"{path} is unreadable ({err}); delete the folder and start the job again")
    if status.get("state") not in STATES:
        raise JobError(f"{path} has an unknown state {status.get('state')!r}")
    return status


def write_status(run_dir: Path, **fields) -> dict:
    """Merge ``fields`` into ``status.json`` atomically; return the new status."""
    path = Path(run_dir) / "status.json"
    try:
        status = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        status = {"state": "queued", "fraction": 0.0, "message": "", "error": None, "result": None}
    status.update(fields)
    status["updated"] = time.time()
    save_json(path, status)
    return status


def list_jobs(kind: Optional[str] = None) -> list:
    """Status dicts of all run folders (of ``kind`` if given), newest first."""
    out = []
    for d in runs_root().iterdir():
        if not d.is_dir() or not (d / "status.json").exists():
            continue
        if kind and not d.name.startswith(f"{kind}-"):
            continue
        try:
            out.append(job_status(d))
        except JobError:
            continue
    return sorted(out, key=lambda s: s.get("updated", 0), reverse=True)


def wait_job(run_dir: Path, timeout: float, poll: float = 0.2) -> dict:
    """Poll until the run is done or failed (for scripts and tests; the app never waits)."""
    deadline = time.time() + timeout
    while True:
        status = job_status(run_dir)
        if status["state"] not in ACTIVE:
            return status
        if time.time() > deadline:
            raise JobError(f"job {run_dir.name} still {status['state']} after {timeout:.0f} s")
        time.sleep(poll)


# -- process handling ---------------------------------------------------------------------------

def _spawn(run_dir: Path) -> None:
    """Start ``python -m core.jobs.worker run_dir`` detached (own session), output to log.txt."""
    env = dict(os.environ)
    env[CACHE_ENV] = str(get_settings().cache_root)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    with open(run_dir / "log.txt", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "core.jobs.worker", str(run_dir)],
                                cwd=str(REPO_ROOT), env=env, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    _CHILDREN[proc.pid] = proc
    (run_dir / "pid").write_text(str(proc.pid))


def _result_exists(status: dict) -> bool:
    """Whether a done job's result (a path for every kind) is still there (caches can be cleared)."""
    result = status.get("result")
    return isinstance(result, str) and Path(result).exists()


def _read_pid(run_dir: Path) -> Optional[int]:
    try:
        return int((run_dir / "pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (children of this process are reaped, zombies count dead)."""
    proc = _CHILDREN.get(pid)
    if proc is not None:
        return proc.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@contextmanager
def _locked(run_dir: Path):
    """Exclusive lock on the run folder while deciding whether to (re)start it."""
    with open(run_dir / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
