"""Benchmark: ``encode --subject all`` serial vs ``n_jobs`` joblib workers (core.pipelines.group).

One dataset, one feature space, every subject: features are computed once into the cache (an
untimed warm-up run), then the group encode is timed serially (``n_jobs=1`` in this process: with
torch's own thread count, and with one thread — ``serial_1t``, the same per-task setting as a
worker) and with ``--n-jobs`` loky workers (one torch/BLAS thread each): a first run that starts
the workers ("cold") and a second that reuses them ("warm"); each timing is the best of
``--repeat``. Prints the wall times, the ratios serial / parallel and whether every array of every
run equals the serial run's bit for bit, plus the CPU count and load average (the ratio is only as
clean as the machine is idle).

    python bench/fan_out.py                                   # demo-group (when it exists)
    python bench/fan_out.py --data ds003020:/path             # any multi-subject dataset
    python bench/fan_out.py --fixture /tmp/fan-out-ds         # a ds003020-layout fixture made here
    python bench/fan_out.py --fixture DIR --subjects 4 --voxels 20000 --duration 300

``--fixture`` writes tests/ds_fixture.py's dataset (stories of ``--duration`` s, ``--voxels``
voxels) and adds participants UTS03… (UTS01's responses plus independent noise) up to
``--subjects``, so that the fits, not the worker start-up, dominate.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def make_fixture(root: Path, n_subjects: int, n_voxels: int, duration: float, n_stories: int) -> str:
    """The ds003020-layout fixture under ``root`` with ``n_subjects`` participants; its data spec."""
    import h5py

    from core.data.layout import responses_dir, write_responses
    from tests.ds_fixture import make_ds003020_fixture

    if not (root / "derivative" / "respdict.json").exists():
        make_ds003020_fixture(root, n_stories=n_stories, n_voxels=n_voxels,
                              duration_range=(duration, duration * 1.1), seed=1)
    rng = np.random.default_rng(7)
    for k in range(3, n_subjects + 1):
        target = responses_dir(root, f"UTS{k:02d}")
        if target.exists():
            continue
        for f in sorted(responses_dir(root, "UTS01").glob("*.hf5")):
            with h5py.File(f, "r") as h:
                arrays = [h["data"][()], h["individual_repeats"][()] if "individual_repeats" in h else None]
            write_responses(target / f.name, *[None if a is None else a + 0.5 * rng.standard_normal(a.shape)
                                               for a in arrays])
    return f"ds003020:{root}"


def same_arrays(a: Path, b: Path) -> bool:
    """Every ``.npy`` under ``a`` equals (bitwise, NaN = NaN) its twin under ``b``."""
    files = sorted(p.relative_to(a) for p in a.rglob("*.npy"))
    return files == sorted(p.relative_to(b) for p in b.rglob("*.npy")) and all(
        np.array_equal(np.load(a / f), np.load(b / f), equal_nan=True) for f in files)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="demo-group", help="data spec (default demo-group)")
    ap.add_argument("--fixture", type=Path, help="make/use a ds003020-layout fixture here instead of --data")
    ap.add_argument("--subjects", type=int, default=4, help="fixture participants (default 4)")
    ap.add_argument("--voxels", type=int, default=8000, help="fixture voxels of UTS01 (default 8000)")
    ap.add_argument("--duration", type=float, default=240.0, help="fixture story length, s (default 240)")
    ap.add_argument("--stories", type=int, default=8, help="fixture stories (default 8)")
    ap.add_argument("--features", default="lowlevel:powspec", help="feature spec (default lowlevel:powspec)")
    ap.add_argument("--n-jobs", dest="n_jobs", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="timings per configuration (best is kept)")
    args = ap.parse_args()

    from core.data import load_dataset
    from core.features import source_for
    from core.pipelines.group import encode_group

    spec = make_fixture(args.fixture, args.subjects, args.voxels, args.duration, args.stories) \
        if args.fixture else args.data
    ds = load_dataset(spec)
    source = source_for(args.features, spec)
    with tempfile.TemporaryDirectory(prefix="fan-out-") as tmp:
        tmp = Path(tmp)
        encode_group(ds, "all", source, None, tmp / "warmup", n_jobs=1)  # features into the cache
        times = {}
        runs = (("serial", 1, None), ("serial_1t", 1, 1), ("parallel_cold", args.n_jobs, None),
                ("parallel_warm", args.n_jobs, None))
        for _ in range(args.repeat):
            for name, n_jobs, inner in runs:
                t0 = time.perf_counter()
                encode_group(ds, "all", source, None, tmp / name, n_jobs=n_jobs, backend="loky", inner_threads=inner)
                times[name] = min(times.get(name, np.inf), time.perf_counter() - t0)
        identical = all(same_arrays(tmp / "serial", tmp / k) for k, _, _ in runs[1:])
    print(json.dumps({
        "data": spec, "features": args.features, "subjects": ds.subjects,
        "n_voxels": {s: ds.n_voxels(s) for s in ds.subjects}, "n_jobs": args.n_jobs,
        **{f"{k}_s": round(v, 2) for k, v in times.items()},
        "ratio_cold": round(times["serial"] / times["parallel_cold"], 2),
        "ratio_warm": round(times["serial"] / times["parallel_warm"], 2),
        "ratio_warm_vs_serial_1t": round(times["serial_1t"] / times["parallel_warm"], 2),
        "identical_to_serial": identical, "cpu_count": os.cpu_count(),
        "loadavg_1min": round(os.getloadavg()[0], 2)}, indent=1))


if __name__ == "__main__":
    main()
