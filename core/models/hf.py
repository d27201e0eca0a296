"""Load speech models with transformers' ``from_pretrained`` (HF hub id or local folder).

Supported families (``config.model_type``): wav2vec2, hubert, wavlm, data2vec-audio (the waveform
encoders) and whisper (encoder only; the decoder is dropped after loading). The preprocessor is the
folder's ``preprocessor_config.json``; a folder without one gets the family's default extractor
(wav2vec2-style: no waveform normalisation unless the config says so; whisper: 80-bin log-mel).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import List, Optional, Tuple

from core.errors import ModelError
from core.settings import get_settings
from core.store import atomic_path, file_hash, key_hash

#: ``config.model_type`` → family name used across the project
FAMILIES = {"wav2vec2": "wav2vec2", "hubert": "hubert", "wavlm": "wavlm",
            "data2vec-audio": "data2vec-audio", "whisper": "whisper"}
WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin")


def quiet_transformers() -> None:
    """Core never prints: silence transformers' and the hub's progress bars."""
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    disable_progress_bars()


def looks_like_path(ref: str) -> bool:
    """True when ``ref`` names a folder rather than a hub id (exists, or starts like a path)."""
    return os.path.isdir(os.path.expanduser(ref)) or ref.startswith(("/", "./", "../", "~", "."))


def _offline_hint(ref: str) -> str:
    return (f"download it where the hub is reachable (`huggingface-cli download {ref} --local-dir DIR` "
            f"or `save_pretrained(DIR)`) and use hf:DIR")


def check_ref(ref: str) -> Tuple[str, bool]:
    """``(ref, local)``: a local folder ``ref`` resolved and checked (exists, has config.json), or
    the hub id unchanged. Raises :class:`ModelError` saying what to give instead."""
    if not looks_like_path(ref):
        return ref, False
    folder = Path(os.path.expanduser(ref)).resolve()
    if not folder.is_dir():
        raise ModelError(f"model folder {folder} does not exist; give hf:<folder with config.json> "
                         "or hf:<hub id>")
    if not (folder / "config.json").exists():
        raise ModelError(f"{folder} is not a model folder (no config.json); point hf: at a folder "
                         "written by save_pretrained or downloaded from the hub")
    return str(folder), True


def read_config(ref: str, local: bool) -> Tuple[object, str]:
    """``(config, family)`` of a checked ``ref`` (config.json only: no weights are read)."""
    quiet_transformers()
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(ref)
    except (OSError, ValueError, KeyError) as err:
        if local:
            raise ModelError(f"{ref}/config.json is not a transformers config ({_first_line(err)}); "
                             "re-save the model with save_pretrained") from err
        raise ModelError(f"cannot load {ref!r} from the Hugging Face hub ({_first_line(err)}); "
                         + _offline_hint(ref)) from err
    family = FAMILIES.get(getattr(config, "model_type", None))
    if family is None:
        raise ModelError(f"{ref} is a {getattr(config, 'model_type', '?')!r} model; supported families: "
                         + ", ".join(sorted(FAMILIES)))
    return config, family


def describe_hf(ref: str) -> Tuple[str, object, object, Path]:
    """``(family, config, preprocessor, weights_folder)`` of a hub id or local folder, without
    loading the weights (the cheap path of model fingerprints and layer names).

    A hub id is resolved to its local snapshot, downloading config, preprocessor and weight files
    first when they are not cached (no model is built). Raises :class:`ModelError` when the folder
    is not a model, the family is not supported, no weight file is found, or a hub id cannot be
    fetched (offline).
    """
    ref, local = check_ref(ref)
    folder = Path(ref) if local else hub_snapshot(ref)
    config, family = read_config(str(folder), local=True)
    if not weight_files(folder):
        raise ModelError(f"{folder} has no weight files ({' or '.join(WEIGHT_GLOBS)}); save the model "
                         "there with save_pretrained")
    return family, config, _load_preprocessor(str(folder), family, config), folder


def hub_snapshot(ref: str) -> Path:
    """Local snapshot folder of hub id ``ref``: config, preprocessor and weight files, downloaded
    (safetensors, else ``pytorch_model*.bin``) when not in the hub cache yet."""
    quiet_transformers()
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(ref, local_files_only=True))
        if weight_files(folder) and (folder / "config.json").exists():
            return folder
    except Exception:  # noqa: BLE001 - not (fully) cached: fetch below
        pass
    meta = ["config.json", "preprocessor_config.json"]
    try:
        folder = Path(snapshot_download(ref, allow_patterns=meta + ["model*.safetensors",
                                                                   "model.safetensors.index.json"]))
        if not weight_files(folder):
            folder = Path(snapshot_download(ref, allow_patterns=meta + ["pytorch_model*.bin",
                                                                       "pytorch_model.bin.index.json"]))
    except Exception as err:  # noqa: BLE001 - offline, unknown id, network: one actionable message
        raise ModelError(f"cannot load {ref!r} from the Hugging Face hub ({_first_line(err)}); "
                         + _offline_hint(ref)) from err
    return folder


def load_hf(ref: str) -> Tuple[object, str, object, Optional[Path]]:
    """``(module, family, preprocessor, weights_folder)`` for a hub id or local folder ``ref``.

    ``module`` is a fresh module in eval mode on CPU (the caller moves it): a ``Wav2Vec2Model``-like
    model, or a ``WhisperEncoder`` for Whisper. ``weights_folder`` is where the weight files live
    (None when they cannot be located, e.g. a hub cache layout this version does not know).
    Raises :class:`ModelError` with what to do when the folder is not a model, the family is not
    supported, or a hub id cannot be fetched (offline).
    """
    ref, local = check_ref(ref)
    config, family = read_config(ref, local)
    try:
        module = _load_module(ref, family)
        preprocessor = _load_preprocessor(ref, family, config)
    except OSError as err:
        where = "" if local else "; " + _offline_hint(ref)
        raise ModelError(f"cannot load the weights of {ref} ({_first_line(err)}){where}") from err
    return module.eval(), family, preprocessor, (Path(ref) if local else _hub_folder(ref))


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _load_module(ref: str, family: str):
    if family == "whisper":
        from transformers import WhisperModel

        return WhisperModel.from_pretrained(ref).get_encoder()
    from transformers import AutoModel

    return AutoModel.from_pretrained(ref)


def _load_preprocessor(ref: str, family: str, config):
    from transformers import AutoFeatureExtractor

    try:
        return AutoFeatureExtractor.from_pretrained(ref)
    except OSError:
        if not looks_like_path(ref):
            raise
    return default_preprocessor(family, config)


def default_preprocessor(family: str, config, do_normalize: bool = False):
    """The family's feature extractor with default settings (16 kHz)."""
    if family == "whisper":
        from transformers import WhisperFeatureExtractor

        return WhisperFeatureExtractor(feature_size=config.num_mel_bins)
    from transformers import Wav2Vec2FeatureExtractor

    return Wav2Vec2FeatureExtractor(do_normalize=do_normalize, return_attention_mask=False)


def _hub_folder(ref: str) -> Optional[Path]:
    """The local snapshot folder of hub id ``ref`` (after a successful load), or None."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(ref, local_files_only=True))
    except Exception:  # noqa: BLE001 - any hub-cache lookup failure only means "hash tensors instead"
        return None


def weight_files(folder: Optional[Path]) -> List[Path]:
    """Weight files of a model folder (safetensors preferred over .bin), sorted by name."""
    if folder is None:
        return []
    for pattern in WEIGHT_GLOBS:
        files = sorted(p for p in folder.glob(pattern) if p.is_file())
        if files:
            return files
    return []


def cached_file_hash(path: Path) -> str:
    """sha1 of a weight file, remembered on disk per (path, size, mtime) under ``models_root``."""
    path = Path(path).resolve()
    st = path.stat()
    key = key_hash(str(path), st.st_size, st.st_mtime_ns)
    memo = get_settings().models_root / "weight-hashes" / f"{key}.txt"
    if memo.exists():
        return memo.read_text().strip()
    digest = file_hash(path)
    with atomic_path(memo) as tmp:
        tmp.write_text(digest)
    return digest


def state_dict_hash(module) -> str:
    """sha1 (16 hex) over a module's tensors (name, dtype, shape, bytes), in name order."""
    import torch

    h = hashlib.sha1()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
