"""Config-only, seeded, randomly initialised speech models (``random:<family>[-tiny][@seed]``).

For tests and for users without hub access. ``random:wav2vec2`` / ``random:hubert`` use the
transformers default configs (the base-size architectures); ``random:whisper`` the default
``WhisperConfig``. ``-tiny`` variants keep the real front ends (wav2vec2: the 7-layer CNN with total
stride 320, 50 frames/s; Whisper: 80 mel bins, 1500 positions = 30 s) but use 2 transformer layers of
hidden size 32, so a 16 s window runs in milliseconds. The seed (default 0) fixes the weights.
"""

from __future__ import annotations

from typing import Tuple

from core.errors import ModelError

RANDOM_FAMILIES = ("wav2vec2", "hubert", "whisper")
DEFAULT_SEED = 0
TINY_HIDDEN = 32
TINY_LAYERS = 2


def parse_random(name: str) -> Tuple[str, bool, int]:
    """``"whisper-tiny@3"`` → ``("whisper", True, 3)``; errors list the valid names."""
    base, _, seed_txt = name.partition("@")
    tiny = base.endswith("-tiny")
    family = base[:-len("-tiny")] if tiny else base
    valid = ", ".join(f"random:{f}[-tiny]" for f in RANDOM_FAMILIES)
    if family not in RANDOM_FAMILIES:
        raise ModelError(f"unknown random model {name!r}; valid: {valid} (optionally @<seed>)")
    try:
        seed = int(seed_txt) if seed_txt else DEFAULT_SEED
    except ValueError as err:
        raise ModelError(f"random model seed {seed_txt!r} is not an integer (e.g. random:{base}@1)") from err
    return family, tiny, seed


def random_config(family: str, tiny: bool):
    """The transformers config of a random model (see the module docstring for the sizes)."""
    from transformers import HubertConfig, Wav2Vec2Config, WhisperConfig

    if family == "whisper":
        if not tiny:
            return WhisperConfig()
        return WhisperConfig(d_model=TINY_HIDDEN, encoder_layers=TINY_LAYERS, decoder_layers=1,
                             encoder_attention_heads=2, decoder_attention_heads=2,
                             encoder_ffn_dim=2 * TINY_HIDDEN, decoder_ffn_dim=2 * TINY_HIDDEN,
                             vocab_size=64, max_target_positions=16, num_mel_bins=80,
                             max_source_positions=1500, pad_token_id=0, bos_token_id=1,
                             eos_token_id=2, decoder_start_token_id=3)
    cls = Wav2Vec2Config if family == "wav2vec2" else HubertConfig
    if not tiny:
        return cls()
    return cls(hidden_size=TINY_HIDDEN, num_hidden_layers=TINY_LAYERS, num_attention_heads=2,
               intermediate_size=2 * TINY_HIDDEN, conv_dim=(TINY_HIDDEN,) * 7,
               num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)


def build_random(name: str):
    """``(module, family, preprocessor)`` of ``random:<name>``; same name → same weights.

    wav2vec2's preprocessor normalises each window (as ``facebook/wav2vec2-base``), HuBERT's does
    not (as ``facebook/hubert-base-ls960``).
    """
    family, tiny, seed = parse_random(name)  # validate before the heavy imports
    import torch
    from transformers import HubertModel, Wav2Vec2Model, WhisperModel

    from core.models.hf import default_preprocessor

    config = random_config(family, tiny)
    cls = {"wav2vec2": Wav2Vec2Model, "hubert": HubertModel, "whisper": WhisperModel}[family]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
    module = model.get_encoder() if family == "whisper" else model
    pre = default_preprocessor(family, config, do_normalize=(family == "wav2vec2"))
    return module.eval(), family, pre
