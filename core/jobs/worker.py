"""``python -m core.jobs.worker RUN_DIR`` — run the job described by ``RUN_DIR/job.json``.

Progress goes to ``status.json`` (rewritten under its lock, at most every ``MIN_INTERVAL_S``) and
to ``log.txt`` (stdout); the final state is ``done`` with ``result``, or ``failed`` with ``error``
(a StudioError's one-line message; other exceptions as ``internal error: …`` plus a traceback in
the log). A heavy kind first waits for its device's slot (:func:`device_slot`), staying ``queued``
with a message naming the run that holds it.
"""

from __future__ import annotations

import fcntl
import importlib
import json
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from core.errors import JobError, StudioError
from core.jobs.runner import set_current_run_dir, slot_files, write_status

MIN_INTERVAL_S = 0.25  #: seconds between two status.json rewrites for progress
SLOT_POLL_S = 0.5  #: seconds between two tries for a busy device slot


def make_progress(run_dir: Path):
    """A progress callback writing ``fraction`` / ``message`` to status.json and log lines."""
    last = {"t": 0.0, "msg": None}

    def progress(fraction: float, message: str = "") -> None:
        now = time.time()
        if message != last["msg"]:
            print(f"[{100 * fraction:5.1f}%] {message}", flush=True)
        if now - last["t"] >= MIN_INTERVAL_S or message != last["msg"]:
            write_status(run_dir, state="running", fraction=float(fraction), message=message)
            last["t"], last["msg"] = now, message

    return progress


@contextmanager
def device_slot(run_dir: Path, device: Optional[str] = None) -> Iterator[str]:
    """Hold the slot of ``device`` (default ``get_settings().device``) for the block; yield the device.

    Waits (polling every :data:`SLOT_POLL_S` s) while another run holds it, with the run ``queued``
    and its message naming the holder. The slot is an exclusive ``flock`` on
    ``<runs_root>/.slot-<device>.lock``, released when the block ends or the process dies; the
    holder's run name is written to ``.slot-<device>.holder`` once acquired.
    """
    if device is None:
        from core.settings import get_settings

        device = get_settings().device
    lock_path, holder_path = slot_files(device)
    with open(lock_path, "a") as fh:
        shown = None
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _read(holder_path) or "another run"
                if holder != shown:
                    msg = f"waiting for the {device} device slot (held by run {holder})"
                    print(msg, flush=True)
                    write_status(run_dir, state="queued", message=msg)
                    shown = holder
                time.sleep(SLOT_POLL_S)
        try:
            holder_path.write_text(Path(run_dir).name)
            yield device
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


def run(run_dir: Path) -> int:
    """Run the job of ``run_dir``; return the process exit status (0 done, 1 failed)."""
    job = json.loads((run_dir / "job.json").read_text())
    set_current_run_dir(run_dir)
    print(f"job {job['kind']} {json.dumps(job['params'])}", flush=True)
    try:
        fn, heavy = _kind(job)
        if heavy:
            with device_slot(run_dir) as device:
                print(f"holding the {device} device slot", flush=True)
                result = _call(run_dir, fn, job)
        else:
            result = _call(run_dir, fn, job)
    except StudioError as err:
        print(f"error: {err}", flush=True)
        write_status(run_dir, state="failed", error=str(err), message="failed")
        return 1
    except Exception as err:  # noqa: BLE001 — any crash must end as a failed status, not a hang
        traceback.print_exc()
        write_status(run_dir, state="failed", error=f"internal error: {type(err).__name__}: {err}",
                     message="failed")
        return 1
    print(f"done: {result}", flush=True)
    write_status(run_dir, state="done", fraction=1.0, message="done", result=result,
                 finished=time.time())
    return 0


def _kind(job: dict):
    """``(fn, heavy)`` of the job's kind, importing the module that registers it first."""
    from core.jobs import kinds

    if job.get("module"):
        importlib.import_module(job["module"])
    if job["kind"] not in kinds.KINDS:
        raise JobError(f"unknown job kind {job['kind']!r} (module {job.get('module') or 'core.jobs.kinds'} "
                       "does not register it); start the job again")
    return kinds.KINDS[job["kind"]], kinds.is_heavy(job["kind"])


def _call(run_dir: Path, fn, job: dict):
    write_status(run_dir, state="running", fraction=0.0, message="starting", started=time.time())
    return fn(job["params"], make_progress(run_dir))


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1], "job.json").exists():
        print("usage: python -m core.jobs.worker RUN_DIR  (RUN_DIR/job.json must exist)", file=sys.stderr)
        sys.exit(2)
    sys.exit(run(Path(sys.argv[1])))
