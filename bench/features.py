"""Benchmark: batched layer features (core.features.layers) vs a one-window-at-a-time loop.

On ~1 min of espeak-ng speech (``espeakng-loader``), with ``bundled:whisper-tiny.en`` by default:

1. paper mode (16 s windows, 0.1 s stride, last real frame, every layer) batched, over all windows;
2. the straightforward loop — each window alone through transformers' feature extractor and
   ``model(…, output_hidden_states=True)`` — on an evenly spread subset of the windows, and the
   largest |Δ| against the batched rows of the same windows;
3. fast mode (mean of the last 1 s of frames every 1 s) and its agreement with paper mode after
   Lanczos resampling to TR = 2 s stamps (median over feature dimensions of the Pearson r);
4. the time to extract a demo-sized corpus (14 stories × 160 s) in each mode, extrapolated from
   the windows/s measured here (Whisper windows are all padded to 30 s, so cost per window is
   constant);
5. a roofline: the floating-point operations of one full window (counted by
   ``torch.utils.flop_counter``, attention included), the rate the loop reaches with them, and the
   rate of a plain fp32 matrix product of the model's largest shape on the same threads. Their ratio
   is about the most any implementation of the same arithmetic can gain over the loop on this
   machine (a large matmul is the fastest thing the hardware does), batching included.

Timings are wall-clock on this machine with the torch threads it has (or on its GPU, where the
engine puts models when CUDA is present); the load average is printed because other processes share
the cores. Target (issue "Engine spine II"): batched ≥ 5× the loop.

    python bench/features.py                       # whisper-tiny.en, 60 s of speech
    python bench/features.py --seconds 20 --loop-windows 12 --model random:wav2vec2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SR = 16000
TEXT = (
    "Once upon a time there was a small village by the sea. Every morning the fishermen went out in "
    "their boats, and every evening they came back with baskets full of fish. One day a storm came "
    "and the sky turned dark. The children ran home and their mothers closed the windows. In the "
    "morning the sun was shining again, and the whole village walked down to the beach to see what "
    "the waves had left behind. There were shells and stones and a wooden box with an old map "
    "inside. Nobody knew where it came from, but the oldest woman in the village said she had seen "
    "it before, long ago, when she was a girl. She told them about a ship that never came home, and "
    "about the captain who had drawn the map by candle light in a cold and narrow cabin.")
DEMO_STORIES, DEMO_STORY_S = 14, 160.0  #: the demo's corpus size (issue text)


def synthesize(text: str, seconds: float, rate_wpm: int = 165) -> np.ndarray:
    """``seconds`` of 16 kHz float32 speech: espeak-ng speaking ``text``, repeated."""
    from core.data.demo.synth import speak_text

    x = speak_text(text, rate_wpm=rate_wpm)
    reps = int(np.ceil(seconds * SR / len(x)))
    return np.tile(x, reps)[:int(seconds * SR)]


def window_flops(model, source, window_s: float) -> tuple:
    """Floating-point operations of one full-length window: ``(loop, batched)``, the plain loop
    (:func:`core.features.layers.one_window_features`) and ``source``'s own forward pass (attention
    included: the CPU flash-attention kernel is not in torch's table, it is given sdpa's formula)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    from core.features.layers import one_window_features

    aten = torch.ops.aten
    extra = {aten._scaled_dot_product_flash_attention_for_cpu:
             lambda q, k, v, *a, out_shape=None, **kw: sdpa_flop_count(q, k, v)}
    audio = np.random.default_rng(0).standard_normal(int(window_s * SR)).astype(np.float32) * 0.1
    idx = list(range(model.n_layers + 1))
    frames = torch.tensor([[source._last_frame(len(audio))]])
    counts = []
    for fn in (lambda: one_window_features(model, audio, [len(audio)], window_s),
               lambda: source._forward([audio], idx, frames)):
        counter = FlopCounterMode(display=False, custom_mapping=extra)
        with counter, torch.inference_mode():
            fn()
        counts.append(int(counter.get_total_flops()))
    return tuple(counts)


def gemm_rate(model, window_s: float, repeats: int = 20) -> float:
    """Best fp32 matrix-product rate (flop/s) of ``(frames, d) @ (d, 4d)`` on torch's threads: the
    shape of a full window's feed-forward layer, the bulk of the work."""
    import torch

    d = model.module.config.hidden_size
    frames = 1500 if model.family == "whisper" else int(window_s * 50)  # 50 Hz frames (20 ms)
    dev = next(model.module.parameters()).device
    a, b = torch.randn(frames, d, device=dev), torch.randn(d, 4 * d, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    best = np.inf
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * frames * d * 4 * d / best


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def median_r(a: np.ndarray, b: np.ndarray) -> float:
    a = (a - a.mean(0)) / (a.std(0) + 1e-12)
    b = (b - b.mean(0)) / (b.std(0) + 1e-12)
    return float(np.median((a * b).mean(0)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="bundled:whisper-tiny.en")
    ap.add_argument("--seconds", type=float, default=60.0, help="seconds of speech (default 60)")
    ap.add_argument("--loop-windows", type=int, default=40, help="windows timed in the plain loop")
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()

    import torch

    from core.features.lanczos import lanczos_resample
    from core.features.layers import one_window_features, window_bounds
    from core.models import feature_source, load_model

    load = os.getloadavg()[0]
    audio = synthesize(TEXT, args.seconds)
    model = load_model(args.model)
    paper = feature_source(args.model, mode="paper", batch_size=args.batch_size)
    fast = feature_source(args.model, mode="fast", batch_size=args.batch_size)
    layers = paper.layers()
    print(f"{args.model}: {model.n_layers} layers, {args.seconds:.0f} s of speech, "
          f"torch threads {torch.get_num_threads()}, load average {load:.1f}", flush=True)

    got, wall_p, cpu_p = timed(lambda: paper.extract(audio, layers))
    n_paper = len(got[layers[0]].times)
    _, ends = window_bounds(len(audio), SR, paper.window_s, paper.step_s)
    pick = np.unique(np.linspace(0, len(ends) - 1, min(args.loop_windows, len(ends))).round().astype(int))
    ref, wall_l, cpu_l = timed(lambda: one_window_features(model, audio, ends[pick], paper.window_s))
    delta = max(float(np.abs(got[layer].values[pick] - ref[i]).max()) for i, layer in enumerate(layers))
    scale = max(float(np.abs(ref[i]).max()) for i in ref)
    fgot, wall_f, cpu_f = timed(lambda: fast.extract(audio, layers))
    n_fast = len(fgot[layers[0]].times)

    stamps = np.arange(2.0 * 5, args.seconds - 2.0 * 3, 2.0)  # TR = 2 s, away from the edges
    agree = {layer: median_r(lanczos_resample(got[layer].values, got[layer].times, stamps),
                             lanczos_resample(fgot[layer].values, fgot[layer].times, stamps))
             for layer in layers}
    # one last frame every fast stride: what the averaging replaces
    single = feature_source(args.model, mode="paper", stride_s=fast.fast_stride_s, batch_size=args.batch_size)
    sgot = single.extract(audio, layers)
    agree_single = {layer: median_r(lanczos_resample(got[layer].values, got[layer].times, stamps),
                                    lanczos_resample(sgot[layer].values, sgot[layer].times, stamps))
                    for layer in layers}

    rate_p, rate_l, rate_f = n_paper / wall_p, len(pick) / wall_l, n_fast / wall_f
    (flops, flops_b), peak = window_flops(model, paper, paper.window_s), gemm_rate(model, paper.window_s)
    full = ends[ends >= int(paper.window_s * SR)][:8]  # full-length windows only: `flops` is theirs
    _, wall_full, _ = timed(lambda: one_window_features(model, audio, full, paper.window_s))
    loop_rate = flops * len(full) / wall_full  # flop/s the loop reaches
    corpus_s = DEMO_STORIES * DEMO_STORY_S
    res = {
        "model": args.model, "seconds": args.seconds, "load_average": round(load, 2),
        "batched_paper": {"windows": n_paper, "wall_s": round(wall_p, 2), "cpu_s": round(cpu_p, 2),
                          "windows_per_s": round(rate_p, 3)},
        "loop": {"windows": int(len(pick)), "wall_s": round(wall_l, 2), "cpu_s": round(cpu_l, 2),
                 "windows_per_s": round(rate_l, 3)},
        "speedup_batched_vs_loop": round(rate_p / rate_l, 2),
        "roofline": {"gflop_per_window": round(flops / 1e9, 3), "loop_gflop_per_s": round(loop_rate / 1e9, 1),
                     "batched_gflop_per_window": round(flops_b / 1e9, 3),
                     "gemm_gflop_per_s": round(peak / 1e9, 1),
                     "speedup_bound_same_arithmetic": round(peak / loop_rate, 2)},
        "max_abs_delta": delta, "max_abs_value": scale,
        "fast": {"windows": n_fast, "wall_s": round(wall_f, 2), "cpu_s": round(cpu_f, 2),
                 "windows_per_s": round(rate_f, 3)},
        "fast_vs_paper_median_r_at_TRs": {k: round(v, 4) for k, v in agree.items()},
        "single_frame_vs_paper_median_r_at_TRs": {k: round(v, 4) for k, v in agree_single.items()},
        "demo_corpus_s": corpus_s,
        "demo_corpus_minutes": {"paper": round(corpus_s / paper.step_s / rate_p / 60, 1),
                                "fast": round(corpus_s / fast.step_s / rate_f / 60, 1)},
    }
    print(f"batched paper : {rate_p:7.3f} windows/s ({n_paper} windows, {wall_p:.1f} s wall, {cpu_p:.1f} s CPU)")
    print(f"one-by-one    : {rate_l:7.3f} windows/s ({len(pick)} windows, {wall_l:.1f} s wall, {cpu_l:.1f} s CPU)")
    print(f"speed-up      : {rate_p / rate_l:.2f}×   largest |Δ| {delta:.2e} (values up to {scale:.1f})")
    print(f"roofline      : {flops / 1e9:.1f} GFLOP per window; the loop runs at {loop_rate / 1e9:.0f} GFLOP/s, "
          f"a bare fp32 matmul at {peak / 1e9:.0f} GFLOP/s → no implementation of the same arithmetic "
          f"can be more than {peak / loop_rate:.2f}× faster than the loop on this machine; the batched "
          f"path does {flops_b / 1e9:.1f} GFLOP per window")
    print(f"fast mode     : {rate_f:7.3f} windows/s ({n_fast} windows, {wall_f:.1f} s wall) "
          f"= {args.seconds / wall_f:.2f} s of audio per second")
    print("median r at TR stamps vs paper, per layer: fast (mean of last 1 s) / single frame every 1 s")
    for layer in layers:
        print(f"  {layer:8s} {agree[layer]:.4f} / {agree_single[layer]:.4f}")
    m = res["demo_corpus_minutes"]
    print(f"demo corpus ({DEMO_STORIES} × {DEMO_STORY_S:.0f} s): paper ≈ {m['paper']} min, "
          f"fast ≈ {m['fast']} min (extrapolated from the rates above)")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
