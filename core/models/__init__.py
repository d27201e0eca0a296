"""Speech models: the model-spec registry, the bundled-Whisper conversion, random test models.

``load_model(spec)`` → a frozen, cached :class:`SpeechModel` (feature extraction);
``load_trainable(spec)`` → a fresh, trainable copy (tuning); ``model_info(spec)`` /
``model_fingerprint(spec)`` → family, layers, weights hash and fingerprint without building the model
(cache and job keys); ``feature_source(spec, **protocol)`` → the layer feature source
(``core.features.layers``) the TR pipeline uses; ``parse_layers(source, "2,5"|"all")``.
Heavy libraries (torch, transformers) are imported on first use.
"""

from core.models.registry import (DEFAULT_MODEL, PREFIXES, SAMPLE_RATE, ModelInfo, SpeechModel,
                                  feature_source, load_model, load_trainable, model_fingerprint,
                                  model_info, parse_layers, parse_spec)

__all__ = ["DEFAULT_MODEL", "PREFIXES", "SAMPLE_RATE", "ModelInfo", "SpeechModel", "feature_source",
           "load_model", "load_trainable", "model_fingerprint", "model_info", "parse_layers", "parse_spec"]
