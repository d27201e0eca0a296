"""Build the demo group (ds003020 layout on fsaverage5 + per-participant truth) from a GroupConfig.

The stories are the built demo's (``core.data.demo``): its wavs and TextGrids are hard-linked
(copied where links fail), and its true acoustic / semantic drivers (``drivers.npz``: mel-band
PCs and context-averaged MiniLM PCs, HRF-convolved at the response rows) drive every participant
— no speech is synthesised again. Per participant, regions are planted in geodesic discs on the
fsaverage5 cortex whose centres and radii are jittered around the standard ROIs
(``core.data.fsaverage.STANDARD_ROI_CENTRES``), with its own ceilings and noise, and driver
weights partly shared with the group (``GroupConfig.weight_similarity``), so responses correlate
across participants where their regions overlap.
Written into a temp folder and renamed (``core.store.atomic_dir``). Output under ``root``::

    stimuli/<story>.wav, derivative/TextGrids/<story>.TextGrid, derivative/respdict.json,
    derivative/split.json, derivative/preprocessed_data/<P>/<story>.hf5 ("data"; the test story
    also "individual_repeats", (n_repeats, n_trs, n_voxels), n_repeats may be 1),
    ground_truth/<P>.npz, surface.npz ("vertices"), group.json
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np

from core.data import fsaverage as fs
from core.data import layout
from core.data.demo import simulate
from core.data.demo.config import TYPE_NAMES, rng_for
from core.data.demo_group.config import GROUP_VERSION, MESH, GroupConfig
from core.progress import ProgressFn, report, sub_progress
from core.store import atomic_dir, save_json, save_npz

_STREAM_PLANT, _STREAM_WEIGHTS, _STREAM_NOISE, _STREAM_GROUP = 101, 102, 103, 104  #: rng streams


def columns(config: GroupConfig) -> np.ndarray:
    """Response columns → fsaverage5 vertex (concatenated left + right), ``(n_voxels,)`` int64:
    every ``vertex_step``-th vertex of :func:`core.data.fsaverage.cortex_mask` (medial wall out)."""
    return np.flatnonzero(fs.cortex_mask())[:: int(config.vertex_step)].astype(np.int64)


def _jittered_disc(hemi: str, xyz, radius0: float, config: GroupConfig, rng: np.random.Generator) -> tuple:
    """One participant's disc: ``(centre vertex within hemi, radius mm, distances (10242,))``."""
    h = fs.HEMIS.index(hemi)
    cortex = fs.cortex_mask()[h * fs.N_PER_HEMI:(h + 1) * fs.N_PER_HEMI]
    c0 = fs.nearest_vertex(xyz, hemi)
    centre = c0
    if config.jitter_mm > 0:
        near = np.flatnonzero((fs.geodesic_distances(c0, hemi, limit=config.jitter_mm) <= config.jitter_mm)
                              & cortex)
        centre = int(near[rng.integers(len(near))]) if len(near) else c0
    radius = float(radius0 * rng.uniform(*config.radius_scale))
    d = fs.geodesic_distances(centre, hemi, limit=radius)
    d[~cortex] = np.inf
    return centre, radius, d


def plant_participant(config: GroupConfig, index: int) -> dict:
    """Planted truth of participant ``index`` over all 20,484 fsaverage5 vertices.

    For each ROI of the plan and each of its standard discs: a jittered centre and radius
    (:func:`_jittered_disc`); its free cortical vertices ordered by distance + a uniform
    perturbation (0–30 % of the radius, so borders are ragged) are given the ROI's rules in
    order (``round(fraction * disc size)`` each). The one-presentation ceiling falls linearly
    from ``cc_range[1]`` at the centre to ``cc_range[0]`` at the rim (± 0.03 noise, clipped).
    A mixed vertex's semantic share is the group's at that vertex (one draw shared by everyone).

    Returns
    -------
    dict of ``voxel_type`` ``(20484,)`` int8 codes into TYPE_NAMES, ``planted_roi`` ``(20484,)``
    int16 (index into ``plan_roi_names``, -1 none), ``cc1_target`` ``(20484,)`` float64,
    ``semantic_share`` ``(20484,)`` float64, ``disc_centres`` ``(n_discs,)`` int64 (concatenated
    vertex index), ``disc_radii`` ``(n_discs,)`` mm, ``disc_rois`` ``(n_discs,)`` str.
    """
    rng = rng_for(config.seed, _STREAM_PLANT, index)
    n = fs.N_VERTICES
    vtype = np.zeros(n, dtype=np.int8)
    proi = np.full(n, -1, dtype=np.int16)
    cc1 = np.zeros(n)
    roi_names = sorted({r for r, _, _ in config.plan})
    order_rois = list(dict.fromkeys(r for r, _, _ in config.plan))
    centres, radii, disc_rois = [], [], []
    lo, hi = config.cc_range
    for roi in order_rois:
        rules = [(kind, frac) for r, kind, frac in config.plan if r == roi]
        for hemi, xyz, r0 in fs.STANDARD_ROI_CENTRES[roi]:
            off = fs.HEMIS.index(hemi) * fs.N_PER_HEMI
            centre, radius, d = _jittered_disc(hemi, xyz, r0, config, rng)
            disc = np.flatnonzero(d <= radius)
            score = d[disc] + rng.uniform(0.0, 0.3 * radius, size=len(disc))
            order = disc[np.argsort(score, kind="stable")]
            free = order[vtype[off + order] == 0]
            start = 0
            for kind, frac in rules:
                k = min(int(round(frac * len(disc))), len(free) - start)
                pick = off + free[start:start + k]
                vtype[pick] = TYPE_NAMES.index(kind)
                proi[pick] = roi_names.index(roi)
                start += k
            got = off + free[:start]
            cc1[got] = np.clip(hi - (hi - lo) * d[got - off] / radius
                               + rng.normal(0.0, 0.03, size=len(got)), lo, hi)
            centres.append(off + centre)
            radii.append(radius)
            disc_rois.append(roi)
    share = (vtype == TYPE_NAMES.index("semantic")).astype(np.float64)
    mixed = vtype == TYPE_NAMES.index("mixed")  # a mixed vertex's share is the group's at that vertex
    group_share = rng_for(config.seed, _STREAM_GROUP, 1).uniform(*config.mixed_semantic_share, size=n)
    share[mixed] = group_share[mixed]
    return dict(voxel_type=vtype, planted_roi=proi, cc1_target=cc1, semantic_share=share,
                plan_roi_names=np.array(roi_names), disc_centres=np.array(centres, dtype=np.int64),
                disc_radii=np.array(radii), disc_rois=np.array(disc_rois))


def weights(vtype: np.ndarray, share: np.ndarray, raw_a: np.ndarray, raw_s: np.ndarray, xa: np.ndarray,
            xs: np.ndarray, xa_test: np.ndarray, xs_test: np.ndarray, cc1: np.ndarray) -> dict:
    """Per-vertex weights and noise hitting the one-presentation ceilings ``cc1`` exactly.

    As :func:`core.data.demo.simulate.weights` with ``n_repeats=1``, but from given raw weight
    directions ``raw_a`` ``(n_acoustic, n)`` / ``raw_s`` ``(n_semantic, n)`` (partly shared by the
    group): each part is scaled to variance ``1 - share`` / ``share`` over the pooled rows ``xa``
    / ``xs``, the noise variance per presentation is ``var_s_test (1 / cc1² − 1)``, and signal and
    noise are scaled together so one presentation has unit pooled variance. Unplanted vertices:
    zero weights, noise std 1. Returns ``w_acoustic``, ``w_semantic`` (float32), ``signal_std``,
    ``signal_std_test``, ``noise_std``, ``true_cc_max_single`` ``(n,)``.
    """
    n = len(vtype)
    planted = np.flatnonzero(vtype > 0)
    wa, ws = np.zeros((xa.shape[1], n)), np.zeros((xs.shape[1], n))
    ra, rs = raw_a[:, planted].astype(np.float64), raw_s[:, planted].astype(np.float64)
    ra /= np.sqrt(np.einsum("ip,ij,jp->p", ra, np.cov(xa, rowvar=False), ra))
    rs /= np.sqrt(np.einsum("ip,ij,jp->p", rs, np.cov(xs, rowvar=False), rs))
    wa[:, planted] = ra * np.sqrt(1.0 - share[planted])
    ws[:, planted] = rs * np.sqrt(share[planted])
    w = np.vstack([wa, ws])[:, planted]
    var_pool = np.einsum("ip,ij,jp->p", w, np.cov(np.hstack([xa, xs]), rowvar=False), w)
    var_test = (np.hstack([xa_test, xs_test]) @ w).var(axis=0, ddof=1)
    var_noise = var_test * (1.0 / cc1[planted] ** 2 - 1.0)
    scale = 1.0 / np.sqrt(var_pool + var_noise)
    wa[:, planted] *= scale
    ws[:, planted] *= scale
    noise_std, signal_std, signal_std_test, cc = np.ones(n), np.zeros(n), np.zeros(n), np.zeros(n)
    noise_std[planted] = np.sqrt(var_noise) * scale
    signal_std[planted] = np.sqrt(var_pool) * scale
    signal_std_test[planted] = np.sqrt(var_test) * scale
    cc[planted] = simulate.true_cc_max(signal_std_test[planted] ** 2, noise_std[planted] ** 2, 1)
    return dict(w_acoustic=wa.astype(np.float32), w_semantic=ws.astype(np.float32), signal_std=signal_std,
                signal_std_test=signal_std_test, noise_std=noise_std, true_cc_max_single=cc)


def raw_weights(config: GroupConfig, index: int, n_acoustic: int, n_semantic: int) -> tuple:
    """Raw weight directions ``(n_acoustic, 20484)``, ``(n_semantic, 20484)`` of participant
    ``index``: ``sqrt(rho) * group + sqrt(1 - rho) * own`` (standard normal draws; rho =
    ``config.weight_similarity``)."""
    rho = float(config.weight_similarity)
    g = rng_for(config.seed, _STREAM_GROUP)
    own = rng_for(config.seed, _STREAM_WEIGHTS, index)
    n, k = fs.N_VERTICES, n_acoustic + n_semantic
    raw = np.sqrt(rho) * g.standard_normal((k, n)) + np.sqrt(1.0 - rho) * own.standard_normal((k, n))
    return raw[:n_acoustic], raw[n_acoustic:]


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _participant(tmp: Path, config: GroupConfig, index: int, demo, cols: np.ndarray, xa: dict,
                 xs: dict) -> dict:
    """Plant, weigh and write one participant; returns its ground-truth arrays (per column)."""
    subject = config.subjects[index]
    n_rep = config.n_repeats_of(index)
    p = plant_participant(config, index)
    vtype = p["voxel_type"][cols]
    test = demo.test_story
    pooled_a, pooled_s = np.vstack(list(xa.values())), np.vstack(list(xs.values()))
    raw_a, raw_s = raw_weights(config, index, pooled_a.shape[1], pooled_s.shape[1])
    # noise sized for the one-presentation ceiling; the mean of n_rep presentations does better
    truth = weights(vtype, p["semantic_share"][cols], raw_a[:, cols], raw_s[:, cols], pooled_a, pooled_s,
                    xa[test], xs[test], p["cc1_target"][cols])
    planted = vtype > 0
    truth["true_cc_max"] = np.zeros(len(cols))
    truth["true_cc_max"][planted] = simulate.true_cc_max(truth["signal_std_test"][planted] ** 2,
                                                         truth["noise_std"][planted] ** 2, n_rep)
    out_dir = layout.responses_dir(tmp, subject)
    noise_std = truth["noise_std"].astype(np.float32)
    for j, s in enumerate(xa):
        signal = xa[s] @ truth["w_acoustic"] + xs[s] @ truth["w_semantic"]
        n_pres = n_rep if s == test else 1
        rng = rng_for(config.seed, _STREAM_NOISE, index, j)
        pres = signal[None] + rng.standard_normal((n_pres, *signal.shape), dtype=np.float32) * noise_std
        layout.write_responses(out_dir / f"{s}.hf5", pres.mean(axis=0),
                               repeats=pres if s == test else None, dtype=np.float32)
    gt = dict(voxel_type=vtype.astype(np.int64), type_names=np.array(TYPE_NAMES),
              semantic_share=p["semantic_share"][cols].astype(np.float32), planted_roi=p["planted_roi"][cols],
              plan_roi_names=p["plan_roi_names"], n_repeats=np.array(n_rep), vertices=cols,
              cc1_target=p["cc1_target"][cols], disc_centres=p["disc_centres"],
              disc_radii=p["disc_radii"], disc_rois=p["disc_rois"],
              acoustic_names=np.array([f"mel_pc{k + 1}" for k in range(pooled_a.shape[1])]),
              semantic_names=np.array([f"minilm_pc{k + 1}" for k in range(pooled_s.shape[1])]),
              **truth)
    save_npz(tmp / "ground_truth" / f"{subject}.npz", gt)
    return gt


def build_group(root: Path, config: GroupConfig | None = None, demo=None, progress: ProgressFn = None) -> dict:
    """Generate the demo group into ``root`` (replacing it atomically); return group.json's dict.

    Parameters
    ----------
    root : destination folder (e.g. ``get_settings().demo_group_root``).
    config : :class:`GroupConfig` (default ``GroupConfig()``: 6 participants on the default demo's
        14 stories, every cortical fsaverage5 vertex = 19,004 columns).
    demo : the opened :class:`~core.data.demo.DemoDataset` of ``config.demo`` (None: opened —
        and built first if needed — here).
    progress : optional ``(fraction, message)`` callback.

    Notes
    -----
    Like the demo, responses are scaled once per vertex (a single presentation has unit variance
    pooled over stories), not z-scored per story, so signal + noise and the closed-form ceilings
    stay exact. Files are float32.
    """
    from core.data.demo import open_demo

    config = config or GroupConfig()
    t_start = time.perf_counter()
    if demo is None:
        demo = open_demo(config.demo, progress=sub_progress(progress, 0.0, 0.3))
    report(progress, 0.3, "demo-group: drivers of the demo's stories")
    stories = list(demo.stories)
    xa = {s: demo.drivers(s)["acoustic"].astype(np.float32) for s in stories}
    xs = {s: demo.drivers(s)["semantic"].astype(np.float32) for s in stories}
    cols = columns(config)
    with atomic_dir(Path(root)) as tmp:
        for s in stories:
            _link_or_copy(layout.stimuli_dir(demo.root) / f"{s}.wav", layout.stimuli_dir(tmp) / f"{s}.wav")
            _link_or_copy(layout.textgrid_dir(demo.root) / f"{s}.TextGrid",
                          layout.textgrid_dir(tmp) / f"{s}.TextGrid")
        layout.write_respdict(tmp, {s: demo.n_trs_run(s) for s in stories})
        save_json(tmp / "derivative" / "split.json", {"test": demo.test_story, "val": demo.val_story})
        save_npz(tmp / "surface.npz", {"vertices": cols})
        n_planted = {}
        for i, subject in enumerate(config.subjects):
            report(progress, 0.35 + 0.6 * i / config.n_participants, f"demo-group: participant {subject}")
            gt = _participant(tmp, config, i, demo, cols, xa, xs)
            n_planted[subject] = {name: int((gt["voxel_type"] == k).sum()) for k, name in enumerate(TYPE_NAMES)}
        meta = {
            "code_version": GROUP_VERSION, "seed": config.seed, "config": config.to_dict(),
            "mesh": MESH, "n_per_hemi": fs.N_PER_HEMI, "n_voxels": int(len(cols)),
            "subjects": config.subjects,
            "n_repeats": {s: config.n_repeats_of(i) for i, s in enumerate(config.subjects)},
            "test_story": demo.test_story, "val_story": demo.val_story, "stories": stories,
            "demo": {"root": str(demo.root), "code_version": demo.meta.get("code_version")},
            "n_planted": n_planted,
            "roi_centres": {k: [[h, int(v), float(r)] for h, v, r in c]
                            for k, c in fs.standard_centres().items()},
            "build_seconds": round(time.perf_counter() - t_start, 2),
        }
        save_json(tmp / "group.json", meta)
    report(progress, 1.0, f"demo-group: built in {meta['build_seconds']:.0f} s")
    return meta
