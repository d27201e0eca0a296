"""The brain-tuning model: speech backbone → mean-pool over time → linear voxel head.

paper-method.md, "Model and loss": the last hidden state is mean-pooled over time (Whisper: over the
frames of real, unpadded audio only) and mapped by ``Linear(hidden, n_voxels)`` to the response of
one TR. Frozen (paper): the wav2vec2 / HuBERT CNN feature encoder; Whisper's ``conv1``, ``conv2``
and ``embed_positions`` (encoder only, the decoder is unused — :func:`core.models.load_trainable`
already gives the encoder alone). Everything else trains.

Input: a batch of raw 16 kHz waveforms ``(B, n_samples)`` (tuning: ``n_samples = 160000``), with
optional real lengths ``(B,)`` when some are right-padded. Preprocessing follows the model's own
feature extractor:

- wav2vec2-style: per-example zero-mean / unit-variance over the real samples (variance ddof 0,
  ``+1e-7``, as transformers' ``Wav2Vec2FeatureExtractor``) when its ``do_normalize`` is set, done
  in torch (device- and autograd-friendly); padding stays 0 and no attention mask is passed
  (wav2vec2-base/HuBERT-base use none), so pooling over real frames is what excludes the padding.
  In train mode transformers applies SpecAugment time masking when the config asks for it
  (``mask_time_prob``, 0.05 for wav2vec2-base), as the released code's models did.
- Whisper: log-mel by the feature extractor on CPU (the waveform is data, not learned), then the
  encoder on the clip's **own** frames with its positional table sliced
  (``core.features.layers.whisper_hidden_states``; ``whisper_input="window"``, what the demo probe
  used: 10 s → 500 frames) or on 30 s zero-padded input (``"pad30"``, what transformers' encoder
  itself accepts); either way only the real frames ``(n // hop - 1) // 2 + 1`` enter the mean.
"""

from __future__ import annotations

import re
from typing import List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from core.errors import ConfigError

HEAD_INITS = ("zeros", "random", "ridge")  #: paper/released code: zeros
WHISPER_INPUTS = ("window", "pad30")
WAV2VEC2_LIKE = ("wav2vec2", "hubert", "wavlm", "data2vec-audio")
WHISPER_FROZEN = ("conv1", "conv2", "embed_positions")  #: paper-method.md "Model and loss"
LAYER_INDEX = re.compile(r"(?:^|\.)layers\.(\d+)\.")  #: transformer layer i in a parameter name


def hidden_size(module) -> int:
    """Width of the backbone's last hidden state (``d_model`` for Whisper)."""
    cfg = module.config
    return int(getattr(cfg, "d_model", None) or cfg.hidden_size)


def freeze_front_end(module, family: str) -> List[str]:
    """Set ``requires_grad=False`` on the paper's frozen parts; returns their parameter names.

    wav2vec2-style: ``feature_extractor.*`` (the CNN feature encoder); Whisper: ``conv1``, ``conv2``,
    ``embed_positions``. Unknown family → :class:`ConfigError`.
    """
    if family in WAV2VEC2_LIKE:
        prefixes = ("feature_extractor.",)
    elif family == "whisper":
        prefixes = tuple(p + "." for p in WHISPER_FROZEN)
    else:
        raise ConfigError(f"brain-tuning does not know which front end of a {family!r} model to freeze; "
                          f"supported: {', '.join(WAV2VEC2_LIKE + ('whisper',))}")
    frozen = []
    for name, p in module.named_parameters():
        if name.startswith(prefixes):
            p.requires_grad_(False)
            frozen.append(name)
    return frozen


def freeze_lower_layers(module, family: str, train_layers: int) -> List[str]:
    """Keep only the top ``train_layers`` transformer layers of ``module`` trainable (0 = all train,
    the paper); returns the names of the parameters it froze.

    Frozen: every parameter of ``layers.<i>.`` with ``i < n_layers - train_layers`` and what feeds
    them (wav2vec2-style: ``feature_projection``, ``pos_conv_embed``, ``masked_spec_embed`` and, unless
    ``do_stable_layer_norm``, the encoder ``layer_norm`` applied before the layers; Whisper's input
    side is already frozen by :func:`freeze_front_end`). Nothing then needs a gradient below the
    first trained layer, so autograd neither stores those activations nor runs their backward pass.
    Works on LoRA-wrapped backbones (adapters of frozen layers freeze too). A project option, not
    the paper's (which trains every layer): the demo preset uses it to fit minutes on a CPU.
    """
    n = int(train_layers)
    if n < 0:
        raise ConfigError(f"train_layers={train_layers!r} must be ≥ 0 (0 = every layer trains)")
    params = [(name, p, LAYER_INDEX.search(name)) for name, p in module.named_parameters()]
    idx = [int(m.group(1)) for _, _, m in params if m]
    if not idx:
        raise ConfigError(f"train_layers={n}: the {family!r} backbone has no 'layers.<i>.' parameters to count")
    n_layers = max(idx) + 1
    if n == 0 or n >= n_layers:
        return []
    cutoff = n_layers - n
    input_side = ()
    if family in WAV2VEC2_LIKE:
        input_side = ("feature_projection.", "pos_conv_embed.", "masked_spec_embed")
        if not getattr(getattr(module, "config", None), "do_stable_layer_norm", False):
            input_side += ("encoder.layer_norm.",)
    frozen = []
    for name, p, m in params:
        if (int(m.group(1)) < cutoff) if m else any(k in name for k in input_side):
            p.requires_grad_(False)
            frozen.append(name)
    return frozen


class BrainTuningModel(nn.Module):
    """Backbone + mean-pool + ``Linear(hidden, n_voxels)``.

    Parameters
    ----------
    speech_model : a trainable :class:`core.models.SpeechModel` (:func:`core.models.load_trainable`).
    n_voxels : number of target voxels (head outputs).
    head_init : ``"zeros"`` (paper/released code: weight and bias 0), ``"random"`` (torch's
        ``nn.Linear`` default, seeded by ``seed``) or ``"ridge"`` (``ridge_weights``).
    ridge_weights : ``(hidden, n_voxels)`` array (e.g. ridge fitted on the pretrained model's pooled
        features); ``ridge_bias`` ``(n_voxels,)`` (default 0). Only with ``head_init="ridge"``.
    seed : seed of the random head. freeze : apply :func:`freeze_front_end` (paper: True).
    whisper_input : ``"window"`` (default) or ``"pad30"``, see the module docstring.

    Attributes
    ----------
    backbone, head, family, preprocessor, frozen (names of frozen backbone parameters).
    """

    def __init__(self, speech_model, n_voxels: int, head_init: str = "zeros", ridge_weights=None,
                 ridge_bias=None, seed: int = 0, freeze: bool = True, whisper_input: str = "window"):
        super().__init__()
        if int(n_voxels) < 1:
            raise ConfigError(f"n_voxels={n_voxels!r} must be ≥ 1 (select target voxels first)")
        if head_init not in HEAD_INITS:
            raise ConfigError(f"head_init {head_init!r} is not one of {', '.join(HEAD_INITS)}")
        if whisper_input not in WHISPER_INPUTS:
            raise ConfigError(f"whisper_input {whisper_input!r} is not one of {', '.join(WHISPER_INPUTS)}")
        self.backbone = speech_model.module
        self.family = speech_model.family
        self.preprocessor = speech_model.preprocessor
        self.sample_rate = int(speech_model.sample_rate)
        self.whisper_input = whisper_input
        self.frozen = freeze_front_end(self.backbone, self.family) if freeze else []
        d = hidden_size(self.backbone)
        self.n_voxels = int(n_voxels)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            self.head = nn.Linear(d, self.n_voxels)
        self.head.to(next(self.backbone.parameters()).device)
        self._init_head(head_init, ridge_weights, ridge_bias, d)

    @classmethod
    def from_spec(cls, spec: str, n_voxels: int, device: Optional[str] = None, **kwargs) -> "BrainTuningModel":
        """A fresh model on a trainable copy of model ``spec`` (``load_trainable``)."""
        from core.models import load_trainable

        return cls(load_trainable(spec, device=device), n_voxels, **kwargs)

    def _init_head(self, how: str, w, b, d: int) -> None:
        if how != "ridge" and (w is not None or b is not None):
            raise ConfigError(f"ridge weights given with head_init={how!r}; use head_init='ridge'")
        with torch.no_grad():
            if how == "zeros":
                self.head.weight.zero_()
                self.head.bias.zero_()
            elif how == "ridge":
                if w is None:
                    raise ConfigError("head_init='ridge' needs ridge_weights of shape (hidden, n_voxels)")
                w = np.asarray(w, dtype=np.float32)
                if w.shape != (d, self.n_voxels):
                    raise ConfigError(f"ridge weights have shape {w.shape}, expected ({d}, {self.n_voxels}) "
                                      "(hidden, n_voxels)")
                b = np.zeros(self.n_voxels, np.float32) if b is None else np.asarray(b, dtype=np.float32)
                if b.shape != (self.n_voxels,):
                    raise ConfigError(f"ridge bias has shape {b.shape}, expected ({self.n_voxels},)")
                self.head.weight.copy_(torch.from_numpy(w.T.copy()))
                self.head.bias.copy_(torch.from_numpy(b))

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    # -- forward ----------------------------------------------------------------------------
    def forward(self, waves: torch.Tensor, lengths: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Predicted responses ``(B, n_voxels)`` for waveforms ``(B, n_samples)`` at 16 kHz."""
        return self.head(self.pooled(waves, lengths))

    def pooled(self, waves: torch.Tensor, lengths: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Mean over the real frames of the last hidden state, ``(B, hidden)``."""
        hidden, n_frames = self.last_hidden(waves, lengths)
        t = torch.arange(hidden.shape[1], device=hidden.device)
        mask = (t[None, :] < n_frames.to(hidden.device)[:, None]).to(hidden.dtype)
        return (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)

    def last_hidden(self, waves: torch.Tensor, lengths: Optional[Sequence[int]] = None):
        """``(hidden (B, T, d), n_real_frames (B,) int64)`` of a batch of waveforms."""
        waves = torch.as_tensor(waves)
        if waves.ndim != 2:
            raise ConfigError(f"waveforms must be (batch, n_samples), got shape {tuple(waves.shape)}")
        B, n = waves.shape
        lengths = torch.full((B,), n, dtype=torch.int64) if lengths is None else \
            torch.as_tensor(lengths, dtype=torch.int64).cpu()
        if lengths.shape != (B,) or int(lengths.min()) < 1 or int(lengths.max()) > n:
            raise ConfigError(f"lengths must be {B} sample counts in 1..{n}, got {lengths.tolist()}")
        if self.family == "whisper":
            return self._whisper(waves, lengths)
        return self._wav2vec2(waves, lengths)

    def _wav2vec2(self, waves, lengths):
        x = waves.to(self.device, torch.float32)
        real = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths.to(x.device)[:, None]).to(x.dtype)
        if getattr(self.preprocessor, "do_normalize", False):
            cnt = real.sum(1, keepdim=True)
            mean = (x * real).sum(1, keepdim=True) / cnt
            var = (((x - mean) * real) ** 2).sum(1, keepdim=True) / cnt
            x = (x - mean) / torch.sqrt(var + 1e-7) * real
        else:
            x = x * real
        hidden = self.backbone(x).last_hidden_state
        n_frames = self.backbone._get_feat_extract_output_lengths(lengths).to(torch.int64)
        return hidden, n_frames.clamp(max=hidden.shape[1])

    def _whisper(self, waves, lengths):
        from core.features.layers import whisper_hidden_states

        pre = self.preprocessor
        arr = waves.detach().to("cpu", torch.float32).numpy()
        clips = [arr[i, :int(lengths[i])] for i in range(arr.shape[0])]
        pad = "max_length" if self.whisper_input == "pad30" else "longest"
        with torch.autocast("cpu", enabled=False):  # the log-mel STFT stays fp32 under bf16 autocast
            feats = pre(clips, sampling_rate=self.sample_rate, return_tensors="pt", padding=pad).input_features
        top = len(self.backbone.layers)
        hidden = whisper_hidden_states(self.backbone, feats.to(self.device), [top])[top]
        n_frames = (lengths // pre.hop_length - 1) // 2 + 1
        return hidden, n_frames.clamp(min=1, max=hidden.shape[1])

    # -- bookkeeping --------------------------------------------------------------------------
    def parameter_groups(self):
        """``(backbone trainable params, head params)`` for the two optimiser groups."""
        return [p for p in self.backbone.parameters() if p.requires_grad], list(self.head.parameters())
