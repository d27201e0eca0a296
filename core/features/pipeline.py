"""The TR pipeline: any feature source → per-story features at the TR stamps, cached on disk.

``tr_features`` is the one entry point the encode command, the analyses and the speech-model sources
go through: it asks the source for each story's features at event/frame times, Lanczos-resamples
every layer to ``dataset.tr_stamps(story)`` (all ``R - 5`` stamps, before the ``[10:-5]`` trim;
paper: window 3, cutoff 1/TR, see ``core.features.lanczos``), and caches each (story, layer) result
under ``<cache>/tr_features/``. The key hashes the dataset fingerprint, the source fingerprint, the
story, the layer, the TR stamps, the resampling parameters and a code-version tag.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from core.errors import ConfigError, DataError
from core.features.base import FeatureSource, TimedFeatures
from core.features.lanczos import LANCZOS_WINDOW, lanczos_resample
from core.progress import ProgressFn, report, sub_progress
from core.store import artifact_path, atomic_path, key_hash

CODE_TAG = "tr-features-v1"  #: bump when the resampling's meaning changes
CACHE_KIND = "tr_features"


def tr_features(dataset, source: FeatureSource, layers: Optional[Sequence[str]] = None,
                stories: Optional[Sequence[str]] = None, progress: ProgressFn = None,
                window: float = LANCZOS_WINDOW, cutoff_mult: float = 1.0,
                ) -> Dict[str, Dict[str, np.ndarray]]:
    """Features of ``source`` at the TR stamps of each story, per layer.

    Parameters
    ----------
    dataset : :class:`core.data.base.Dataset`.
    source : a :class:`core.features.base.FeatureSource` (low-level, semantic or model).
    layers : layer names (default: all of ``source.layers()``).
    stories : stories (default: all of ``dataset.stories``), kept in this order.
    progress : ``progress(fraction, message)`` callback, advanced per story.
    window, cutoff_mult : Lanczos parameters (paper: 3 and 1, i.e. cutoff = 1/TR).

    Returns
    -------
    ``{layer: {story: (R - 5, n_features) float32}}``.
    """
    available = list(source.layers())
    layers = available if layers is None else list(layers)
    unknown = [layer for layer in layers if layer not in available]
    if unknown or not layers:
        raise ConfigError(f"{source.spec} has no layer(s) {unknown or '(none asked)'}; "
                          f"available: {', '.join(map(str, available))}")
    stories = list(dataset.stories) if stories is None else list(stories)
    missing_stories = [s for s in stories if s not in dataset.stories]
    if missing_stories:
        raise ConfigError(f"stories {missing_stories} are not in dataset {dataset.spec!r}; "
                          f"run `python -m core datasets describe` to list them")

    parts = (CODE_TAG, dataset.fingerprint(), source.spec, source.fingerprint(),
             {"window": float(window), "cutoff_mult": float(cutoff_mult)})
    out: Dict[str, Dict[str, np.ndarray]] = {layer: {} for layer in layers}
    n = len(stories)
    for i, story in enumerate(stories):
        stamps = np.asarray(dataset.tr_stamps(story), dtype=np.float64)
        paths = {layer: artifact_path(CACHE_KIND, key_hash(*parts, story, layer, stamps.tolist()), ".npy")
                 for layer in layers}
        todo = [layer for layer in layers if not paths[layer].exists()]
        for layer in layers:
            if layer not in todo:
                out[layer][story] = np.load(paths[layer])
        if todo:
            step = sub_progress(progress, i / n, (i + 1) / n)
            feats = source.compute(dataset, story, todo, step)
            for layer in todo:
                tf = feats.get(layer) if isinstance(feats, Mapping) else None
                if not isinstance(tf, TimedFeatures):
                    raise DataError(f"{source.spec} returned no TimedFeatures for layer {layer!r} "
                                    f"of story {story!r}")
                x = lanczos_resample(tf.values, tf.times, stamps, window, cutoff_mult).astype(np.float32)
                with atomic_path(paths[layer]) as tmp, open(tmp, "wb") as f:
                    np.save(f, x)
                out[layer][story] = x
        report(progress, (i + 1) / n, f"{source.spec}: {story} ({i + 1}/{n})")
    return out
