"""Feature spaces and the TR pipeline.

Sources (low-level, semantic, speech-model layers) give features at event/frame times
(:class:`TimedFeatures`); :func:`tr_features` Lanczos-resamples them to TR stamps and caches them;
:func:`design_matrix` / :func:`response_matrix` build the encoding design (z-score, FIR delays,
``[10:-5]`` trim). :func:`resolve_source` turns any feature or model spec into a source.
"""

from __future__ import annotations

from core.errors import ConfigError
from core.features.base import FeatureSource, TimedFeatures, get_source, register
from core.features.delays import DEFAULT_DELAYS, make_delayed
from core.features.design import design_matrix, response_matrix, zscore_columns
from core.features.lanczos import lanczos_kernel, lanczos_matrix, lanczos_resample
from core.features.pipeline import tr_features

MODEL_PREFIXES = ("hf", "bundled", "random", "ckpt")  #: specs resolved by core.models
SPACE_PREFIXES = ("lowlevel", "semantic")  #: specs resolved by the feature registry


def resolve_source(spec: str, **protocol) -> FeatureSource:
    """A feature source for ``spec``.

    ``lowlevel:<name>`` / ``semantic:<name>`` resolve through :func:`get_source`; model specs
    (``hf:``, ``bundled:``, ``random:``, ``ckpt:``) through ``core.models.feature_source``, which
    takes the window ``protocol`` (``mode``, ``window_s``, ``stride_s``, …; see
    ``core.features.layers``). A protocol given for a non-model space is an error.
    """
    prefix, sep, name = str(spec).partition(":")
    if sep and name and prefix in MODEL_PREFIXES:
        from core.models import feature_source  # lazy: heavy, and written separately

        return feature_source(spec, **protocol)
    if protocol and prefix in SPACE_PREFIXES:
        raise ConfigError(f"{spec!r} is not a model: window options ({', '.join(protocol)}) apply to "
                          f"--model specs only")
    if sep and name and prefix in SPACE_PREFIXES:
        return get_source(spec)
    known = ", ".join(f"{p}:<name>" for p in SPACE_PREFIXES + MODEL_PREFIXES)
    raise ConfigError(f"unknown feature spec {spec!r}; expected one of {known}")


def source_for(spec: str, data_spec: str, mode: str | None = None,
               precision: str | None = None) -> FeatureSource:
    """The source an encode of ``spec`` on dataset ``data_spec`` uses (CLI, jobs and app alike).

    Model specs get the window protocol ``mode`` (default: ``core.features.layers.default_mode``:
    fast on the demo, paper elsewhere) and the forward ``precision`` (``fp32`` default, ``bf16``);
    feature spaces take neither.
    """
    prefix = str(spec).partition(":")[0]
    if prefix in MODEL_PREFIXES:
        from core.features.layers import default_mode

        return resolve_source(spec, mode=mode or default_mode(data_spec), precision=precision or "fp32")
    if mode or precision:
        raise ConfigError(f"--mode and --precision go with model specs, not with {spec!r}")
    return resolve_source(spec)


__all__ = [
    "DEFAULT_DELAYS", "FeatureSource", "MODEL_PREFIXES", "SPACE_PREFIXES",
    "TimedFeatures", "design_matrix", "get_source", "lanczos_kernel", "lanczos_matrix",
    "lanczos_resample", "make_delayed", "register", "resolve_source", "response_matrix", "source_for",
    "tr_features", "zscore_columns",
]
