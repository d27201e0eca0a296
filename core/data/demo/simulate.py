"""The demo brain's generative model: drivers → HRF → TR samples → planted voxels + noise.

Per story, on a grid of step ``dt`` from the scan start (``-tr * SCAN_LEAD_TRS`` s) to the last
TR stamp:

* acoustic drivers: log-mel band envelopes (``mel_band_envelopes``) averaged into grid bins and
  projected on their leading principal components (pooled over stories);
* semantic drivers: MiniLM embeddings of the vocabulary's content words projected on their
  leading principal components; at each content word the mean over the last ``context_words``
  content words, held until the next one (context, so the driver is not a proxy of speech
  energy);
* every driver is centred within the story's audio and 0 outside it (an uncentred driver makes
  a story-onset ramp any model "predicts"), then scaled to unit pooled variance;
* convolved with the SPM canonical HRF, sampled at the TR stamps and trimmed ``[10:-5]``
  exactly like the released responses.

A voxel's signal is ``X_acoustic @ w_acoustic + X_semantic @ w_semantic``; its noise is white
Gaussian, independent per presentation. With the test story's noiseless signal variance
``var_s`` (over its rows, ddof=1) and noise variance ``var_n`` per presentation, the mean of
``N`` repeats has the noise ceiling ``cc_max = sqrt(var_s / (var_s + var_n / N))`` — what the
Schoppe et al. (2016) estimator ``sqrt(SP / var(mean))``, ``SP = (var(sum) - sum var) /
(N (N - 1))``, converges to (its numerator and denominator are unbiased for ``var_s`` and
``var_s + var_n / N``).
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from scipy.ndimage import gaussian_filter
from scipy.signal import fftconvolve

from core.data import timing
from core.errors import DataError


def spm_hrf(dt: float, duration: float = 32.0) -> np.ndarray:
    """SPM canonical double-gamma HRF sampled every ``dt`` s over ``[0, duration)``, unit sum.

    ``h(t) = Γpdf(t; 6, 1) − Γpdf(t; 16, 1) / 6`` (peak ≈ 5 s, undershoot ≈ 15 s; SPM's
    ``spm_hrf`` defaults: delays 6 and 16 s, dispersions 1, ratio 1/6).
    """
    t = np.arange(0.0, duration, dt)
    h = stats.gamma.pdf(t, 6.0) - stats.gamma.pdf(t, 16.0) / 6.0
    return h / h.sum()


class StoryGrid:
    """Simulation grid of one story with ``R`` run TRs and audio of ``duration`` seconds.

    Attributes: ``t`` ``(n_grid,)`` seconds; ``in_audio`` bool ``(n_grid,)``; ``stamp_idx``
    ``(R - 5,)`` grid index of each TR stamp.
    """

    def __init__(self, n_trs_run: int, duration: float, dt: float, tr: float = timing.TR_SECONDS):
        self.dt, self.tr, self.n_trs_run = dt, tr, int(n_trs_run)
        self.t0 = -tr * timing.SCAN_LEAD_TRS
        stamps = timing.tr_stamps(self.n_trs_run, tr)
        self.stamp_idx = np.rint((stamps - self.t0) / dt).astype(np.int64)
        if not np.allclose(self.t0 + self.stamp_idx * dt, stamps, atol=1e-6):
            raise DataError(f"simulation step {dt} s does not divide the TR stamps; use e.g. 0.1")
        # one extra TR so every stamp's TR window is on the grid
        self.n = int(self.stamp_idx[-1] + round(tr / dt)) + 1
        self.t = self.t0 + dt * np.arange(self.n)
        self.in_audio = (self.t >= 0.0) & (self.t < duration)

    def bin_frames(self, times: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Mean of frame ``values`` ``(n_frames, d)`` within each grid bin ``[t, t + dt)``."""
        idx = np.floor((times - self.t0) / self.dt + 1e-9).astype(np.int64)
        keep = (idx >= 0) & (idx < self.n)
        count = np.bincount(idx[keep], minlength=self.n).astype(np.float64)
        out = np.zeros((self.n, values.shape[1]))
        for j in range(values.shape[1]):
            out[:, j] = np.bincount(idx[keep], weights=values[keep, j], minlength=self.n)
        return out / np.maximum(count, 1.0)[:, None]

    def hold(self, onsets: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Piecewise-constant signal: ``values[j]`` from ``onsets[j]`` until the next onset."""
        j = np.searchsorted(onsets, self.t, side="right") - 1
        out = np.where((j >= 0)[:, None], values[np.maximum(j, 0)], 0.0)
        return out * self.in_audio[:, None]

    def response_rows(self, x: np.ndarray, hrf: np.ndarray) -> np.ndarray:
        """HRF-convolve ``x`` ``(n_grid, d)``, sample at the TR stamps, trim ``[10:-5]``."""
        conv = fftconvolve(x, hrf[:, None], axes=0)[: self.n]
        return conv[self.stamp_idx][timing.TRIM_START:-timing.TRIM_END]

    def tr_means(self, x: np.ndarray) -> np.ndarray:
        """Mean of ``x`` over each TR's acquisition window, trimmed ``[10:-5]`` → ``(R - 20, d)``."""
        per = int(round(self.tr / self.dt))
        k = np.arange(len(self.stamp_idx))
        idx = k[:, None] * per + np.arange(per)[None, :]
        return x[idx].mean(axis=1)[timing.TRIM_START:-timing.TRIM_END]


def pca_basis(x: np.ndarray, k: int) -> tuple:
    """Mean ``(d,)`` and the leading ``k`` principal axes ``(k, d)`` of rows ``x`` ``(n, d)``.

    Signs are fixed so each axis has a positive sum (deterministic).
    """
    mu = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mu, full_matrices=False)
    if k > vt.shape[0]:
        raise DataError(f"asked for {k} principal components of data with {vt.shape[0]} dimensions")
    axes = vt[:k]
    axes *= np.where(axes.sum(axis=1) < 0, -1.0, 1.0)[:, None]
    return mu, axes


def context_means(vectors: np.ndarray, width: int) -> np.ndarray:
    """Row ``j`` = mean of ``vectors[max(0, j - width + 1) : j + 1]`` (causal rolling mean)."""
    c = np.cumsum(np.vstack([np.zeros((1, vectors.shape[1])), vectors]), axis=0)
    j = np.arange(1, len(vectors) + 1)
    lo = np.maximum(j - width, 0)
    return (c[j] - c[lo]) / (j - lo)[:, None]


def centre_within_audio(grids: list, drivers: list) -> list:
    """Centre each story's drivers over its audio (0 outside), then scale every driver to unit
    variance pooled over all stories' audio samples."""
    out = []
    for g, x in zip(grids, drivers):
        x = np.where(g.in_audio[:, None], x - x[g.in_audio].mean(axis=0), 0.0)
        out.append(x)
    pooled = np.vstack([x[g.in_audio] for g, x in zip(grids, out)])
    sd = pooled.std(axis=0)
    sd[sd == 0] = 1.0
    return [x / sd for x in out]


def driver_correlation(xa: np.ndarray, xs: np.ndarray) -> dict:
    """Correlations between acoustic ``(n, a)`` and semantic ``(n, s)`` drivers (rows pooled).

    Returns ``{"max_abs", "mean_abs", "canonical", "matrix"}``: largest and mean absolute
    pairwise Pearson r, first canonical correlation, and the ``(s, a)`` matrix.
    """
    za = (xa - xa.mean(0)) / xa.std(0)
    zs = (xs - xs.mean(0)) / xs.std(0)
    r = zs.T @ za / len(za)
    qa, _ = np.linalg.qr(za)
    qs, _ = np.linalg.qr(zs)
    canon = float(np.linalg.svd(qs.T @ qa, compute_uv=False)[0])
    return {"max_abs": float(np.abs(r).max()), "mean_abs": float(np.abs(r).mean()),
            "canonical": canon, "matrix": np.round(r, 4).tolist()}


def smooth_field(shape: tuple, zyx: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth Gaussian random field on the volume, read at voxels ``zyx`` ``(n, 3)``."""
    field = gaussian_filter(rng.standard_normal(shape), sigma)
    return field[zyx[:, 0], zyx[:, 1], zyx[:, 2]]


def plant(rois: dict, plan: tuple, zyx: np.ndarray, shape: tuple, sigma: float,
          type_names: tuple, rng: np.random.Generator) -> tuple:
    """Assign voxel types by ``plan`` = ``(roi, type, fraction)`` rules, in smooth patches.

    For each rule, ``round(fraction * |roi|)`` not-yet-planted voxels of the ROI with the highest
    values of a fresh smooth random field get the type. Returns ``voxel_type`` ``(n,)`` int8
    codes into ``type_names`` and ``planted_roi`` ``(n,)`` int16 (index of the rule's ROI in the
    sorted list of plan ROIs, -1 for unplanted).
    """
    n = len(zyx)
    vtype = np.zeros(n, dtype=np.int8)
    roi_names = sorted({r for r, _, _ in plan})
    proi = np.full(n, -1, dtype=np.int16)
    for roi, kind, frac in plan:
        if roi not in rois:
            raise DataError(f"demo plan names ROI {roi!r}, which the subject's overlay lacks; "
                            f"available: {', '.join(sorted(rois))}")
        field = smooth_field(shape, zyx, sigma, rng)
        in_roi = np.asarray(rois[roi], dtype=bool)
        cand = np.flatnonzero(in_roi & (vtype == 0))
        k = min(int(round(frac * in_roi.sum())), len(cand))
        pick = cand[np.argsort(-field[cand], kind="stable")[:k]]
        vtype[pick] = type_names.index(kind)
        proi[pick] = roi_names.index(roi)
    return vtype, proi


def ceilings(vtype: np.ndarray, zyx: np.ndarray, shape: tuple, sigma: float, cc_range: tuple,
             rng: np.random.Generator) -> np.ndarray:
    """Target noise ceilings ``(n,)``: planted voxels spread uniformly over ``cc_range`` in the
    rank order of a smooth field (neighbours have similar ceilings); 0 elsewhere."""
    field = smooth_field(shape, zyx, sigma, rng)
    planted = np.flatnonzero(vtype > 0)
    cc = np.zeros(len(vtype))
    ranks = np.empty(len(planted))
    ranks[np.argsort(field[planted], kind="stable")] = np.arange(len(planted))
    lo, hi = cc_range
    cc[planted] = lo + (hi - lo) * (ranks + 0.5) / max(len(planted), 1)
    return cc


def weights(vtype: np.ndarray, share: np.ndarray, xa: np.ndarray, xs: np.ndarray, xa_test: np.ndarray,
            xs_test: np.ndarray, cc_target: np.ndarray, n_repeats: int,
            rng: np.random.Generator) -> dict:
    """Per-voxel weights and noise levels hitting ``cc_target`` exactly.

    ``share`` ``(n,)`` is the semantic share of each planted voxel's signal variance (0 acoustic,
    1 semantic). Random Gaussian weights are scaled so each part has variance ``1 - share`` /
    ``share`` over the pooled rows ``xa`` ``(n_rows, a)``, ``xs`` ``(n_rows, s)``; the noise
    variance per presentation is ``N var_s_test (1 / cc² − 1)``; finally signal and noise of a
    voxel are scaled together so one presentation has variance 1 (pooled). Unplanted voxels:
    zero weights, noise std 1.
    """
    n = len(vtype)
    planted = np.flatnonzero(vtype > 0)
    wa = np.zeros((xa.shape[1], n))
    ws = np.zeros((xs.shape[1], n))
    ca, cs = np.cov(xa, rowvar=False), np.cov(xs, rowvar=False)
    ra = rng.standard_normal((xa.shape[1], len(planted)))
    rs = rng.standard_normal((xs.shape[1], len(planted)))
    ra /= np.sqrt(np.einsum("ip,ij,jp->p", ra, ca, ra))
    rs /= np.sqrt(np.einsum("ip,ij,jp->p", rs, cs, rs))
    wa[:, planted] = ra * np.sqrt(1.0 - share[planted])
    ws[:, planted] = rs * np.sqrt(share[planted])
    w = np.vstack([wa, ws])
    x = np.hstack([xa, xs])
    var_pool = np.einsum("ip,ij,jp->p", w[:, planted], np.cov(x, rowvar=False), w[:, planted])
    s_test = np.hstack([xa_test, xs_test]) @ w[:, planted]
    var_test = s_test.var(axis=0, ddof=1)
    cc = cc_target[planted]
    var_noise = n_repeats * var_test * (1.0 / cc ** 2 - 1.0)
    scale = 1.0 / np.sqrt(var_pool + var_noise)
    wa[:, planted] *= scale
    ws[:, planted] *= scale
    noise_std = np.ones(n)
    noise_std[planted] = np.sqrt(var_noise) * scale
    signal_std, signal_std_test, cc_max = np.zeros(n), np.zeros(n), np.zeros(n)
    signal_std[planted] = np.sqrt(var_pool) * scale
    signal_std_test[planted] = np.sqrt(var_test) * scale
    cc_max[planted] = true_cc_max(signal_std_test[planted] ** 2, noise_std[planted] ** 2, n_repeats)
    return dict(w_acoustic=wa.astype(np.float32), w_semantic=ws.astype(np.float32),
                signal_std=signal_std, signal_std_test=signal_std_test, noise_std=noise_std,
                true_cc_max=cc_max)


def true_cc_max(var_s, var_n, n_repeats: int):
    """Noise ceiling of the mean of ``n_repeats`` presentations: ``sqrt(var_s / (var_s + var_n / N))``."""
    var_s = np.asarray(var_s, dtype=np.float64)
    return np.sqrt(var_s / (var_s + np.asarray(var_n, dtype=np.float64) / n_repeats))
