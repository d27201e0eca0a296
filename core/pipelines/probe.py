"""The ``probe`` pipeline: downstream linear probes per layer (paper evaluation 3).

``python -m core probe --task TASK --model MSPEC [--layers …] --out DIR`` with TASK =
``demo:word-identity`` | ``demo:phonemes`` | ``demo:sentence-type`` | ``folder:<path>`` →
``DIR/summary.json`` {"task", "model", "multilabel", "classes", "layers": {L: {"f1", "f1_macro",
"f1_shuffled", "f1_macro_shuffled", "n_train", "n_test", "n_classes"}}, "provenance"} and
``DIR/features_<layer>.npy`` (the time-averaged clip features). Task formats:
:mod:`core.data.probe_tasks`; probes: :mod:`core.analysis.probes`. Cached: clip features under
``<cache>/probe_features/`` (task key, model fingerprint, layer, batching), the whole result under
``<cache>/probe/<key>/``, copied to ``DIR``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from core.analysis.probes import CODE_TAG, EPOCHS, LR, clip_features, probe_scores
from core.progress import ProgressFn, report, sub_progress
from core.store import artifact_path, atomic_dir, cached_arrays, key_hash, save_json


def probe(task, model_spec: str, layers: Optional[Sequence[str]], out_dir, epochs: int = EPOCHS,
          lr: float = LR, seed: int = 0, batch_size: int = 16, dataset=None,
          progress: ProgressFn = None) -> dict:
    """Linear probes of ``model_spec``'s ``layers`` on ``task``; writes ``out_dir``, returns the summary.

    Parameters
    ----------
    task : a task spec (``demo:…``, ``folder:<path>``) or a :class:`core.data.probe_tasks.ProbeTask`.
    model_spec : model spec (``random:wav2vec2-tiny``, ``bundled:whisper-tiny.en``, ``ckpt:…``).
    layers : layer names (``None``: all).
    out_dir : output folder (replaced atomically).
    epochs, lr, seed : probe training (released: full-batch Adam, lr 1e-3, 50–100 epochs).
    batch_size : clips per forward pass.
    dataset : the demo dataset for ``demo:`` tasks (default ``load_dataset("demo")``).
    """
    from core.data.probe_tasks import ProbeTask, load_task
    from core.models import load_model, model_fingerprint

    if not isinstance(task, ProbeTask):
        task = load_task(task, dataset=dataset, seed=seed)
    fp = model_fingerprint(model_spec)
    model = load_model(model_spec)
    layers = list(model.layer_names) if layers is None else list(layers)
    bad = [layer for layer in layers if layer not in model.layer_names]
    if bad or not layers:
        from core.errors import ConfigError

        raise ConfigError(f"{model_spec} has no layer(s) {bad or '(none asked)'}; valid: "
                          f"{model.layer_names[0]}..{model.layer_names[-1]}")
    params = {"epochs": int(epochs), "lr": float(lr), "seed": int(seed)}
    key = key_hash(CODE_TAG, task.key, fp, layers, params, int(batch_size))
    cached = artifact_path("probe", key)
    if not (cached / "summary.json").is_file():
        feats = {}
        todo = [layer for layer in layers
                if not artifact_path("probe_features", key_hash(CODE_TAG, task.key, fp, layer, int(batch_size)),
                                     ".npz").exists()]
        fresh = clip_features(model, task.clips, todo, batch_size, sub_progress(progress, 0.0, 0.8)) if todo else {}
        for layer in layers:
            fkey = key_hash(CODE_TAG, task.key, fp, layer, int(batch_size))
            feats[layer] = cached_arrays("probe_features", fkey, lambda: {"X": fresh[layer]})["X"]
        y = task.targets()
        out_layers = {}
        for i, layer in enumerate(layers):
            out_layers[layer] = probe_scores(feats[layer], y, task.is_test, task.multilabel, epochs, lr, seed)
            report(progress, 0.8 + 0.2 * (i + 1) / len(layers), f"probe: {layer}")
        summary = {"task": task.name, "model": model_spec, "multilabel": task.multilabel,
                   "classes": task.classes, "n_clips": len(task.clips), "layers": out_layers,
                   "provenance": {"code": CODE_TAG, "key": key, "task_key": task.key, "model_fingerprint": fp,
                                  "batch_size": int(batch_size), "optimiser": "full-batch Adam",
                                  "split": "labels.csv split column, else seeded 80/20", **params}}
        with atomic_dir(cached) as tmp:
            save_json(tmp / "summary.json", summary)
            for layer in layers:
                np.save(tmp / f"features_{layer}.npy", feats[layer])
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        for f in cached.iterdir():
            shutil.copy2(f, tmp / f.name)
    report(progress, 1.0, "probe: done")
    return json.loads((out_dir / "summary.json").read_text())


def _cmd(args) -> int:
    from core.cli import _tqdm_progress
    from core.features import resolve_source
    from core.models.registry import parse_layers

    with _tqdm_progress("probe", not args.quiet) as progress:
        layers = parse_layers(resolve_source(args.model), args.layers)
        summary = probe(args.task, args.model, layers, Path(args.out), epochs=args.epochs, seed=args.seed,
                        batch_size=args.batch_size, progress=progress)
    print(json.dumps(summary))
    return 0


def add_command(sub) -> None:
    """``python -m core probe --task TASK --model MSPEC [--layers …] --out DIR``."""
    p = sub.add_parser("probe", help="downstream linear probes per layer (paper eval 3)")
    p.add_argument("--task", required=True,
                   help="demo:word-identity | demo:phonemes | demo:sentence-type | folder:<path>")
    p.add_argument("--model", required=True, help="model spec (random:…, bundled:…, hf:…, ckpt:…)")
    p.add_argument("--layers", default="all", help="layers: all | 2,5 | layer_2,… (default all)")
    p.add_argument("--out", required=True, help="output folder (summary.json, features_<layer>.npy)")
    p.add_argument("--epochs", type=int, default=EPOCHS, help=f"probe epochs (default {EPOCHS})")
    p.add_argument("--batch-size", type=int, default=16, help="clips per forward pass")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, init and shuffled control")
    p.set_defaults(func=_cmd)


__all__ = ["probe", "add_command"]
