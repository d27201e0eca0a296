"""Background jobs: a real encode in a detached worker, idempotent starts, failures, dead workers."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from core.errors import ConfigError, DataError, JobError
from core.jobs import job_status, list_jobs, start_job, wait_job
from core.jobs.runner import write_status
from tests.ds_fixture import make_ds003020_fixture


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
    from core.encoding.run import cached_encode
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
