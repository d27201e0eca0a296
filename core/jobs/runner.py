"""Background jobs: one run folder per job, one detached worker process per run.

A run folder ``<runs_root>/<kind>-<key>/`` holds::

    job.json     {"kind", "params", "key", "module", "created"} — what to run (written once per start)
    status.json  {"state", "fraction", "message", "error", "result", "updated"}
                 state ∈ queued | running | done | failed       — rewritten atomically, read-modify-write
                 under an flock on status.lock (:func:`write_status`)
    pid          the worker's process id
    log.txt      the worker's stdout/stderr and progress lines; a restart moves the previous log to
                 log.1.txt (older ones to log.2.txt, …, up to :data:`KEEP_LOGS`)
    metrics.jsonl one JSON object per line, appended by the job (:func:`append_metric`,
                 :func:`read_metrics`); kept across restarts (a resumed run appends)

Heavy kinds (``core.jobs.kinds.HEAVY``) run one per device: the worker holds an flock on
``<runs_root>/.slot-<device>.lock`` while it runs (``.slot-<device>.holder`` names the run holding it)
and stays ``queued`` with a message naming that run while it waits. The kernel drops the lock when
the worker exits or is killed, so a dead worker never keeps the device.

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
from core.store import json_default, save_json

STATES = ("queued", "running", "done", "failed")
ACTIVE = ("queued", "running")
KEEP_LOGS = 9  #: previous logs kept on restart (log.1.txt … log.9.txt)
CANCEL_WAIT_S = 10.0  #: seconds a cancelled worker gets to exit before SIGKILL
_CHILDREN: dict = {}  #: pid → Popen of workers started by this process (reaped on poll)
_CURRENT: dict = {"run_dir": None}  #: the run a worker process runs (set by core.jobs.worker)


def current_run_dir() -> Optional[Path]:
    """The run folder of the job this worker process runs (None outside a worker): where a job
    streams its metrics (``core.jobs.append_metric(current_run_dir(), {...})``)."""
    return _CURRENT["run_dir"]


def set_current_run_dir(run_dir: Optional[Path]) -> None:
    """Set :func:`current_run_dir` (the worker does, before running the job)."""
    _CURRENT["run_dir"] = None if run_dir is None else Path(run_dir)


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
    from core.jobs.kinds import KINDS, MODULES, job_key

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
                                         "module": MODULES.get(kind), "created": time.time()})
        write_status(run_dir, state="queued", fraction=0.0, message="queued", error=None, result=None,
                     started=None, finished=None)
        _rotate_logs(run_dir)
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
        deadline = time.time() + CANCEL_WAIT_S  # also when another process started it
        while _alive(pid) and time.time() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
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
    """Merge ``fields`` into ``status.json``; return the new status.

    The read-modify-write runs under an exclusive flock on ``status.lock``, so concurrent writers
    (the worker, a cancel, the dead-worker check) never lose each other's fields; the file itself
    is replaced atomically, so readers need no lock.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "status.json"
    with _flocked(run_dir / "status.lock"):
        try:
            status = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            status = {"state": "queued", "fraction": 0.0, "message": "", "error": None, "result": None}
        status.update(fields)
        status["updated"] = time.time()
        save_json(path, status)
    return status


def append_metric(run_dir: Path, record: dict) -> None:
    """Append ``record`` as one JSON line to ``<run_dir>/metrics.jsonl`` (under an flock; flushed,
    not fsynced). Numpy scalars and arrays are converted; a line left half-written by a killed
    writer is closed first, so it never merges with this record."""
    if run_dir is None:
        raise JobError("append_metric needs a run folder; outside a job worker pass run_dir explicitly")
    if not isinstance(record, dict):
        raise JobError(f"a metric record must be a dict, not {type(record).__name__}")
    line = json.dumps(record, default=json_default)
    path = Path(run_dir) / "metrics.jsonl"
    with open(path, "a+b") as fh:  # writes always go to the end; reads may look back
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            if fh.seek(0, os.SEEK_END):
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    fh.write(b"\n")
            fh.write(line.encode() + b"\n")
            fh.flush()
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_metrics(run_dir: Path) -> list:
    """The records of ``<run_dir>/metrics.jsonl``, in order (``[]`` when there is none).

    Tolerant of concurrent appends: a last line without its newline (being written) and lines a
    killed writer left half-written are skipped.
    """
    try:
        data = (Path(run_dir) / "metrics.jsonl").read_bytes()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    if not data.endswith(b"\n"):
        lines = lines[:-1]  # still being written
    out = []
    for raw in lines:
        try:
            rec = json.loads(raw)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def slot_files(device: str) -> tuple:
    """``(lock, holder)`` paths of the slot of ``device`` (``"cpu"``, ``"cuda"``) under the runs root."""
    root = runs_root()
    return root / f".slot-{device}.lock", root / f".slot-{device}.holder"


def slot_holder(device: str) -> Optional[str]:
    """Name of the run folder holding ``device``'s slot, or None when it is free."""
    lock, holder = slot_files(device)
    try:
        with open(lock, "rb") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return holder.read_text().strip() or "another run"
            fcntl.flock(fh, fcntl.LOCK_UN)
            return None
    except FileNotFoundError:
        return None


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


def _rotate_logs(run_dir: Path) -> None:
    """Start an empty ``log.txt``, moving a previous one to ``log.1.txt`` (``log.1`` → ``log.2``, …)."""
    log = run_dir / "log.txt"
    if log.exists() and log.stat().st_size:
        for i in range(KEEP_LOGS - 1, 0, -1):
            older = run_dir / f"log.{i}.txt"
            if older.exists():
                os.replace(older, run_dir / f"log.{i + 1}.txt")
        os.replace(log, run_dir / "log.1.txt")
    log.write_text("")


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


def _locked(run_dir: Path):
    """Exclusive lock on the run folder while deciding whether to (re)start it."""
    return _flocked(run_dir / ".lock")


@contextmanager
def _flocked(path: Path):
    """Exclusive ``flock`` on the file ``path`` (created) for the block."""
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
