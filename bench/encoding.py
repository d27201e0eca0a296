"""Benchmark: our bootstrap ridge (core.encoding.ridge) vs himalaya's solve_ridge_cv_svd (torch backend).

Same synthetic data, same bootstrap splits (3 × 25 % of 20-TR chunks), same alphas (paper grid
``logspace(1, 4, 15)``; himalaya gets ``α²`` because it puts α where HuthLab puts α²), same
voxel batch, correlation scoring. Each solver runs in its own subprocess so that the peak resident
memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is its own. Prints the fit times, peak memory,
the speed and memory ratios, the largest |Δr| of the test-set correlations and the fraction of
voxels given the same alpha. Target (issue "Engine spine I"): ours ≥ 1.5× faster at equal results.

    python bench/encoding.py            # 3000 TRs × 3072 features → 20,000 voxels (minutes)
    python bench/encoding.py --quick    # small smoke run (seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FULL = dict(n_trs=3000, n_features=3072, n_voxels=20000, n_test=300)
QUICK = dict(n_trs=600, n_features=256, n_voxels=2000, n_test=100)


def make_data(n_trs: int, n_features: int, n_voxels: int, n_test: int, seed: int = 0) -> dict:
    """Synthetic z-scored design and responses; 40 % of voxels carry signal of varied strength.

    Features: a 128-dim AR(1) latent process (ρ = 0.7) mixed into ``n_features`` columns plus noise
    (correlated columns, decaying spectrum, like delayed model features). Responses: a rank-16
    linear read-out of the features, scaled per voxel to a log-uniform SNR in [0.02, 2], plus noise.
    """
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    n = n_trs + n_test
    latent = lfilter([1.0], [1.0, -0.7], rng.standard_normal((n, 128)), axis=0)
    x = latent @ rng.standard_normal((128, n_features)) / np.sqrt(128)
    x += 0.3 * rng.standard_normal((n, n_features))
    readout = (x @ rng.standard_normal((n_features, 16))) / np.sqrt(n_features)
    signal = readout @ rng.standard_normal((16, n_voxels))
    signal /= signal.std(0)
    snr = np.where(rng.random(n_voxels) < 0.4, 10 ** rng.uniform(np.log10(0.02), np.log10(2), n_voxels), 0)
    y = np.sqrt(snr) * signal + rng.standard_normal((n, n_voxels))

    def z(a):
        return ((a - a.mean(0)) / a.std(0)).astype(np.float32)

    return {"X": z(x[:n_trs]), "Y": z(y[:n_trs]), "X_test": z(x[n_trs:]), "Y_test": z(y[n_trs:]),
            "has_signal": snr > 0}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def worker(solver: str, folder: Path, voxel_batch: int, threads: int = 0) -> None:
    """Fit one solver on the saved data; write its alphas and test r; print timings as JSON.

    ``solver == "data"``: generate the data (sizes from ``size.json``) and save it, so the parent
    stays small (Linux carries a parent's ``ru_maxrss`` into the children it forks).
    """
    if solver == "data":
        size = json.loads((folder / "size.json").read_text())
        for name, arr in make_data(**size).items():
            np.save(folder / f"{name}.npy", arr)
        return
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    from core.encoding.ridge import DEFAULT_ALPHAS, bootstrap_ridge, bootstrap_splits
    from core.encoding.scores import pearson_columns

    def fit(X, Y):
        if solver == "ours":
            res = bootstrap_ridge(X, Y, alphas=DEFAULT_ALPHAS, n_boots=3, chunk_len=20, held_frac=0.25,
                                  seed=0, voxel_batch=voxel_batch, device="cpu")
            np.savez(folder / "cv_ours.npz", scores=res.cv_scores, grid=res.alpha_grid)
            return res.alphas, res.weights
        from himalaya.backend import set_backend
        from himalaya.ridge import solve_ridge_cv_svd
        from himalaya.scoring import correlation_score

        set_backend("torch")
        splits = bootstrap_splits(X.shape[0], 3, 20, 0.25, seed=0)
        best, coefs, _ = solve_ridge_cv_svd(
            torch.from_numpy(X), torch.from_numpy(Y), alphas=torch.from_numpy(DEFAULT_ALPHAS ** 2).float(),
            score_func=correlation_score, cv=splits, n_targets_batch=voxel_batch,
            n_targets_batch_refit=voxel_batch, warn=False)
        return np.sqrt(best.double().numpy()), coefs.numpy()

    rng = np.random.default_rng(1)                    # warm-up (thread pools, lazy LAPACK loading)
    fit(rng.standard_normal((200, 30), dtype=np.float32), rng.standard_normal((200, 20), dtype=np.float32))
    X, Y = np.load(folder / "X.npy"), np.load(folder / "Y.npy")
    X_test, Y_test = np.load(folder / "X_test.npy"), np.load(folder / "Y_test.npy")
    base = _rss_mb()
    t0 = time.perf_counter()
    alphas, weights = fit(X, Y)
    seconds = time.perf_counter() - t0
    r = pearson_columns(X_test @ weights, Y_test)
    np.save(folder / f"alphas_{solver}.npy", alphas)
    np.save(folder / f"r_{solver}.npy", r)
    print(json.dumps({"solver": solver, "fit_s": seconds, "rss_base_mb": base, "rss_peak_mb": _rss_mb(),
                      "threads": torch.get_num_threads()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small smoke-run sizes")
    ap.add_argument("--voxel-batch", type=int, default=4096)
    ap.add_argument("--solvers", default="ours,himalaya")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads in each solver (0: torch's default). On a shared, loaded "
                         "box 1 avoids the multi-threaded LAPACK slow-down that both solvers suffer")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, Path(args.data), args.voxel_batch, args.threads)
        return

    size = QUICK if args.quick else FULL
    print(f"size: {size}  voxel_batch={args.voxel_batch}  cpus={os.cpu_count()}  "
          f"load(1,5,15 min)={tuple(round(v, 2) for v in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="bts-bench-") as tmp:
        folder = Path(tmp)
        (folder / "size.json").write_text(json.dumps({**size, "seed": args.seed}))
        results = {}
        for solver in ["data"] + args.solvers.split(","):
            out = subprocess.run([sys.executable, __file__, "--worker", solver, "--data", str(folder),
                                  "--voxel-batch", str(args.voxel_batch), "--threads", str(args.threads)],
                                 capture_output=True, text=True, cwd=REPO)
            if out.returncode != 0:
                sys.exit(f"{solver} worker failed:\n{out.stderr[-3000:]}")
            if solver == "data":
                continue
            results[solver] = json.loads(out.stdout.strip().splitlines()[-1])
            res = results[solver]
            print(f"{solver:>9}: fit {res['fit_s']:8.2f} s   peak RSS {res['rss_peak_mb']:8.0f} MB "
                  f"(data loaded: {res['rss_base_mb']:.0f} MB, torch threads {res['threads']})")
        if set(results) >= {"ours", "himalaya"}:
            ours, him = results["ours"], results["himalaya"]
            r_o, r_h = np.load(folder / "r_ours.npy"), np.load(folder / "r_himalaya.npy")
            a_o, a_h = np.load(folder / "alphas_ours.npy"), np.load(folder / "alphas_himalaya.npy")
            same = np.isclose(a_o, a_h, rtol=1e-3)
            sig = np.load(folder / "has_signal.npy")
            print(f"speed ratio (himalaya / ours fit time): {him['fit_s'] / ours['fit_s']:.2f}x")
            extra_h = him["rss_peak_mb"] - him["rss_base_mb"]
            extra_o = max(ours["rss_peak_mb"] - ours["rss_base_mb"], 1.0)
            print(f"memory ratio (himalaya / ours peak RSS): {him['rss_peak_mb'] / ours['rss_peak_mb']:.2f}x; "
                  f"above loaded data: {extra_h / extra_o:.2f}x")
            print(f"max |Δr| test set: {np.nanmax(np.abs(r_o - r_h)):.2e} (all voxels), "
                  f"{np.nanmax(np.abs(r_o - r_h)[same]) if same.any() else float('nan'):.2e} (same alpha)")
            print(f"same alpha: {same.mean():.4f} of voxels ({same[sig].mean():.4f} of signal voxels)")
            if not same.all():                             # are the disagreements near-ties?
                cv = np.load(folder / "cv_ours.npz")
                table = cv["scores"][:, ~same]
                him_idx = np.abs(np.log(a_h[~same])[None] - np.log(cv["grid"])[:, None]).argmin(0)
                gap = table.max(0) - table[him_idx, np.arange(table.shape[1])]
                print(f"  where they differ ({(~same).sum()} voxels): our CV-score gap between the two "
                      f"alphas <= {gap.max():.2e}")
            print(f"mean test r, signal voxels: ours {np.nanmean(r_o[sig]):.4f}, "
                  f"himalaya {np.nanmean(r_h[sig]):.4f}")
        print(f"load after (1,5,15 min): {tuple(round(v, 2) for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
