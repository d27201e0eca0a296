"""``FeatureSet``: features of one source at TR resolution, per layer and story, before delays.

The stage between a dataset and an encoding: made from a registered feature source
(:meth:`FeatureSet.from_source`, through the cached TR pipeline) or from any arrays
(:meth:`FeatureSet.from_arrays`: residualised features, tuned-model features, concatenated spaces),
and turned into delayed, z-scored designs by :meth:`FeatureSet.designs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from core.errors import ConfigError, DataError
from core.progress import ProgressFn


@dataclass
class FeatureSet:
    """Features per layer and story.

    spec : what made them (a feature / model spec, or a name for derived features).
    layers : layer → story → ``(n_stamps, n_features)`` float32 at all ``R − 5`` TR stamps of the
        story (before the ``[10:-5]`` trim and before delays).
    provenance : what determines them (fingerprints, window protocol, derivation).
    """

    spec: str
    layers: Dict[str, Dict[str, np.ndarray]]
    provenance: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.layers:
            raise DataError(f"feature set {self.spec!r} has no layers")
        for layer, stories in self.layers.items():
            widths = {np.shape(x)[1] if np.ndim(x) == 2 else None for x in stories.values()}
            if None in widths or len(widths) > 1:
                raise DataError(f"feature set {self.spec!r}, layer {layer!r}: every story must be "
                                f"(n_stamps, n_features) with one n_features; got "
                                f"{ {s: np.shape(x) for s, x in stories.items()} }")

    @classmethod
    def from_source(cls, dataset, source, layers: Optional[Sequence[str]] = None,
                    stories: Optional[Sequence[str]] = None, progress: ProgressFn = None) -> "FeatureSet":
        """Features of ``source`` (``core.features.resolve_source``) for ``stories`` of ``dataset``
        through the cached TR pipeline (:func:`core.features.pipeline.tr_features`)."""
        from core.features.pipeline import tr_features

        feats = tr_features(dataset, source, layers, stories=stories, progress=progress)
        prov = {"features": source.spec, "source_fingerprint": source.fingerprint()}
        if hasattr(source, "protocol"):
            prov["feature_protocol"] = source.protocol()
        return cls(spec=source.spec, layers=feats, provenance=prov)

    @classmethod
    def from_arrays(cls, spec: str, arrays: Mapping[str, Mapping[str, np.ndarray]],
                    provenance: Optional[dict] = None) -> "FeatureSet":
        """Wrap ``{layer: {story: (n_stamps, n_features)}}`` arrays (cast to float32)."""
        layers = {str(layer): {str(s): np.asarray(x, dtype=np.float32) for s, x in stories.items()}
                  for layer, stories in arrays.items()}
        return cls(spec=spec, layers=layers, provenance=dict(provenance or {}))

    def layer_names(self) -> list:
        return list(self.layers)

    def stories(self, layer: Optional[str] = None) -> list:
        """Stories present (in the first layer, or ``layer``)."""
        return list(self.layers[layer or next(iter(self.layers))])

    def n_features(self, layer: str) -> int:
        return int(next(iter(self.layers[layer].values())).shape[1])

    def designs(self, train: Sequence[str], test: Sequence[str], params,
                layers: Optional[Sequence[str]] = None, dataset=None) -> dict:
        """``{layer: (x_train, x_test)}`` delayed, z-scored designs under ``params``
        (:class:`core.encoding.params.EncodeParams`: delays, design order, test start).

        ``x_train``: ``(Σ (R − 20), n_features · n_delays)``; ``x_test`` starts at response row
        ``params.test_start`` of the test story. float32.
        """
        from core.data import timing
        from core.features.design import design_matrix

        layers = list(layers) if layers else self.layer_names()
        unknown = [x for x in layers if x not in self.layers]
        if unknown:
            raise ConfigError(f"feature set {self.spec!r} has no layer(s) {unknown}; "
                              f"available: {', '.join(self.layers)}")
        out = {}
        for layer in layers:
            feats = self.layers[layer]
            x_train = design_matrix(feats, train, params.delays, dataset, order=params.order)
            x_test = design_matrix(feats, test, params.delays, dataset, order=params.order,
                                   trim_start=timing.TRIM_START + params.test_start)
            out[layer] = (x_train, x_test)
        return out
