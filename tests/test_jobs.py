"""Background jobs: a real encode in a detached worker, idempotent starts, failures, dead workers,
one heavy job per device, serialised status writes, kept logs, streamed metrics."""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from core.errors import ConfigError, DataError, JobError
from core.jobs import (append_metric, cancel_job, current_run_dir, job_status, list_jobs, read_metrics,
                       register_kind, start_job, wait_job)
from core.jobs.runner import read_status, write_status
from tests.ds_fixture import make_ds003020_fixture


def _sleep_job(params, progress):
    """Test-only heavy kind: sleep ``params["seconds"]``, stream one metric, write
    ``{"start", "end"}`` (s since the epoch) to ``params["out"]`` and return that path."""
    start = time.time()
    progress(0.0, "sleeping")
    append_metric(current_run_dir(), {"step": 1, "start": start})
    time.sleep(params["seconds"])
    Path(params["out"]).write_text(json.dumps({"start": start, "end": time.time()}))
    return params["out"]


# the worker (a fresh process) imports this module to find the kind: registered by name
register_kind("sleep", _sleep_job, heavy=True, module="tests.test_jobs")


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds") / "ds003020"
    make_ds003020_fixture(root, n_voxels=60)
    return root


def _encode_params(root, subject="UTS01", source="lowlevel:wordrate"):
    return {"data": f"ds003020:{root}", "subject": subject, "source": source, "layers": None, "params": {}}


@pytest.mark.slow
def test_encode_job_matches_the_cli(fixture_root, tmp_path):
    from core.cli import main
    from core.data import load_dataset
    from core.pipelines.encode import cached_encode
    from core.features import resolve_source

    params = _encode_params(fixture_root)
    run = start_job("encode", params)
    assert start_job("encode", params) == run  # joined, not started twice
    pid = (run / "pid").read_text()
    status = wait_job(run, timeout=120)
    assert status["state"] == "done", status
    assert status["fraction"] == 1.0 and status["error"] is None
    assert (run / "pid").read_text() == pid
    job = json.loads((run / "job.json").read_text())
    assert job["kind"] == "encode"
    # (a kept test cache may hold this job from an earlier session, run on another copy of the
    # fixture: jobs are keyed by the result, whose key ignores where the dataset lives)
    assert {k: job["params"][k] for k in ("subject", "source")} == {"subject": "UTS01",
                                                                   "source": "lowlevel:wordrate"}
    # the result is the cache folder of the same encode
    ds = load_dataset(params["data"])
    assert status["result"] == str(cached_encode(ds, "UTS01", resolve_source("lowlevel:wordrate")))
    # and holds the numbers the CLI computes independently
    out = tmp_path / "cli"
    assert main(["-q", "encode", "--data", params["data"], "--subject", "UTS01",
                 "--features", "lowlevel:wordrate", "--out", str(out)]) == 0
    for name in ("r_wordrate.npy", "cc_norm_wordrate.npy", "cc_max.npy"):
        np.testing.assert_array_equal(np.load(out / name), np.load(f"{status['result']}/{name}"))
    log = (run / "log.txt").read_text()
    assert "done:" in log and "%]" in log
    # starting it again once done reuses the finished run
    assert start_job("encode", params) == run
    assert job_status(run)["state"] == "done"
    assert any(j["run_dir"] == str(run) for j in list_jobs("encode"))


@pytest.mark.slow
def test_failed_encode_records_the_core_error(fixture_root):
    run = start_job("encode", _encode_params(fixture_root, subject="UTS99"))
    status = wait_job(run, timeout=120)
    assert status["state"] == "failed"
    assert "unknown subject 'UTS99'" in status["error"]
    assert "error: unknown subject" in (run / "log.txt").read_text()


def test_failed_job_records_the_error_and_can_be_retried(tmp_path):
    params = {"data": f"ds003020:{tmp_path / 'gone'}"}
    run = start_job("dataset", params)
    status = wait_job(run, timeout=60)
    assert status["state"] == "failed" and status["result"] is None
    assert "does not exist" in status["error"] and str(tmp_path / "gone") in status["error"]
    first_pid = (run / "pid").read_text()
    assert start_job("dataset", params) == run  # a failed run is started afresh
    assert (run / "pid").read_text() != first_pid
    assert wait_job(run, timeout=60)["state"] == "failed"
    # the restart kept the first run's log
    assert "does not exist" in (run / "log.1.txt").read_text()
    assert "does not exist" in (run / "log.txt").read_text()


def test_dataset_job(fixture_root):
    run = start_job("dataset", {"data": f"ds003020:{fixture_root}"})
    status = wait_job(run, timeout=60)
    assert status["state"] == "done" and status["result"] == str(fixture_root.resolve())


def test_bad_inputs_fail_before_spawning(fixture_root, tmp_path):
    with pytest.raises(JobError, match="unknown job kind"):
        start_job("nonsense", {})
    with pytest.raises(DataError, match="does not exist"):
        start_job("encode", _encode_params(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="unknown feature spec"):
        start_job("encode", _encode_params(fixture_root, source="nope"))
    assert not [j for j in list_jobs() if "missing" in json.dumps(j)]


def test_dead_worker_is_reported_failed(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    (run / "pid").write_text(str(proc.pid))
    write_status(run, state="running", fraction=0.3, message="ridge")
    status = job_status(run)
    assert status["state"] == "failed" and "stopped unexpectedly" in status["error"]
    with pytest.raises(JobError, match="not a job run folder"):
        job_status(tmp_path / "nothing")


def test_cancel_stops_the_worker(fixture_root):
    from core.jobs import cancel_job

    run = start_job("encode", _encode_params(fixture_root, source="lowlevel:powspec"))
    pid = int((run / "pid").read_text())
    status = cancel_job(run)  # the worker is still importing (seconds): it is active
    assert status["state"] == "failed" and status["error"] == "cancelled by the user"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert cancel_job(run)["state"] == "failed"  # idempotent


# -- one heavy job per device -------------------------------------------------------------------
def _poll(fn, timeout=60.0, step=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout} s")


def _sleep_params(tmp_path, name, seconds):
    return {"seconds": seconds, "out": str(tmp_path / f"{name}.json"), "tag": f"{tmp_path.name}-{name}"}


def test_device_slot_queues_with_the_holder_named_and_a_dead_holder_frees_it(tmp_path):
    from core.jobs.runner import slot_files, slot_holder
    from core.jobs.worker import device_slot

    dev = f"test{os.getpid()}"
    first, second = tmp_path / "sleep-first", tmp_path / "sleep-second"
    for run in (first, second):
        run.mkdir()
        write_status(run, state="queued", message="queued")
    held, release = threading.Event(), threading.Event()

    def hold():
        with device_slot(first, dev):
            held.set()
            release.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    assert held.wait(30) and slot_holder(dev) == "sleep-first"
    got, release2 = [], threading.Event()

    def wait_then_hold():
        with device_slot(second, dev) as d:
            got.append((d, slot_holder(dev)))
            release2.wait(30)

    t2 = threading.Thread(target=wait_then_hold)
    t2.start()
    status = _poll(lambda: "device slot" in read_status(second)["message"] and read_status(second))
    assert status["state"] == "queued"
    assert status["message"] == f"waiting for the {dev} device slot (held by run sleep-first)"
    assert not got
    release.set()
    t.join()
    _poll(lambda: got)
    assert got == [(dev, "sleep-second")]
    release2.set()
    t2.join()
    assert slot_holder(dev) is None
    lock, _ = slot_files(dev)
    script = ("import fcntl, sys, time; fh = open(sys.argv[1], 'a'); fcntl.flock(fh, fcntl.LOCK_EX); "
              "print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", script, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        assert slot_holder(dev) is not None  # busy
        proc.kill()  # a worker killed mid-job: the kernel drops its lock
        proc.wait(10)
        with device_slot(first, dev):
            assert slot_holder(dev) == "sleep-first"
    finally:
        proc.kill()
        proc.stdout.close()
    assert slot_holder(dev) is None


@pytest.mark.slow
def test_heavy_jobs_take_turns_and_a_queued_one_can_be_cancelled(tmp_path):
    runs = [start_job("sleep", _sleep_params(tmp_path, n, s)) for n, s in (("a", 1.0), ("b", 1.0),
                                                                           ("c", 30.0))]

    def holder_and_queued():  # one holds the slot, the others wait and name it
        # (polled until consistent: on a loaded machine a 1-s job may finish and hand the slot on
        # between two reads, and the waiting runs rename the holder within SLOT_POLL_S)
        states = [job_status(r) for r in runs]
        queued = [s for s in states if "device slot" in (s["message"] or "")]
        if len(queued) != 2:
            return False
        holder = next(r for r in runs if str(r) not in {q["run_dir"] for q in queued})
        return all(f"held by run {holder.name})" in q["message"] for q in queued) and queued

    queued = _poll(holder_and_queued)
    holder = next(r for r in runs if str(r) not in {q["run_dir"] for q in queued})
    assert all(q["state"] == "queued" and f"held by run {holder.name})" in q["message"] for q in queued)
    victim = Path(next(q["run_dir"] for q in queued))
    if holder != runs[2]:
        victim = runs[2]  # cancel the long one while it waits
    pid = int((victim / "pid").read_text())
    status = cancel_job(victim)
    assert status["state"] == "failed" and status["error"] == "cancelled by the user"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    rest = [r for r in runs if r != victim]
    if holder == runs[2]:  # the long one won the race: stop it too, the last one still runs
        cancel_job(holder)
        rest = [r for r in rest if r != holder]
    done = [wait_job(r, timeout=120) for r in rest]
    assert all(d["state"] == "done" for d in done), done
    spans = sorted((json.loads(Path(d["result"]).read_text()) for d in done), key=lambda s: s["start"])
    assert all(a["end"] <= b["start"] for a, b in zip(spans, spans[1:]))  # never at the same time
    assert [m["step"] for m in read_metrics(rest[0])] == [1]
    assert "holding the" in (rest[0] / "log.txt").read_text()


# -- status, logs, metrics ----------------------------------------------------------------------
def test_status_writes_are_serialised(tmp_path):
    write_status(tmp_path, state="running")

    def work(i):
        for j in range(25):
            write_status(tmp_path, **{f"f{i}_{j}": j})

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    status = read_status(tmp_path)
    assert all(f"f{i}_{j}" in status for i in range(4) for j in range(25))  # no lost update


def test_metrics_append_and_tolerant_read(tmp_path):
    import numpy as np

    assert read_metrics(tmp_path) == []
    append_metric(tmp_path, {"step": 0, "loss": np.float32(1.5), "lr": [1e-4]})
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 1, "lo')  # a writer killed mid-line
    assert read_metrics(tmp_path) == [{"step": 0, "loss": 1.5, "lr": [1e-4]}]
    append_metric(tmp_path, {"step": 2})  # starts on a new line: the broken one stays apart
    assert [m["step"] for m in read_metrics(tmp_path)] == [0, 2]

    def work(i):
        for j in range(50):
            append_metric(tmp_path, {"writer": i, "j": j, "pad": "x" * 500})

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    recs = [m for m in read_metrics(tmp_path) if "writer" in m]
    assert sorted((m["writer"], m["j"]) for m in recs) == [(i, j) for i in range(4) for j in range(50)]
