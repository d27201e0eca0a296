"""Effect of the fast window protocol on alignment: encode a demo with a speech model's layers in
paper mode and in fast mode, print per-layer mean r of each and the mean / max |Δr| over voxels.

    python bench/fast_mode.py [--model bundled:whisper-tiny.en] [--tiny]

Two references put the fast mode's |Δr| in scale; both are cut from the paper-mode features already
extracted, so they cost encodes only:

- ``paper/0.2s``: paper mode keeping every second window (a 0.2 s stride) vs paper mode;
- ``phase``: the even windows vs the odd ones (two 0.2 s strides 0.1 s apart): how much alignment
  moves when nothing but the sampling phase of the last-frame features changes.

``--tiny`` uses the tiny demo (5 short stories: paper mode takes ~15 min on 2 cores instead of
~1.5 h). Prints JSON last. Target (issue "Engine spine II"): mean |Δr| < 0.005.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere


class EveryOther:
    """Paper-mode features with every second window kept, from ``phase`` 0 (windows ending at
    0.2 s, 0.4 s, …) or 1 (0.1 s, 0.3 s, …): a 0.2 s stride without a second extraction."""

    def __init__(self, source, phase: int):
        self.source, self.phase = source, int(phase)
        self.spec = f"{source.spec}[every 2nd window, phase {self.phase}]"

    def layers(self):
        return self.source.layers()

    def fingerprint(self) -> str:
        from core.store import key_hash

        return key_hash(self.source.fingerprint(), "every-other", self.phase)

    def compute(self, dataset, story, layers, progress=None):
        from core.features.base import TimedFeatures

        full = self.source.compute(dataset, story, layers, progress)
        first = 1 - self.phase  # window k (1-based) ends at k·0.1 s; phase 0 keeps even k
        return {k: TimedFeatures(v.times[first::2], v.values[first::2]) for k, v in full.items()}


def compare(a: dict, b: dict, planted: np.ndarray) -> dict:
    """|Δr| of two ``{layer: r (n_voxels,)}`` over all voxels and over the planted ones."""
    out = {}
    for layer in a:
        d = np.abs(a[layer] - b[layer])
        out[layer] = {"mean_abs_dr": float(np.nanmean(d)), "max_abs_dr": float(np.nanmax(d)),
                      "mean_abs_dr_planted": float(np.nanmean(d[planted])),
                      "delta_mean_r_planted": float(np.nanmean(a[layer][planted]) - np.nanmean(b[layer][planted]))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="bundled:whisper-tiny.en")
    ap.add_argument("--tiny", action="store_true", help="the tiny demo config (fast to run)")
    args = ap.parse_args()

    from core.data.demo import DemoConfig, open_demo
    from core.pipelines.encode import encode
    from core.features import source_for

    ds = open_demo(DemoConfig.tiny() if args.tiny else None)
    paper = source_for(args.model, "demo", "paper")
    sources = {"fast": source_for(args.model, "demo", "fast"), "paper": paper,
               "paper_even": EveryOther(paper, 0), "paper_odd": EveryOther(paper, 1)}
    r, secs, mean_r = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, src in sources.items():
            t0 = time.time()
            summary = encode(ds, "S1", src, None, Path(tmp) / name)
            secs[name] = round(time.time() - t0, 1)
            r[name] = {layer: np.load(Path(tmp) / name / f"r_{layer}.npy") for layer in summary["layers"]}
            mean_r[name] = {layer: summary["layers"][layer]["mean_r"] for layer in summary["layers"]}
            print(f"{name:10s}: {secs[name]:8.1f} s  " + "  ".join(
                f"{layer} {v:.4f}" for layer, v in mean_r[name].items()), flush=True)
    planted = ds.ground_truth()["voxel_type"] > 0
    print("mean r over the planted voxels: " + "  ".join(
        f"{name} " + "/".join(f"{np.nanmean(v[planted]):.3f}" for v in r[name].values()) for name in r))
    pairs = {"fast_vs_paper": ("fast", "paper"), "paper_0.2s_vs_paper": ("paper_even", "paper"),
             "phase_even_vs_odd": ("paper_even", "paper_odd")}
    out = {name: compare(r[a], r[b], planted) for name, (a, b) in pairs.items()}
    print("mean |Δr| over all voxels (planted voxels) per layer:")
    for name, res in out.items():
        print(f"  {name:20s} " + "  ".join(
            f"{v['mean_abs_dr']:.4f} ({v['mean_abs_dr_planted']:.4f})" for v in res.values()))
    mean_r_planted = {name: {layer: float(np.nanmean(v[planted])) for layer, v in r[name].items()} for name in r}
    print(json.dumps({"model": args.model, "tiny": args.tiny, "seconds": secs, "mean_r": mean_r,
                      "mean_r_planted": mean_r_planted,
                      "comparisons": out, "load_average": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
