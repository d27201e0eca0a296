"""Brain-tuning throughput: samples/s and peak memory per model family and precision (fp32 vs bf16).

Each configuration runs in its own subprocess (clean peak RSS): a
:class:`core.tuning.model.BrainTuningModel` with a ``Linear(hidden, n_voxels)`` head, prepared by
``accelerate.Accelerator`` exactly as :func:`core.tuning.trainer.train` does (``mixed_precision``
``"no"`` or ``"bf16"``), the paper's two-group Adam, MSE, on micro-batches of 10 s waveforms
(160,000 samples at 16 kHz, the released pairing). After warm-up steps, it times forward + backward
+ optimiser steps and prints samples/s, the peak RSS (CPU) or peak allocated memory (CUDA), and the
bf16 / fp32 ratios. The reference is fp32 measured in the same run on the same machine.
``--train-layers 0,2`` adds configurations that train only the top N transformer layers
(:func:`core.tuning.model.freeze_lower_layers`; 0 = all, the paper), with their ratio to fp32 / all.

    python bench/tuning.py                 # random tiny families + bundled whisper-tiny.en
    python bench/tuning.py --models bundled:whisper-base --steps 3
    python bench/tuning.py --models bundled:whisper-tiny.en --micro-batch 8 --train-layers 0,2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODELS = ("random:wav2vec2-tiny", "random:hubert-tiny", "random:whisper-tiny", "bundled:whisper-tiny.en")


def worker(spec: str, precision: str, micro: int, steps: int, warmup: int, n_voxels: int,
           train_layers: int = 0) -> dict:
    """One configuration: the timed training loop (runs in its own process)."""
    import torch
    from accelerate import Accelerator

    from core.tuning import BrainTuningModel, preset
    from core.tuning.losses import get_loss
    from core.tuning.model import freeze_lower_layers
    from core.tuning.schedule import build_optimizer

    torch.manual_seed(0)
    cuda = torch.cuda.is_available()
    acc = Accelerator(mixed_precision="bf16" if precision == "bf16" else "no", cpu=not cuda)
    model = BrainTuningModel.from_spec(spec, n_voxels, device=str(acc.device), head_init="random")
    freeze_lower_layers(model.backbone, model.family, train_layers)
    params = preset("paper", micro_batch=micro, batch_size=micro, precision=precision)
    backbone, head = model.parameter_groups()
    opt, sched = build_optimizer(backbone, head, params, steps_per_epoch=steps + warmup)
    model, opt = acc.prepare(model, opt)
    loss_fn = get_loss("mse")
    waves = torch.randn(micro, 160_000, device=acc.device) * 0.1
    target = torch.randn(micro, n_voxels, device=acc.device)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = None
    for i in range(warmup + steps):
        if i == warmup:
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        with acc.autocast():
            loss = loss_fn(model(waves), target)
        acc.backward(loss)
        opt.step()
        sched.step()
        opt.zero_grad()
    if cuda:
        torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() / 2**20 if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"spec": spec, "precision": precision, "train_layers": train_layers, "device": str(acc.device), "samples_per_s": steps * micro / secs,
            "peak_mb": peak, "peak_kind": "cuda allocated" if cuda else "RSS", "loss": float(loss)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS))
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=4, help="timed optimiser steps per configuration")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--train-layers", default="0", help="comma list: top N layers trained (0 = all)")
    ap.add_argument("--voxels", type=int, default=1613, help="head outputs (1,613 = the demo's semantic ROIs)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        spec, precision, n_top = args.worker.split("|")
        print(json.dumps(worker(spec, precision, args.micro_batch, args.steps, args.warmup, args.voxels,
                                int(n_top))))
        return
    print(f"brain-tuning throughput: micro-batch {args.micro_batch} × 10 s, {args.steps} timed steps, "
          f"{args.voxels} voxels", flush=True)
    rows = {}
    tops = [int(x) for x in args.train_layers.split(",")]
    for spec in args.models.split(","):
        for n_top in tops:
            for precision in ("fp32", "bf16"):
                cmd = [sys.executable, __file__, "--worker", f"{spec}|{precision}|{n_top}", "--micro-batch",
                       str(args.micro_batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
                       "--voxels", str(args.voxels)]
                proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
                name = f"{precision}, {'all layers' if n_top == 0 else f'top {n_top} layers'}"
                if proc.returncode:
                    print(f"{spec:26s} {name}: failed\n{proc.stderr[-2000:]}", flush=True)
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                rows[(spec, precision, n_top)] = r
                print(f"{spec:26s} {name:22s}: {r['samples_per_s']:7.2f} samples/s   peak {r['peak_kind']} "
                      f"{r['peak_mb']:8.0f} MB   ({r['device']})", flush=True)
            ref, b = rows.get((spec, "fp32", tops[0])), rows.get((spec, "bf16", n_top))
            a = rows.get((spec, "fp32", n_top))
            if a and b:
                print(f"{'':26s} bf16 / fp32: speed {b['samples_per_s'] / a['samples_per_s']:.2f}x, "
                      f"peak memory {b['peak_mb'] / a['peak_mb']:.2f}x", flush=True)
            if ref and n_top != tops[0]:
                for r in (a, b):
                    if r:
                        print(f"{'':26s} {r['precision']}, top {n_top} / fp32, {tops[0] or 'all'}: speed "
                              f"{r['samples_per_s'] / ref['samples_per_s']:.2f}x", flush=True)
    print(json.dumps([dict(r) for r in rows.values()]))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
