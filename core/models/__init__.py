"""Speech models: the model-spec registry, the bundled-Whisper conversion, random test models.

``load_model(spec)`` → :class:`SpeechModel`; ``feature_source(spec, **protocol)`` → the layer
feature source (``core.features.layers``) the TR pipeline uses; ``parse_layers(source, "2,5"|"all")``.
Heavy libraries (torch, transformers) are imported on first use.
"""

from core.models.registry import (DEFAULT_MODEL, PREFIXES, SAMPLE_RATE, SpeechModel, feature_source,
                                  load_model, parse_layers, parse_spec)

__all__ = ["DEFAULT_MODEL", "PREFIXES", "SAMPLE_RATE", "SpeechModel", "feature_source", "load_model",
           "parse_layers", "parse_spec"]
