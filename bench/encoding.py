"""Benchmark: our bootstrap ridge (core.encoding.ridge) vs himalaya's solve_ridge_cv_svd (torch backend).

Same synthetic data, same bootstrap splits (3 × 25 % of 20-TR chunks), same alphas (paper grid
``logspace(1, 4, 15)``; himalaya gets ``α²`` because it puts α where HuthLab puts α²), same
voxel batch, correlation scoring. Each solver runs in its own subprocess so that the peak resident
memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is its own. Prints the fit times, peak memory,
the speed and memory ratios, the largest |Δr| of the test-set correlations and the fraction of
voxels given the same alpha. Target (issue "Engine spine I"): ours ≥ 1.5× faster at equal results.

Roofline: the floating-point work of our fit is counted analytically from the operations
``core.encoding.ridge`` performs at these sizes (:func:`fit_flops`: Gram matrices, their
eigendecompositions, the factor products, the per-alpha held-out predictions and scores, the refit)
and divided by the fit time; the same worker measures a bare fp32 (and fp64) matrix product of the
fit's dominant shape on the same torch threads, before and after the fit. ``--check-flops`` recounts
with ``torch.utils.flop_counter`` in an extra, untimed fit (matrix products exactly, the
eigendecompositions by the same formula) to catch drift between the count and ``ridge.py``.

``--size uts03`` is a real subject's size (9,000 TRs × 3,072 delayed features → 95,000 voxels,
290 test TRs; data generated in voxel chunks): only our ridge runs (himalaya's resolution matrices
would not fit) and the fit's peak RSS is checked against a 24 GiB budget.

    python bench/encoding.py                # 3000 TRs × 3072 features → 20,000 voxels (minutes)
    python bench/encoding.py --quick        # small smoke run (seconds)
    python bench/encoding.py --size uts03   # 9000 × 3072 → 95,000 voxels, ours only (tens of minutes)
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
#: a real subject's size (UTS03: ~9,000 training TRs, 768-dim features × 4 delays, ~95k voxels)
UTS03 = dict(n_trs=9000, n_features=3072, n_voxels=95000, n_test=290)
SIZES = {"default": FULL, "quick": QUICK, "uts03": UTS03}
MEMORY_BUDGET_GIB = 24.0  #: peak RSS allowed for the uts03 fit
#: flops of one ``torch.linalg.eigh`` of an n × n matrix, per n³. On CPU it is LAPACK ``syevd``:
#: tridiagonal reduction ``sytrd`` 4/3 n³ + divide-and-conquer eigenvectors of the tridiagonal
#: ``stedc`` ≤ 4/3 n³ (its merge products: n³ (1 + 1/4 + 1/16 + …); less where eigenvalues deflate)
#: + back-transformation ``ormtr`` 2 n³ = 14/3 n³ — between eigenvalues only (4/3) and QR iteration
#: with vectors (≈ 9, Golub & Van Loan), so an upper-end estimate for D&C.
EIGH_FLOPS_PER_N3 = 14.0 / 3.0


def _features(rng, n: int, n_features: int) -> tuple:
    """``(x (n, n_features), readout (n, 16))``: a 128-dim AR(1) latent (ρ = 0.7) mixed into
    correlated columns plus noise, and its rank-16 linear read-out (the planted signal's basis)."""
    from scipy.signal import lfilter

    latent = lfilter([1.0], [1.0, -0.7], rng.standard_normal((n, 128)), axis=0)
    x = latent @ rng.standard_normal((128, n_features)) / np.sqrt(128)
    x += 0.3 * rng.standard_normal((n, n_features))
    return x, (x @ rng.standard_normal((n_features, 16))) / np.sqrt(n_features)


def z(a: np.ndarray) -> np.ndarray:
    """Columns z-scored (ddof 0), float32."""
    return ((a - a.mean(0)) / a.std(0)).astype(np.float32)


def make_data(n_trs: int, n_features: int, n_voxels: int, n_test: int, seed: int = 0) -> dict:
    """Synthetic z-scored design and responses; 40 % of voxels carry signal of varied strength.

    Features: a 128-dim AR(1) latent process (ρ = 0.7) mixed into ``n_features`` columns plus noise
    (correlated columns, decaying spectrum, like delayed model features). Responses: a rank-16
    linear read-out of the features, scaled per voxel to a log-uniform SNR in [0.02, 2], plus noise.
    """
    rng = np.random.default_rng(seed)
    x, readout = _features(rng, n_trs + n_test, n_features)
    signal = readout @ rng.standard_normal((16, n_voxels))
    signal /= signal.std(0)
    snr = np.where(rng.random(n_voxels) < 0.4, 10 ** rng.uniform(np.log10(0.02), np.log10(2), n_voxels), 0)
    y = np.sqrt(snr) * signal + rng.standard_normal((n_trs + n_test, n_voxels))
    return {"X": z(x[:n_trs]), "Y": z(y[:n_trs]), "X_test": z(x[n_trs:]), "Y_test": z(y[n_trs:]),
            "has_signal": snr > 0}


def write_data_chunked(folder: Path, n_trs: int, n_features: int, n_voxels: int, n_test: int,
                       seed: int = 0, voxel_chunk: int = 4096) -> None:
    """:func:`make_data`'s model written to ``folder/*.npy`` one voxel chunk at a time (float32).

    Same design (AR(1) latent → correlated features, z-scored) and same planted signal (rank-16
    read-out, 40 % signal voxels, log-uniform SNR in [0.02, 2]); the responses are drawn, z-scored
    (train and test rows separately, per column, so chunking changes nothing but the draws) and
    written ``voxel_chunk`` columns at a time into memory-mapped ``.npy`` files, so generating a
    subject-sized ``Y`` needs a few hundred MB, not ``n × n_voxels`` float64.
    """
    from numpy.lib.format import open_memmap

    rng = np.random.default_rng(seed)
    x, readout = _features(rng, n_trs + n_test, n_features)
    snr = np.where(rng.random(n_voxels) < 0.4, 10 ** rng.uniform(np.log10(0.02), np.log10(2), n_voxels), 0)

    np.save(folder / "X.npy", z(x[:n_trs]))
    np.save(folder / "X_test.npy", z(x[n_trs:]))
    np.save(folder / "has_signal.npy", snr > 0)
    del x
    y_out = open_memmap(folder / "Y.npy", mode="w+", dtype=np.float32, shape=(n_trs, n_voxels))
    y_test = open_memmap(folder / "Y_test.npy", mode="w+", dtype=np.float32, shape=(n_test, n_voxels))
    for start in range(0, n_voxels, voxel_chunk):
        sl = slice(start, min(start + voxel_chunk, n_voxels))
        signal = readout @ rng.standard_normal((16, sl.stop - sl.start))
        signal /= signal.std(0)
        y = np.sqrt(snr[sl]) * signal + rng.standard_normal(signal.shape)
        y_out[:, sl], y_test[:, sl] = z(y[:n_trs]), z(y[n_trs:])
    y_out.flush()
    y_test.flush()
    del y_out, y_test


def fit_flops(n_trs: int, n_features: int, n_voxels: int, n_alphas: int, splits, voxel_batch: int) -> dict:
    """Floating-point operations of ``bootstrap_ridge`` at these sizes, by kind, counted from what
    ``core.encoding.ridge`` does (a product ``(m, k) @ (k, n)`` is ``2 m k n``).

    Per bootstrap (``_cv_scores``) on the ``n_tr`` train and ``n_te`` held-out rows, then once on
    all rows (``_weights``):

    * ``_ridge_factors``: if ``n ≤ p`` the Gram ``X Xᵀ`` (2 n² p, float64), its eigh (n) and
      ``Xᵀ U`` (2 p n², float64); else ``XᵀX`` (2 n p², float64), its eigh (p) and ``X V``
      (2 n p², float32); ``k = min(n, p)``;
    * CV: ``m = X_held · left`` (2 n_te p k); then either the one-step fold ``(A·n_te, k) @ (k, n_tr)``
      once plus ``(A·n_te, n_tr) @ Y_train`` per voxel (2 A n_te n_tr V), or ``right @ Y_train``
      (2 k n_tr V) plus ``(A·n_te, k) @ (k, V)`` (2 A n_te k V) — the same test as ridge.py picks;
      scoring each of the A × n_te × V predictions ≈ 6 flops (centre, norm, product, sum);
    * refit: ``right @ Y`` (2 k n V) and ``left @ (g ∘ ·)`` (2 p k V);
    * eigh: :data:`EIGH_FLOPS_PER_N3` · size³ each.
    """
    from core.encoding.ridge import _BLOCK_BYTES

    A, p, V = n_alphas, n_features, n_voxels
    out = {"gemm_fp32": 0.0, "gemm_fp64": 0.0, "eigh": 0.0, "elementwise": 0.0}
    n_batches = -(-V // voxel_batch)

    def factors(n):
        if n <= p:
            out["gemm_fp64"] += 2.0 * n * n * p + 2.0 * p * n * n
            out["eigh"] += EIGH_FLOPS_PER_N3 * float(n) ** 3
        else:
            out["gemm_fp64"] += 2.0 * n * p * p
            out["eigh"] += EIGH_FLOPS_PER_N3 * float(p) ** 3
            out["gemm_fp32"] += 2.0 * n * p * p
        return min(n, p)

    for train, held in splits:
        n_tr, n_te = len(train), len(held)
        k = factors(n_tr)
        out["gemm_fp32"] += 2.0 * n_te * p * k
        one_step = (A * n_te * n_tr * (k + V) < k * V * (n_tr + A * n_te)
                    and A * n_te * n_tr * 4 <= _BLOCK_BYTES)
        if one_step:
            out["gemm_fp32"] += 2.0 * A * n_te * k * n_tr + 2.0 * A * n_te * n_tr * V
            out["elementwise"] += A * n_te * k
        else:
            out["gemm_fp32"] += 2.0 * k * n_tr * V + 2.0 * A * n_te * k * V
            out["elementwise"] += n_batches * A * n_te * k
        out["elementwise"] += 6.0 * A * n_te * V + 6.0 * n_te * V
    k = factors(n_trs)
    out["gemm_fp32"] += 2.0 * k * n_trs * V + 2.0 * p * k * V
    out["elementwise"] += 2.0 * k * V
    out["total"] = sum(out.values())
    return out


def matmul_rates(rows: int, inner: int, cols: int, repeats: int = 5) -> dict:
    """Best fp32 and fp64 rates (flop/s) of ``(rows, inner) @ (inner, cols)`` on torch's threads."""
    import torch

    rates = {}
    for name, dtype, reps in (("fp32", torch.float32, repeats), ("fp64", torch.float64, max(2, repeats // 2))):
        a, b = torch.randn(rows, inner, dtype=dtype), torch.randn(inner, cols, dtype=dtype)
        a @ b                                                         # warm-up
        best = np.inf
        for _ in range(reps):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
        rates[name] = 2.0 * rows * inner * cols / best
    return rates


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def worker(solver: str, folder: Path, voxel_batch: int, threads: int = 0, check_flops: bool = False) -> None:
    """Fit one solver on the saved data; write its alphas and test r; print timings as JSON.

    ``solver == "data"``: generate the data (sizes from ``size.json``) and save it, so the parent
    stays small (Linux carries a parent's ``ru_maxrss`` into the children it forks).
    """
    if solver == "data":
        size = json.loads((folder / "size.json").read_text())
        if size.pop("chunked", False):
            write_data_chunked(folder, **size)
            return
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
    extra = {}
    if solver == "ours":      # roofline: bare products of the fit's dominant shape, same threads
        splits = bootstrap_splits(X.shape[0], 3, 20, 0.25, seed=0)
        n_tr = len(splits[0][0])
        shape = (2048, min(n_tr, X.shape[1]), min(voxel_batch, Y.shape[1]))
        extra["matmul_shape"] = shape
        extra["matmul_before"] = matmul_rates(*shape)
    base = _rss_mb()
    t0 = time.perf_counter()
    alphas, weights = fit(X, Y)
    seconds = time.perf_counter() - t0
    peak = _rss_mb()
    if solver == "ours":
        extra["matmul_after"] = matmul_rates(*extra["matmul_shape"])
        extra["flops"] = fit_flops(X.shape[0], X.shape[1], Y.shape[1], len(DEFAULT_ALPHAS), splits, voxel_batch)
        if check_flops:        # recount an untimed fit with torch's dispatch-level counter
            from torch.utils.flop_counter import FlopCounterMode

            def eigh_flop(a_shape, *args, out_shape=None, **kwargs):
                return int(EIGH_FLOPS_PER_N3 * float(a_shape[-1]) ** 3 * int(np.prod(a_shape[:-2])))

            with FlopCounterMode(display=False, custom_mapping={torch.ops.aten._linalg_eigh: eigh_flop}) as fc:
                fit(X, Y)
            extra["flop_counter"] = {str(k): float(v) for k, v in fc.get_flop_counts()["Global"].items()}
    r = pearson_columns(X_test @ weights, Y_test)
    np.save(folder / f"alphas_{solver}.npy", alphas)
    np.save(folder / f"r_{solver}.npy", r)
    print(json.dumps({"solver": solver, "fit_s": seconds, "rss_base_mb": base, "rss_peak_mb": peak,
                      "threads": torch.get_num_threads(), **extra}))


def print_roofline(res: dict) -> None:
    """Counted work of our fit, its achieved rate and the fraction of the bare fp32 matmul rate."""
    f, t = res["flops"], res["fit_s"]
    r32 = max(res["matmul_before"]["fp32"], res["matmul_after"]["fp32"])
    r64 = max(res["matmul_before"]["fp64"], res["matmul_after"]["fp64"])
    g = 1e9
    print(f"     work: {f['total'] / g:,.0f} GFLOP counted = matmul fp32 {f['gemm_fp32'] / g:,.1f} + "
          f"matmul fp64 {f['gemm_fp64'] / g:,.1f} + eigh {f['eigh'] / g:,.1f} "
          f"({EIGH_FLOPS_PER_N3:.2f} n³ each) + elementwise {f['elementwise'] / g:,.1f}")
    rows, inner, cols = res["matmul_shape"]
    print(f"   matmul: ({rows}, {inner}) @ ({inner}, {cols}) on {res['threads']} thread(s): fp32 "
          f"{res['matmul_before']['fp32'] / g:.0f} / {res['matmul_after']['fp32'] / g:.0f} GFLOP/s "
          f"(before / after the fit), fp64 {res['matmul_before']['fp64'] / g:.0f} / "
          f"{res['matmul_after']['fp64'] / g:.0f}")
    bound = f["gemm_fp32"] / r32 + (f["gemm_fp64"] + f["eigh"]) / r64
    print(f" roofline: fit {t:.2f} s, {f['total'] / g:,.0f} GFLOP → {f['total'] / t / g:.1f} GFLOP/s achieved "
          f"vs {r32 / g:.1f} GFLOP/s fp32 matmul = {f['total'] / t / r32:.1%} of the roofline; at the "
          f"measured matmul rates (fp64 and eigh at the fp64 rate) the work needs >= {bound:.2f} s "
          f"({bound / t:.1%} of the fit time)")
    if "flop_counter" in res:
        fc = res["flop_counter"]
        mm = sum(v for k, v in fc.items() if "eigh" not in k)
        eig = sum(v for k, v in fc.items() if "eigh" in k)
        ours = f["gemm_fp32"] + f["gemm_fp64"]
        print(f"  counter: torch.utils.flop_counter on an extra untimed fit: matmuls {mm / g:,.1f} GFLOP "
              f"(analytic {ours / g:,.1f}, ratio {mm / ours:.4f}), eigh {eig / g:,.1f} (analytic "
              f"{f['eigh'] / g:,.1f}); ops counted: {sorted(fc)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small smoke-run sizes (= --size quick)")
    ap.add_argument("--size", choices=sorted(SIZES), default="default",
                    help="default: 3000 × 3072 → 20,000 voxels; quick: smoke run; uts03: a real "
                         "subject's size (9000 × 3072 → 95,000 voxels), ours only, 24 GiB check")
    ap.add_argument("--voxel-batch", type=int, default=4096)
    ap.add_argument("--solvers", default=None, help="comma list (default: ours,himalaya; uts03: ours)")
    ap.add_argument("--check-flops", action="store_true",
                    help="recount our fit's flops with torch.utils.flop_counter (one extra untimed fit)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads in each solver (0: torch's default). On a shared, loaded "
                         "box 1 avoids the multi-threaded LAPACK slow-down that both solvers suffer")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, Path(args.data), args.voxel_batch, args.threads, args.check_flops)
        return

    size_name = "quick" if args.quick else args.size
    size = SIZES[size_name]
    solvers = (args.solvers or ("ours" if size_name == "uts03" else "ours,himalaya")).split(",")
    if size_name == "uts03" and "himalaya" in solvers:
        sys.exit("--size uts03 runs our ridge only: himalaya's (n_alphas, p, n) resolution matrices "
                 "and all-alpha refit do not fit/finish at a subject's size")
    print(f"size: {size_name} {size}  voxel_batch={args.voxel_batch}  cpus={os.cpu_count()}  "
          f"load(1,5,15 min)={tuple(round(v, 2) for v in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="bts-bench-") as tmp:
        folder = Path(tmp)
        (folder / "size.json").write_text(json.dumps({**size, "seed": args.seed,
                                                      "chunked": size_name == "uts03"}))
        results = {}
        for solver in ["data"] + solvers:
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, __file__, "--worker", solver, "--data", str(folder),
                                  "--voxel-batch", str(args.voxel_batch), "--threads", str(args.threads)]
                                 + (["--check-flops"] if args.check_flops else []),
                                 capture_output=True, text=True, cwd=REPO)
            if out.returncode != 0:
                sys.exit(f"{solver} worker failed:\n{out.stderr[-3000:]}")
            if solver == "data":
                print(f"     data: generated in {time.perf_counter() - t0:.1f} s", flush=True)
                continue
            results[solver] = json.loads(out.stdout.strip().splitlines()[-1])
            res = results[solver]
            print(f"{solver:>9}: fit {res['fit_s']:8.2f} s   peak RSS {res['rss_peak_mb']:8.0f} MB "
                  f"(data loaded: {res['rss_base_mb']:.0f} MB, torch threads {res['threads']})")
            if solver == "ours":
                print_roofline(res)
            sys.stdout.flush()
        over_budget = False
        if "ours" in results and "himalaya" not in results:
            r_o, sig = np.load(folder / "r_ours.npy"), np.load(folder / "has_signal.npy")
            print(f"ours, test r ({size['n_test']} TRs): mean {np.nanmean(r_o[sig]):.4f} on the "
                  f"{sig.sum()} signal voxels, {np.nanmean(r_o[~sig]):.4f} on the {(~sig).sum()} null ones")
            if size_name == "uts03":
                peak_gib = results["ours"]["rss_peak_mb"] / 1024
                over_budget = peak_gib > MEMORY_BUDGET_GIB
                print(f"memory: peak RSS {peak_gib:.2f} GiB of the fitting process — "
                      f"{'EXCEEDS' if over_budget else 'within'} the {MEMORY_BUDGET_GIB:.0f} GiB budget")
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
    if over_budget:
        sys.exit(1)


if __name__ == "__main__":
    main()
