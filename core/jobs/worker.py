"""``python -m core.jobs.worker RUN_DIR`` — run the job described by ``RUN_DIR/job.json``.

Progress goes to ``status.json`` (atomic rewrites, at most every ``MIN_INTERVAL_S``) and to
``log.txt`` (stdout); the final state is ``done`` with ``result``, or ``failed`` with ``error``
(a StudioError's one-line message; other exceptions as ``internal error: …`` plus a traceback in
the log).
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path

from core.errors import StudioError
from core.jobs.runner import write_status

MIN_INTERVAL_S = 0.25  #: seconds between two status.json rewrites for progress


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


def run(run_dir: Path) -> int:
    """Run the job of ``run_dir``; return the process exit status (0 done, 1 failed)."""
    from core.jobs.kinds import KINDS

    job = json.loads((run_dir / "job.json").read_text())
    print(f"job {job['kind']} {json.dumps(job['params'])}", flush=True)
    write_status(run_dir, state="running", fraction=0.0, message="starting", started=time.time())
    try:
        result = KINDS[job["kind"]](job["params"], make_progress(run_dir))
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


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1], "job.json").exists():
        print("usage: python -m core.jobs.worker RUN_DIR  (RUN_DIR/job.json must exist)", file=sys.stderr)
        sys.exit(2)
    sys.exit(run(Path(sys.argv[1])))
