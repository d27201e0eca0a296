"""The ``preference`` pipeline: per-layer semantic-vs-phonetic preference of a speech model.

``python -m core preference --data SPEC --model MSPEC [--layers …] --out DIR`` →
``DIR/summary.json`` {"model", "data", "layers": {L: {"semantic_r", "phonetic_r", "preference",
"ci": [lo, hi], …}}, "provenance"} and ``DIR/boot_<layer>.npy`` (the bootstrap distribution of the
preference). Definition: :mod:`core.analysis.preference` (paper evaluation 4, defined by this
project). Features come through the cached TR pipeline (:func:`core.features.tr_features`); the
whole result is cached under ``<cache>/preference/<key>/`` with a key hashing the dataset, model and
target fingerprints, layers, stories and every parameter, and copied to ``DIR``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from core.analysis.preference import CI_UNITS, CODE_TAG, DEFAULT_ALPHAS, layer_preference
from core.errors import ConfigError, DataError
from core.progress import ProgressFn, report, sub_progress
from core.store import artifact_path, atomic_dir, key_hash, save_json

SEMANTIC_SPEC = "semantic:minilm"
PHONETIC_SPEC = "lowlevel:phonemes"


def _in_audio_rows(dataset, story: str) -> np.ndarray:
    """Mask of the story's TR stamps inside its audio (features outside are Lanczos tails/zeros)."""
    stamps = np.asarray(dataset.tr_stamps(story), dtype=np.float64)
    duration = len(dataset.audio(story)) / 16000.0
    return (stamps >= 0.0) & (stamps <= duration)


def preference(dataset, model_source, layers: Optional[Sequence[str]], out_dir,
               semantic: str = SEMANTIC_SPEC, phonetic: str = PHONETIC_SPEC,
               stories: Optional[Sequence[str]] = None, alphas=DEFAULT_ALPHAS, ci_unit: str = "block",
               block_len: int = 20, n_boot: int = 1000, seed: int = 0, mode: Optional[str] = None,
               progress: ProgressFn = None) -> dict:
    """Semantic-vs-phonetic preference of each layer; writes ``out_dir`` and returns the summary.

    Parameters
    ----------
    dataset : a :class:`core.data.base.Dataset` or a data spec (``demo``, ``ds003020:<path>``).
    model_source : a model spec (``random:wav2vec2-tiny``, ``bundled:whisper-tiny.en``, ``ckpt:…``)
        or a feature source (anything with ``spec``, ``layers()``, ``fingerprint()``, ``compute``).
    layers : layer names (``None``: all of the source's layers).
    out_dir : folder for ``summary.json`` and ``boot_<layer>.npy`` (replaced atomically).
    semantic, phonetic : target feature spaces (defaults ``semantic:minilm``, ``lowlevel:phonemes``).
    stories : stories to use (default: all of the dataset's stories; at least 2).
    alphas, ci_unit, block_len, n_boot, seed : see :func:`core.analysis.preference.layer_preference`.
    mode : feature window mode for model specs (default: fast on the demo, paper elsewhere).
    progress : ``(fraction, message)`` callback.
    """
    from core.data import load_dataset
    from core.features import resolve_source, source_for, tr_features

    if ci_unit not in CI_UNITS:
        raise ConfigError(f"ci_unit {ci_unit!r} is not one of {', '.join(CI_UNITS)}")
    if isinstance(dataset, str):
        dataset = load_dataset(dataset, progress=sub_progress(progress, 0.0, 0.05))
    source = source_for(model_source, dataset.spec, mode) if isinstance(model_source, str) else model_source
    layers = list(source.layers()) if layers is None else list(layers)
    stories = list(dataset.stories) if stories is None else list(stories)
    if len(stories) < 2:
        raise ConfigError(f"preference needs at least 2 stories (held-out folds), got {stories}")
    sem_src, phon_src = resolve_source(semantic), resolve_source(phonetic)
    params = {"alphas": np.asarray(alphas, float).tolist(), "ci_unit": ci_unit, "block_len": int(block_len),
              "n_boot": int(n_boot), "seed": int(seed), "semantic": semantic, "phonetic": phonetic}
    key = key_hash(CODE_TAG, dataset.fingerprint(), source.spec, source.fingerprint(),
                   sem_src.fingerprint(), phon_src.fingerprint(), layers, stories, params)
    cached = artifact_path("preference", key)
    if not (cached / "summary.json").is_file():
        feats = tr_features(dataset, source, layers, stories, sub_progress(progress, 0.05, 0.6))
        sem = tr_features(dataset, sem_src, None, stories, sub_progress(progress, 0.6, 0.7))[sem_src.layers()[0]]
        phon = tr_features(dataset, phon_src, None, stories, sub_progress(progress, 0.7, 0.75))[phon_src.layers()[0]]
        rows = {s: _in_audio_rows(dataset, s) for s in stories}
        out_layers, boots = {}, {}
        for i, layer in enumerate(layers):
            res = layer_preference([feats[layer][s][rows[s]] for s in stories],
                                   [sem[s][rows[s]] for s in stories], [phon[s][rows[s]] for s in stories],
                                   alphas=alphas, ci_unit=ci_unit, block_len=block_len, n_boot=n_boot,
                                   seed=seed, return_boot=True)
            boots[layer] = res.pop("boot")
            out_layers[layer] = res
            report(progress, 0.75 + 0.25 * (i + 1) / len(layers), f"preference: {layer}")
        summary = {"model": source.spec, "data": dataset.spec, "layers": out_layers,
                   "provenance": {"code": CODE_TAG, "key": key, "dataset_fingerprint": dataset.fingerprint(),
                                  "model_fingerprint": source.fingerprint(), "stories": stories,
                                  "definition": "preference = mean r(semantic) − mean r(phonetic); "
                                                "leave-one-story-out bootstrap_ridge, see "
                                                "core/analysis/preference.py", **params}}
        with atomic_dir(cached) as tmp:
            save_json(tmp / "summary.json", summary)
            for layer, b in boots.items():
                np.save(tmp / f"boot_{layer}.npy", b.astype(np.float32))
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        for f in cached.iterdir():
            shutil.copy2(f, tmp / f.name)
    report(progress, 1.0, "preference: done")
    return json.loads((out_dir / "summary.json").read_text())


def _cmd(args) -> int:
    from core.cli import _tqdm_progress
    from core.data import load_dataset
    from core.features import source_for
    from core.models.registry import parse_layers

    with _tqdm_progress("preference", not args.quiet) as progress:
        ds = load_dataset(args.data, progress=progress)
        source = source_for(args.model, ds.spec, args.mode)
        layers = parse_layers(source, args.layers)
        summary = preference(ds, source, layers, Path(args.out), n_boot=args.n_boot, seed=args.seed,
                             ci_unit=args.ci_unit, progress=progress)
    print(json.dumps(summary))
    return 0


def add_command(sub) -> None:
    """``python -m core preference --data SPEC --model MSPEC [--layers …] --out DIR``."""
    p = sub.add_parser("preference", help="semantic-vs-phonetic preference per layer (paper eval 4)")
    p.add_argument("--data", required=True, help="data spec: demo | ds003020:<path>")
    p.add_argument("--model", required=True, help="model spec (random:…, bundled:…, hf:…, ckpt:…)")
    p.add_argument("--layers", default="all", help="layers: all | 2,5 | layer_2,… (default all)")
    p.add_argument("--out", required=True, help="output folder (summary.json, boot_<layer>.npy)")
    p.add_argument("--mode", default=None, choices=("paper", "fast"), help="feature window mode")
    p.add_argument("--ci-unit", default="block", choices=CI_UNITS, help="bootstrap unit (default block)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the ridge CV and bootstrap")
    p.set_defaults(func=_cmd)


__all__ = ["preference", "add_command", "SEMANTIC_SPEC", "PHONETIC_SPEC", "DataError"]
