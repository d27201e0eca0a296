"""core.store: atomic folders under concurrency (keep-existing vs replace), atomic files."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from core import store
from core.settings import REPO_ROOT
from core.store import atomic_dir, atomic_path

N_FILES = 20


def _write(final: Path, tag: str, replace: bool, barrier=None) -> None:
    """Write N_FILES files naming ``tag`` into ``final`` through atomic_dir."""
    with atomic_dir(final, replace=replace) as tmp:
        for i in range(N_FILES):
            (tmp / f"f{i}.txt").write_text(tag)
        if barrier is not None:
            barrier.wait()  # every writer publishes at (nearly) the same instant


def _check_complete(final: Path, tags) -> str:
    """The folder holds all N_FILES files of one writer; no temp folder is left beside it."""
    files = sorted(final.iterdir())
    assert [f.name for f in files] == sorted(f"f{i}.txt" for i in range(N_FILES))
    contents = {f.read_text() for f in files}
    assert len(contents) == 1 and contents <= set(tags), contents
    assert [p.name for p in final.parent.iterdir()] == [final.name]
    return contents.pop()


@pytest.mark.parametrize("replace", [False, True])
def test_concurrent_thread_writers_all_return_one_complete_folder(tmp_path, replace):
    final = tmp_path / "key"
    tags = [f"writer{i}" for i in range(6)]
    barrier = threading.Barrier(len(tags))
    errors = []

    def work(tag):
        try:
            _write(final, tag, replace, barrier)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(t,)) for t in tags]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    _check_complete(final, tags)


def test_replace_fallback_without_exchange_is_safe_for_concurrent_writers(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "_renameat2", lambda: None)  # as on a kernel without renameat2
    final = tmp_path / "out"
    tags = [f"w{i}" for i in range(6)]
    barrier = threading.Barrier(len(tags))
    threads = [threading.Thread(target=_write, args=(final, t, True, barrier)) for t in tags]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _check_complete(final, tags)
    _write(final, "last", replace=True)
    assert _check_complete(final, ["last"]) == "last"


_PROC = """
import sys, time
from pathlib import Path
from core.store import atomic_dir
final, tag, replace, at = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "1", float(sys.argv[4])
with atomic_dir(final, replace=replace) as tmp:
    for i in range({n}):
        (tmp / f"f{{i}}.txt").write_text(tag)
    time.sleep(max(0.0, at - time.time()))
print("ok")
"""


@pytest.mark.parametrize("replace", [False, True])
def test_concurrent_process_writers(tmp_path, replace):
    final = tmp_path / "key"
    at = time.time() + 2.0  # all publish at the same moment, after their imports
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", _PROC.format(n=N_FILES), str(final), f"p{i}",
                               "1" if replace else "0", str(at)], env=env, cwd=str(REPO_ROOT),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(3)]
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0 and out.strip() == "ok", err
    _check_complete(final, ["p0", "p1", "p2"])


def test_keep_existing_keeps_the_first_copy_and_replace_replaces(tmp_path):
    final = tmp_path / "k"
    _write(final, "first", replace=False)
    _write(final, "second", replace=False)
    assert _check_complete(final, ["first"]) == "first"
    _write(final, "third", replace=True)
    assert _check_complete(final, ["third"]) == "third"
    empty = tmp_path / "empty"
    empty.mkdir()
    _write(empty, "fills", replace=False)  # an empty folder is not a complete copy: replaced
    assert (empty / "f0.txt").read_text() == "fills"


def test_a_failing_block_leaves_nothing_and_keeps_the_old_folder(tmp_path):
    final = tmp_path / "k"
    _write(final, "good", replace=True)
    for replace in (False, True):
        with pytest.raises(RuntimeError):
            with atomic_dir(final, replace=replace) as tmp:
                (tmp / "f0.txt").write_text("bad")
                raise RuntimeError("boom")
        assert _check_complete(final, ["good"]) == "good"


def test_readers_never_find_a_replaced_folder_missing(tmp_path):
    probe_a, probe_b = tmp_path / "a", tmp_path / "b"
    probe_a.mkdir(), probe_b.mkdir()
    if not store._exchange(probe_a, probe_b):
        pytest.skip("this file system has no atomic exchange (renameat2); the fallback may show a gap")
    final = tmp_path / "sub" / "out"
    _write(final, "v0", replace=True)
    stop, missing = threading.Event(), []

    def reader():
        while not stop.is_set():
            if not (final / "f0.txt").exists():
                missing.append(time.time())

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(30):
            _write(final, f"v{i + 1}", replace=True)
    finally:
        stop.set()
        t.join()
    assert not missing
    assert _check_complete(final, ["v30"]) == "v30"


def test_atomic_path_concurrent_writers_and_failures(tmp_path):
    final = tmp_path / "x" / "f.json"

    def work(tag):
        for _ in range(20):
            with atomic_path(final) as tmp:
                tmp.write_text(tag * 1000)

    threads = [threading.Thread(target=work, args=(c,)) for c in "abc"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert final.read_text() in {c * 1000 for c in "abc"}
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert final.read_text() in {c * 1000 for c in "abc"}
    assert [p.name for p in final.parent.iterdir()] == ["f.json"]
