"""Feature sources: anything that turns a story into features at event or frame times.

A source (a low-level space, a semantic space, or a speech model's layers) implements
:class:`FeatureSource`. The TR pipeline (``core.features.pipeline``) resamples each layer's
:class:`TimedFeatures` to the story's TR stamps with a Lanczos filter, caches the result, and the
encoding design (z-score, delays, trim) is built from there. Speech models plug in as one more
source (``core.models``), so ``--model MSPEC --layers …`` and ``--features FSPEC`` share one path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Protocol, Sequence

import numpy as np

from core.errors import ConfigError
from core.progress import ProgressFn


@dataclass(frozen=True)
class TimedFeatures:
    """Features at arbitrary times of one story.

    times : ``(n_events,)`` float64 seconds on the audio time base.
    values : ``(n_events, n_features)`` float32.
    """

    times: np.ndarray
    values: np.ndarray

    def __post_init__(self):
        if self.values.ndim != 2 or self.values.shape[0] != self.times.shape[0]:
            raise ValueError(f"times {self.times.shape} and values {self.values.shape} disagree")


class FeatureSource(Protocol):
    """What the TR pipeline needs from a feature source."""

    spec: str  #: e.g. "lowlevel:powspec", "semantic:minilm", "bundled:whisper-tiny.en"

    def layers(self) -> list:
        """Names of the layers this source produces (one for non-model spaces)."""

    def fingerprint(self) -> str:
        """Hash of everything that determines the features (weights, parameters, code tag)."""

    def compute(self, dataset, story: str, layers: Sequence[str],
                progress: ProgressFn = None) -> Dict[str, TimedFeatures]:
        """Features of ``story`` for each requested layer."""


_FACTORIES: Dict[str, Callable[[str], FeatureSource]] = {}


def register(prefix: str):
    """Decorator: register a factory ``f(name) -> FeatureSource`` for specs ``prefix:<name>``."""

    def deco(factory):
        _FACTORIES[prefix] = factory
        return factory

    return deco


def get_source(spec: str) -> FeatureSource:
    """Resolve a feature spec (``lowlevel:<name>``, ``semantic:<name>``) to a source.

    Model specs (``hf:``, ``bundled:``, ``random:``, ``ckpt:``) resolve through
    :func:`core.models.feature_source`.
    """
    import core.features.lowlevel  # noqa: F401  (registers lowlevel:)
    import core.features.semantic  # noqa: F401  (registers semantic:)

    prefix, _, name = spec.partition(":")
    if prefix not in _FACTORIES or not name:
        known = ", ".join(f"{p}:<name>" for p in sorted(_FACTORIES))
        raise ConfigError(f"unknown feature spec {spec!r}; expected one of {known}")
    return _FACTORIES[prefix](name)
