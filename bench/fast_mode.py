"""Effect of the fast window protocol on alignment: encode a demo with a speech model's layers in
paper mode and in fast mode, print per-layer mean r of each and the mean / max |Δr| over voxels.

    python bench/fast_mode.py [--model bundled:whisper-tiny.en] [--tiny]

``--tiny`` uses the tiny demo (5 short stories: paper mode takes ~15 min on 2 cores instead of
hours). Prints JSON last. Target (issue "Engine spine II"): mean |Δr| < 0.005.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="bundled:whisper-tiny.en")
    ap.add_argument("--tiny", action="store_true", help="the tiny demo config (fast to run)")
    args = ap.parse_args()

    from core.data.demo import DemoConfig, open_demo
    from core.encoding.run import encode
    from core.features import source_for

    ds = open_demo(DemoConfig.tiny() if args.tiny else None)
    out, r, secs = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("fast", "paper"):
            src = source_for(args.model, "demo", mode)
            t0 = time.time()
            summary = encode(ds, "S1", src, None, Path(tmp) / mode)
            secs[mode] = round(time.time() - t0, 1)
            r[mode] = {layer: np.load(Path(tmp) / mode / f"r_{layer}.npy") for layer in summary["layers"]}
            print(f"{mode:5s}: {secs[mode]:8.1f} s  " + "  ".join(
                f"{layer} {summary['layers'][layer]['mean_r']:.4f}" for layer in summary["layers"]), flush=True)
    planted = ds.ground_truth()["voxel_type"] > 0
    for layer in r["paper"]:
        d = np.abs(r["fast"][layer] - r["paper"][layer])
        out[layer] = {"mean_abs_dr": float(np.nanmean(d)), "max_abs_dr": float(np.nanmax(d)),
                      "mean_abs_dr_planted": float(np.nanmean(d[planted])),
                      "mean_r_planted_paper": float(np.nanmean(r["paper"][layer][planted])),
                      "mean_r_planted_fast": float(np.nanmean(r["fast"][layer][planted])),
                      "mean_r_paper": float(np.nanmean(r["paper"][layer])),
                      "mean_r_fast": float(np.nanmean(r["fast"][layer]))}
        o = out[layer]
        print(f"{layer}: mean |Δr| {o['mean_abs_dr']:.4f} (planted voxels {o['mean_abs_dr_planted']:.4f}), "
              f"max {o['max_abs_dr']:.3f}; planted mean r paper {o['mean_r_planted_paper']:.3f} "
              f"fast {o['mean_r_planted_fast']:.3f}")
    print(json.dumps({"model": args.model, "tiny": args.tiny, "seconds": secs, "layers": out,
                      "load_average": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
