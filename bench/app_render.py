"""Benchmark: how quickly the app answers from cached results (issue "Studio app II": maps re-render
from cached results in under 1 s; the Learn page comes up quickly once everything is cached).

Timed here rather than in the tests, because a shared CI machine makes wall-clock bounds flaky.
Each figure is printed with a reference measured in the same run:

- ``flatmap``: the first flatmap of the demo's S1 in this process (geometry read from pycortex's
  on-disk cache) vs re-renders of cached scores with another metric / threshold (the page's
  interaction); target: re-render < 1 s.
- ``learn``: the Learn page through Streamlit's ``AppTest`` in a fresh Python process, run twice:
  the first run (imports, reading cached results) vs the second (Streamlit's caches warm).
- ``server``: ``streamlit run app.py`` start to a healthy server (the browser test records the
  full start-to-drawn-page time in ``test-artifacts/timings.json``).

    python bench/app_render.py            # the demo (built on first use, then cached)

Prints JSON last, with the CPU count and load average (ratios are only as clean as the machine is
idle).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from anywhere

LEARN_TWICE = """
import time, json
from streamlit.testing.v1 import AppTest
out = []
for _ in range(2):
    t = time.perf_counter()
    at = AppTest.from_file("pages/learn.py", default_timeout=600).run()
    out.append(time.perf_counter() - t)
    assert not at.exception, at.exception
print(json.dumps(out))
"""


def bench_flatmap() -> dict:
    from core import studio
    from core.data import load_dataset
    from core.features import resolve_source
    from core.pipelines.encode import cached_encode

    ds = load_dataset("demo")
    result = cached_encode(ds, "S1", resolve_source("lowlevel:powspec"))
    t = time.perf_counter()
    studio.score_flatmap(ds, "S1", result, "powspec", "cc_norm", 0.0)
    first = time.perf_counter() - t
    again = []
    for metric, threshold in (("r", 0.1), ("cc_norm", 0.25), ("r", 0.3), ("cc_norm", 0.0)):
        t = time.perf_counter()
        studio.score_flatmap(ds, "S1", result, "powspec", metric, threshold)
        again.append(time.perf_counter() - t)
    best = min(again)
    return {"first_s": round(first, 3), "rerender_s": [round(x, 3) for x in again],
            "ratio_first_over_rerender": round(first / best, 1), "target_rerender_under_1s": max(again) < 1.0}


def bench_learn() -> dict:
    out = subprocess.run([sys.executable, "-c", LEARN_TWICE], cwd=REPO, capture_output=True, text=True,
                         env=dict(os.environ), check=True)
    first, second = json.loads(out.stdout.strip().splitlines()[-1])
    return {"first_run_s": round(first, 2), "second_run_s": round(second, 2),
            "ratio": round(first / second, 2)}


def bench_server() -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.address", "127.0.0.1",
         "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while time.perf_counter() - t0 < 120:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        return {"healthy_s": round(time.perf_counter() - t0, 2)}
            except OSError:
                time.sleep(0.1)
        return {"healthy_s": None}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> None:
    res = {"cpus": os.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()]}
    res["flatmap"] = bench_flatmap()
    print("flatmap:", res["flatmap"], flush=True)
    res["learn"] = bench_learn()
    print("learn page:", res["learn"], flush=True)
    res["server"] = bench_server()
    print("server:", res["server"], flush=True)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
