"""Statistics: per-voxel significance of test r, FDR, and Wilcoxon comparisons of two models.

Per-voxel significance (block permutation of the test story): the prediction ``ŷ`` of the test story
is fixed; the measured response ``y`` (mean of the repeats) is cut into consecutive blocks of
``block_trs`` TRs (default 10 TRs = 20 s, longer than the HRF, so the autocorrelation inside a
block is kept; a last shorter block is a block too), the blocks are shuffled (one permutation per
draw, the same for all voxels), and r is recomputed. One-sided (an encoding model should predict
positively): ``p = (1 + #{r_perm ≥ r}) / (1 + n_perm)`` (Phipson & Smyth 2010: never 0).
``n_perm`` (default 1000) draws from ``numpy.random.default_rng(seed)``; vectorised over voxels and
permutations in batches (bounded memory).

Two p-values from the same permutations (``method``): ``"empirical"`` is the count above; it cannot go
below ``1 / (n_perm + 1)``, too coarse for FDR over 10⁴–10⁵ voxels (with 1,000 permutations and
37,226 voxels, BH needs thousands of true effects at the minimum p before any survives — on the
demo none did with 500). ``"normal"`` (the default) is the upper tail of a normal fitted to the
voxel's own permutation null (its mean and SD over the ``n_perm`` draws): the same null, calibrated
per voxel, with a continuous tail. Under the null it is close to the empirical p wherever that is
resolvable (tested), and it lets strong effects reach the small p that FDR needs.

FDR: Benjamini–Hochberg over the voxels tested (``scipy.stats.false_discovery_control``,
``method="bh"``) → q-values; significant where ``q ≤ alpha`` (default 0.05).

Model comparison: Wilcoxon signed-rank per region over voxels (the paper's test, reused from
:func:`core.analysis.compare.paired_stats`) and across subjects (one mean per subject per model,
paired over subjects; ``scipy.stats.wilcoxon``, two-sided, exact for small n). With n subjects the
smallest two-sided exact p is ``2 / 2^n`` (n = 5 → 0.0625: no test at 0.05 can succeed below 6
subjects); fewer than 2 subjects give no p-value, and the result says so.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from core.errors import ConfigError, DataError

BLOCK_TRS = 10  #: block length of the permutation (TRs; 20 s at TR 2 s)
N_PERM = 1000
ALPHA = 0.05
PERM_BATCH = 50  #: permutations per vectorised step (memory bound, not a result)
VOXEL_BATCH = 4096  #: voxels per step (memory bound, not a result)


def block_permutations(n_trs: int, n_perm: int = N_PERM, block_trs: int = BLOCK_TRS,
                       seed: int = 0) -> np.ndarray:
    """``(n_perm, n_trs)`` int64 row orders: the rows cut into consecutive blocks of ``block_trs``
    (the last may be shorter), the blocks shuffled (``default_rng(seed).permutation`` per draw)."""
    n_trs, n_perm, block_trs = int(n_trs), int(n_perm), int(block_trs)
    if n_perm < 1:
        raise ConfigError(f"n_perm must be >= 1, got {n_perm}")
    if block_trs < 1:
        raise ConfigError(f"block_trs must be >= 1 TR, got {block_trs}")
    blocks = [np.arange(s, min(s + block_trs, n_trs)) for s in range(0, n_trs, block_trs)]
    if len(blocks) < 2:
        raise ConfigError(f"the test story has {n_trs} TRs: blocks of {block_trs} TRs give one block, "
                          f"nothing to permute — use a smaller --block-trs")
    rng = np.random.default_rng(seed)
    return np.stack([np.concatenate([blocks[i] for i in rng.permutation(len(blocks))])
                     for _ in range(n_perm)]).astype(np.int64)


def _zcols(a: np.ndarray) -> np.ndarray:
    a = a - a.mean(0)
    sd = np.sqrt((a * a).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sd > 0, a / np.where(sd > 0, sd, 1.0), np.nan)


def permutation_pvalues(prediction: np.ndarray, y: np.ndarray, n_perm: int = N_PERM,
                        block_trs: int = BLOCK_TRS, seed: int = 0, perm_batch: int = PERM_BATCH,
                        voxel_batch: int = VOXEL_BATCH) -> dict:
    """Block-permutation p-values of per-voxel Pearson r (module docstring).

    Parameters
    ----------
    prediction, y : ``(n_trs, n_voxels)`` test prediction and measured response (repeat mean).

    Returns
    -------
    ``{"r": (n_voxels,), "p": (n_voxels,), "null_mean", "null_sd"}`` float64; NaN where r is
    undefined (constant column).
    """
    pred, y = np.asarray(prediction, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if pred.ndim != 2 or pred.shape != y.shape:
        raise DataError(f"prediction {pred.shape} and response {y.shape} must be (n_trs, n_voxels) of one shape")
    perms = block_permutations(pred.shape[0], n_perm, block_trs, seed)
    n_vox = pred.shape[1]
    r = np.full(n_vox, np.nan)
    count = np.zeros(n_vox)
    s1, s2 = np.zeros(n_vox), np.zeros(n_vox)
    for v0 in range(0, n_vox, voxel_batch):
        sl = slice(v0, v0 + voxel_batch)
        zp, zy = _zcols(pred[:, sl]), _zcols(y[:, sl])
        r_obs = (zp * zy).sum(0)
        r[sl] = r_obs
        for k0 in range(0, len(perms), perm_batch):
            rp = np.einsum("tv,ktv->kv", zp, zy[perms[k0:k0 + perm_batch]])  # same permutation for all voxels
            count[sl] += (rp >= r_obs - 1e-12).sum(0)
            s1[sl] += rp.sum(0)
            s2[sl] += (rp * rp).sum(0)
    ok = np.isfinite(r)
    p = np.where(ok, (1.0 + count) / (1.0 + len(perms)), np.nan)
    mean = s1 / len(perms)
    sd = np.sqrt(np.maximum(s2 / len(perms) - mean ** 2, 0.0))
    return {"r": np.clip(r, -1, 1), "p": p, "null_mean": np.where(ok, mean, np.nan),
            "null_sd": np.where(ok, sd, np.nan)}


def fdr(p: np.ndarray, alpha: float = ALPHA) -> dict:
    """Benjamini–Hochberg q-values over the finite p-values (``scipy.stats.false_discovery_control``)
    and the mask ``q ≤ alpha`` (NaN p → NaN q, not significant)."""
    from scipy.stats import false_discovery_control

    if not 0.0 < float(alpha) < 1.0:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}")
    p = np.asarray(p, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = false_discovery_control(p[ok], method="bh")
    return {"q": q, "significant": np.where(ok, q <= alpha, False)}


METHODS = ("normal", "empirical")


def normal_pvalues(r: np.ndarray, null_mean: np.ndarray, null_sd: np.ndarray) -> np.ndarray:
    """Upper-tail p of ``r`` under a normal with the permutation null's mean and SD (per voxel);
    NaN where r is NaN or the null has no spread."""
    from scipy.stats import norm

    r, mean, sd = (np.asarray(a, dtype=np.float64) for a in (r, null_mean, null_sd))
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (r - mean) / np.where(sd > 0, sd, np.nan)
    return np.where(np.isfinite(z), norm.sf(z), np.nan)


def significance_arrays(prediction: np.ndarray, y: np.ndarray, n_perm: int = N_PERM,
                        block_trs: int = BLOCK_TRS, alpha: float = ALPHA, seed: int = 0,
                        method: str = "normal") -> dict:
    """:func:`permutation_pvalues` + :func:`fdr`: ``{"r", "p", "p_empirical", "q", "significant"}``;
    ``p`` is the ``method``'s (module docstring)."""
    if method not in METHODS:
        raise ConfigError(f"unknown p-value method {method!r}; expected one of {', '.join(METHODS)}")
    out = permutation_pvalues(prediction, y, n_perm, block_trs, seed)
    out["p_empirical"] = out["p"]
    if method == "normal":
        out["p"] = normal_pvalues(out["r"], out["null_mean"], out["null_sd"])
    out.update(fdr(out["p"], alpha))
    return out


def region_significance(significant: np.ndarray, tested: np.ndarray, regions: Mapping[str, np.ndarray]) -> dict:
    """``{region: {"n_tested", "n_significant", "share"}}`` (share of the tested voxels; NaN if none)."""
    sig, tested = np.asarray(significant, dtype=bool), np.asarray(tested, dtype=bool)
    out = {}
    for name, mask in regions.items():
        m = np.asarray(mask, dtype=bool) & tested
        n, k = int(m.sum()), int((sig & m).sum())
        out[name] = {"n_tested": n, "n_significant": k, "share": k / n if n else float("nan")}
    return out


def compare_regions(a: np.ndarray, b: np.ndarray, regions: Mapping[str, np.ndarray]) -> dict:
    """Wilcoxon signed-rank of ``b − a`` per region over voxels
    (:func:`core.analysis.compare.paired_stats`)."""
    from core.analysis.compare import compare_maps

    return compare_maps(a, b, regions)["regions"]


def across_subjects(means_a: Mapping[str, float], means_b: Mapping[str, float]) -> dict:
    """Wilcoxon signed-rank of model B vs model A over subjects (one mean per subject per model).

    Returns
    -------
    ``{"subjects", "n_subjects", "mean_a", "mean_b", "mean_delta", "n_improved", "wilcoxon_stat",
    "wilcoxon_p", "min_possible_p", "note"}``; p is NaN with a note when fewer than 2 subjects are
    paired (or all differences are 0); ``min_possible_p = 2 / 2^n`` (two-sided exact).
    """
    from scipy.stats import wilcoxon

    common = [s for s in means_a if s in means_b
              and np.isfinite(means_a[s]) and np.isfinite(means_b[s])]
    a = np.array([means_a[s] for s in common], dtype=np.float64)
    b = np.array([means_b[s] for s in common], dtype=np.float64)
    d = b - a
    n = len(common)
    out = {"subjects": common, "n_subjects": n,
           "mean_a": float(a.mean()) if n else float("nan"), "mean_b": float(b.mean()) if n else float("nan"),
           "mean_delta": float(d.mean()) if n else float("nan"), "n_improved": int((d > 0).sum()),
           "wilcoxon_stat": float("nan"), "wilcoxon_p": float("nan"),
           "min_possible_p": 2.0 / 2 ** n if n else float("nan"), "note": ""}
    if n < 2:
        out["note"] = (f"{n} subject(s) paired: a Wilcoxon test across subjects needs at least 2 "
                       f"(and 6 for p < 0.05 to be possible: the smallest two-sided exact p is 2/2^n)")
        return out
    if not np.any(d != 0):
        out["note"] = "all per-subject differences are 0: no test"
        return out
    res = wilcoxon(d, zero_method="wilcox", alternative="two-sided")
    out["wilcoxon_stat"], out["wilcoxon_p"] = float(res.statistic), float(res.pvalue)
    if out["min_possible_p"] > ALPHA:
        out["note"] = (f"with {n} subjects the smallest possible two-sided p is {out['min_possible_p']:.3g} "
                       f"> {ALPHA}: this test cannot reach significance")
    return out


def subject_region_means(maps: Mapping[str, np.ndarray], regions_by_subject: Mapping[str, Mapping[str, np.ndarray]],
                         region: str) -> dict:
    """``{subject: nanmean of its map inside region}`` (subjects lacking the region are left out)."""
    out = {}
    for s, m in maps.items():
        mask = regions_by_subject.get(s, {}).get(region)
        if mask is None:
            continue
        vals = np.asarray(m, dtype=np.float64)[np.asarray(mask, dtype=bool)]
        vals = vals[np.isfinite(vals)]
        if vals.size:
            out[s] = float(vals.mean())
    return out
