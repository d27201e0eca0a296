"""Build the demo dataset (ds003020 layout + ground truth) deterministically from a DemoConfig.

Written into a temp folder and renamed (``core.store.atomic_dir``), so a crash never leaves a
half-built demo. Output under ``root``::

    stimuli/<story>.wav, derivative/TextGrids/<story>.TextGrid, derivative/respdict.json,
    derivative/preprocessed_data/S1/<story>.hf5 ("data"; test story also "individual_repeats"),
    derivative/split.json {"test", "val"}, ground_truth.npz, drivers.npz, demo.json
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np

from core.data import layout, timing
from core.data.base import SurfaceMapping
from core.data.demo import simulate, speak, synth, text
from core.data.demo.config import DEMO_VERSION, SUBJECT, TYPE_NAMES, DemoConfig, rng_for
from core.progress import ProgressFn, report, sub_progress
from core.store import atomic_dir, cached_arrays, key_hash, save_json, save_npz

MAPPING = SurfaceMapping(cortex_subject=SUBJECT, xfm="fullhead", mask="thin", filestore=None)
#: pycortex S1, transform "fullhead", mask "thin": 37,226 cortical voxels


def _vocab_embeddings(words: list) -> np.ndarray:
    from core.features.embeddings import MINILM_ID, embed_words

    key = key_hash("demo-vocab", MINILM_ID, words)
    return cached_arrays("demo-embeddings", key, lambda: {"E": embed_words(words)})["E"]


def _semantic_table(config: DemoConfig) -> dict:
    """Content word → ``(n_semantic,)`` standardised PCA projection of its MiniLM embedding."""
    words = [w for w in text.vocabulary() if text.is_content(w)]
    emb = _vocab_embeddings(words).astype(np.float64)
    mu, axes = simulate.pca_basis(emb, config.n_semantic)
    proj = (emb - mu) @ axes.T
    proj /= proj.std(axis=0)
    return dict(zip(words, proj))


def _drivers(config: DemoConfig, spoken: dict, n_trs: dict) -> tuple:
    """Per story: grid, and acoustic / semantic drivers on it (centred, unit pooled variance)."""
    from core.features.spectral import mel_band_envelopes

    grids, mel = {}, {}
    for s, sp in spoken.items():
        g = simulate.StoryGrid(n_trs[s], sp.duration, config.sim_dt)
        times, env = mel_band_envelopes(sp.audio, synth.OUT_RATE, n_bands=config.n_mel_bands)
        grids[s], mel[s] = g, g.bin_frames(times, env.astype(np.float64))
    pooled = np.vstack([mel[s][grids[s].in_audio] for s in spoken])
    mu, axes = simulate.pca_basis(pooled, config.n_acoustic)
    table = _semantic_table(config)
    ac, se = [], []
    for s, sp in spoken.items():
        g = grids[s]
        ac.append(((mel[s] - mu) @ axes.T) * g.in_audio[:, None])
        content = [(a, w) for a, _, w in sp.words if text.is_content(w)]
        onsets = np.array([a for a, _ in content])
        vecs = simulate.context_means(np.stack([table[w] for _, w in content]), config.context_words)
        se.append(g.hold(onsets, vecs))
    gl = [grids[s] for s in spoken]
    ac = dict(zip(spoken, simulate.centre_within_audio(gl, ac)))
    se = dict(zip(spoken, simulate.centre_within_audio(gl, se)))
    return grids, ac, se


def _write_stories(tmp: Path, config: DemoConfig, progress: ProgressFn) -> tuple:
    """Speak every story and write its wav and TextGrid; returns ``({name: SpokenStory},
    {name: home topic}, {name: R})`` in build order (the last story is the test story)."""
    said = speak.speak_stories(config, tmp / ".speech", sub_progress(progress, 0.0, 0.9))
    shutil.rmtree(tmp / ".speech", ignore_errors=True)
    spoken, topics, n_trs = {}, {}, {}
    for i, (topic, sp) in enumerate(said):
        name = f"{topic}{i + 1:02d}"
        spoken[name], topics[name] = sp, topic
        n_trs[name] = timing.run_trs_for_duration(sp.duration)
        layout.write_wav(layout.stimuli_dir(tmp) / f"{name}.wav", sp.audio, synth.OUT_RATE)
        layout.write_textgrid(layout.textgrid_dir(tmp) / f"{name}.TextGrid", sp.phones, sp.words,
                              xmax=sp.duration)
    layout.write_respdict(tmp, n_trs)
    report(progress, 1.0, "demo: stories written")
    return spoken, topics, n_trs


def _write_responses(tmp: Path, config: DemoConfig, xa: dict, xs: dict, truth: dict, test_story: str,
                     progress: ProgressFn) -> None:
    """``derivative/preprocessed_data/S1/<story>.hf5``: signal + independent noise per presentation
    (float32; the test story's ``data`` is the mean of its ``individual_repeats``)."""
    wa, ws = truth["w_acoustic"], truth["w_semantic"]
    noise_std = truth["noise_std"].astype(np.float32)
    out_dir = layout.responses_dir(tmp, SUBJECT)
    for i, s in enumerate(xa):
        signal = xa[s].astype(np.float32) @ wa + xs[s].astype(np.float32) @ ws
        n_pres = config.n_repeats if s == test_story else 1
        noise = rng_for(config.seed, 3, i).standard_normal((n_pres, *signal.shape), dtype=np.float32)
        pres = signal[None] + noise * noise_std
        layout.write_responses(out_dir / f"{s}.hf5", pres.mean(axis=0),
                               repeats=pres if s == test_story else None, dtype=np.float32)
        report(progress, (i + 1) / len(xa), f"demo: responses of {s}")


def build_demo(root: Path, config: DemoConfig | None = None, progress: ProgressFn = None) -> dict:
    """Generate the demo dataset into ``root`` (replacing it atomically); return demo.json's dict.

    Parameters
    ----------
    root : destination folder (e.g. ``get_settings().demo_root``).
    config : :class:`DemoConfig` (default: ``DemoConfig()``: 13 stories of 150–170 s and a test
        story of 440–460 s with 5 repeats).
    progress : optional ``(fraction, message)`` callback.

    Notes
    -----
    Responses are not z-scored per story (ds003020's are): each voxel is scaled once so a single
    presentation has unit variance pooled over all stories, which keeps signal + noise and the
    closed-form noise ceiling exact. Files are float32 (ds003020's are float64).
    """
    from core.data.cortex_rois import mask_voxels, roi_masks

    config = config or DemoConfig()
    t_start = time.perf_counter()
    report(progress, 0.0, "demo: ROI masks of pycortex S1")
    rois, zyx = roi_masks(MAPPING), mask_voxels(MAPPING)
    shape = tuple(int(v) + 1 for v in zyx.max(axis=0))

    with atomic_dir(Path(root)) as tmp:
        spoken, topics, n_trs = _write_stories(tmp, config, sub_progress(progress, 0.05, 0.35))
        stories = list(spoken)
        test_story, val_story = stories[-1], stories[-2]
        save_json(tmp / "derivative" / "split.json", {"test": test_story, "val": val_story})

        report(progress, 0.4, "demo: acoustic and semantic drivers")
        grids, ac_grid, se_grid = _drivers(config, spoken, n_trs)
        hrf = simulate.spm_hrf(config.sim_dt)
        xa = {s: grids[s].response_rows(ac_grid[s], hrf) for s in stories}
        xs = {s: grids[s].response_rows(se_grid[s], hrf) for s in stories}
        pooled_a, pooled_s = np.vstack(list(xa.values())), np.vstack(list(xs.values()))
        corr = {"hrf": simulate.driver_correlation(pooled_a, pooled_s),
                "tr_mean": simulate.driver_correlation(
                    np.vstack([grids[s].tr_means(ac_grid[s]) for s in stories]),
                    np.vstack([grids[s].tr_means(se_grid[s]) for s in stories]))}

        report(progress, 0.55, "demo: planting voxels")
        rng = rng_for(config.seed, 2)
        vtype, proi = simulate.plant(rois, config.plan, zyx, shape, config.field_sigma, TYPE_NAMES, rng)
        cc_target = simulate.ceilings(vtype, zyx, shape, config.field_sigma, config.cc_max_range, rng)
        share = (vtype == TYPE_NAMES.index("semantic")).astype(np.float64)
        mixed = vtype == TYPE_NAMES.index("mixed")
        share[mixed] = rng.uniform(*config.mixed_semantic_share, size=int(mixed.sum()))
        truth = simulate.weights(vtype, share, pooled_a, pooled_s, xa[test_story], xs[test_story],
                                 cc_target, config.n_repeats, rng)
        _write_responses(tmp, config, xa, xs, truth, test_story, sub_progress(progress, 0.6, 0.95))

        save_npz(tmp / "ground_truth.npz", dict(
            voxel_type=vtype.astype(np.int64), type_names=np.array(TYPE_NAMES),
            semantic_share=share.astype(np.float32), planted_roi=proi,
            plan_roi_names=np.array(sorted({r for r, _, _ in config.plan})),
            n_repeats=np.array(config.n_repeats),
            acoustic_names=np.array([f"mel_pc{k + 1}" for k in range(config.n_acoustic)]),
            semantic_names=np.array([f"minilm_pc{k + 1}" for k in range(config.n_semantic)]),
            **truth))
        save_npz(tmp / "drivers.npz", {f"{kind}__{s}": x[s].astype(np.float32)
                                       for kind, x in (("acoustic", xa), ("semantic", xs)) for s in stories})
        dropped = sum((sp.dropped for sp in spoken.values()), Counter())
        meta = {
            "code_version": DEMO_VERSION, "seed": config.seed, "config": config.to_dict(),
            "subject": SUBJECT, "surface": {"cortex_subject": MAPPING.cortex_subject,
                                            "xfm": MAPPING.xfm, "mask": MAPPING.mask},
            "n_voxels": len(zyx), "test_story": test_story, "val_story": val_story,
            "stories": {s: {"duration_s": round(spoken[s].duration, 3), "n_trs_run": n_trs[s],
                            "n_words": len(spoken[s].words), "n_phones": len(spoken[s].phones),
                            "home_topic": topics[s]} for s in stories},
            "n_planted": {name: int((vtype == k).sum()) for k, name in enumerate(TYPE_NAMES)},
            "driver_correlation": corr,
            "dropped_phonemes": dict(dropped),
            "hrf": "SPM canonical double gamma (peaks 6 s and 16 s, ratio 1/6)",
            "build_seconds": round(time.perf_counter() - t_start, 2),
        }
        save_json(tmp / "demo.json", meta)
    report(progress, 1.0, f"demo: built in {meta['build_seconds']:.0f} s")
    return meta
