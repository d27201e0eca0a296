"""Layer features of a speech model over sliding windows (paper-method.md, Evaluation 1).

Protocol (``mode="paper"``, the defaults): a context window of ``window_s = 16`` s slides over the
story with a stride of ``stride_s = 0.1`` s; windows end at ``k·stride`` (k = 1, 2, …), so the first
160 windows hold only the audio so far (0.1 s, 0.2 s, … 15.9 s). For wav2vec2-style models they are
run as true shorter inputs, never padded (zero padding changes wav2vec2/HuBERT features). For each
window and every hidden layer the representation of the window's last frame is kept, stamped at the
window's end time.

Whisper's encoder takes 30 s of log-mel: every window is zero-padded to 30 s, as the released code
does (transformers' feature extractor), and the kept frame is the last one of real audio: the 20 ms
frame ``(n_samples // 160 - 1) // 2`` whose centre is the last real mel frame. Cutting the
positional table to the window's length instead would be ~2× cheaper for 16 s windows, but it is
not a float-level change: on synthesized speech the last-real-frame features of layers 1–4 of
whisper-tiny.en correlate only ≈ 0.6 (median over dimensions) with the padded ones, so it is not
offered.

``mode="fast"`` trades exactness for 10× fewer windows (and, for Whisper, runs the encoder on the
window's own length — ``whisper_input="window"`` — instead of padding it to 30 s): windows every ``fast_stride_s = 1`` s, each
keeping the *mean* of the frames of its last stride (one frame every 1 s loses most of the signal;
the mean of the last second's frames keeps it), stamped at the centre of that stride
(end − stride/2). Its agreement with paper mode is measured in ``bench/features.py``: on 60 s of
espeak speech with whisper-tiny.en, after Lanczos resampling to TR = 2 s, the median (over feature
dimensions) Pearson r between fast and paper features is 0.80 (layer 0) and 0.49–0.53 (layers
1–4); one last frame every 1 s gives 0.74 / 0.32–0.35. For scale, paper mode against itself
sampled every 0.2 s instead of 0.1 s gives 0.98 / 0.76–0.78: last-frame features change faster than
the 10 Hz sampling, so even paper-mode TR features depend on the sampling phase. On the full demo
(``bench/fast_mode.py``, all voxels) fast mode moves a voxel's test r by 0.051–0.058 on average
(layers 0–4), less than moving the paper protocol's 0.2 s sampling grid by 0.1 s does
(0.057–0.064).

Batching: windows of equal input length share a forward pass (all full-length windows; Whisper: all
windows, padded alike). Whisper's top layer is computed only at the kept frames (its keys and values
still see every frame): 1.27× less time for whisper-tiny's 4 layers, float round-off only. On 2 CPU
cores that is most of the gain there is: one window per pass already runs at ~80 % of the machine's
fp32 matmul rate (``bench/features.py`` prints this roofline), so batching pays on a GPU. Audio
after the last whole stride is not covered; audio shorter than one stride has no window and raises
:class:`DataError` naming the story.

Cache: each (model fingerprint incl. weights hash, story audio hash, protocol, layer) is one
``.npz`` under ``<cache>/layer_features/`` (``times`` (n_windows,) s, ``values`` (n_windows, hidden)).
"""

from __future__ import annotations

import hashlib
from typing import Dict, List, Sequence

import numpy as np

from core.errors import ConfigError, DataError
from core.features.base import TimedFeatures
from core.progress import ProgressFn, report
from core.store import artifact_path, key_hash, save_npz

PAPER_WINDOW_S = 16.0  #: context window (s); paper-method.md Evaluation 1
PAPER_STRIDE_S = 0.1  #: stride (s); paper-method.md Evaluation 1
FAST_STRIDE_S = 1.0  #: fast-mode stride (s): the team's measurement (mean of the last second)
MODES = ("paper", "fast")
WHISPER_INPUTS = ("pad30", "window")
PRECISIONS = ("fp32", "bf16")  #: forward-pass precision of layer-feature extraction
CODE_TAG = "layer-features-v1"  #: bump when the extraction's meaning changes
CACHE_KIND = "layer_features"


def default_mode(data_spec: str) -> str:
    """The window protocol used when none is asked for: ``"fast"`` on the demo, else ``"paper"``.

    The paper protocol (a 30 s Whisper pass every 0.1 s) takes hours for the demo's ~40 min of audio
    on 2 CPU cores; the demo therefore defaults to the fast mode (the app and README say so). Real
    datasets get the paper protocol unless ``--mode fast`` is asked for.
    """
    return "fast" if str(data_spec).split(":", 1)[0] == "demo" else "paper"


def window_bounds(n_samples: int, sample_rate: int, window_s: float, step_s: float):
    """``(starts, ends)`` in samples, ``(n_windows,)`` int64: ends at ``k·step``, length ≤ window."""
    step = int(round(step_s * sample_rate))
    win = int(round(window_s * sample_rate))
    ends = step * np.arange(1, n_samples // step + 1, dtype=np.int64)
    return np.maximum(ends - win, 0), ends


def audio_hash(audio: np.ndarray) -> str:
    """sha1 (16 hex) of a float32 waveform's bytes (cache key of a story's audio)."""
    return hashlib.sha1(np.ascontiguousarray(audio, dtype=np.float32).tobytes()).hexdigest()[:16]


def one_window_features(model, audio: np.ndarray, ends, window_s: float, n_avg: int = 1) -> dict:
    """The plain reference path: each window alone through transformers — its own preprocessing and
    a full ``model(…, output_hidden_states=True)`` — keeping the mean of its last ``n_avg`` frames.

    ``model`` a :class:`core.models.SpeechModel`; ``audio`` ``(n_samples,)`` at its sample rate;
    ``ends`` window ends in samples; ``window_s`` in seconds. Whisper: the feature extractor pads to
    30 s and its attention mask tells which mel frames are real; the kept encoder frame is the last
    whose centre mel frame (2j) is real. wav2vec2-style: the last output frame. Returns
    ``{hidden index: (len(ends), hidden)}`` float32. What :meth:`ModelFeatureSource.extract` is tested
    (``tests/test_layer_features.py``) and benchmarked (``bench/features.py``) against.
    """
    import torch

    win = int(round(window_s * model.sample_rate))
    dev = next(model.module.parameters()).device
    rows: Dict[int, list] = {}
    with torch.inference_mode():
        for end in ends:
            w = audio[max(0, end - win):end]
            if model.family == "whisper":
                enc = model.preprocessor(w, sampling_rate=model.sample_rate, return_tensors="pt",
                                         return_attention_mask=True)
                hs = model.module(enc.input_features.to(dev), output_hidden_states=True).hidden_states
                last = (int(enc.attention_mask.sum()) - 1) // 2
            else:
                iv = model.preprocessor(w, sampling_rate=model.sample_rate, return_tensors="pt").input_values
                hs = model.module(iv.to(dev), output_hidden_states=True).hidden_states
                last = hs[0].shape[1] - 1
            for i, h in enumerate(hs):
                rows.setdefault(i, []).append(h[0, max(0, last - n_avg + 1):last + 1].mean(0).cpu().numpy())
    return {i: np.stack(r) for i, r in rows.items()}


class ModelFeatureSource:
    """Layer features of model ``spec`` (a :class:`core.features.base.FeatureSource`).

    Parameters
    ----------
    spec : model spec (``bundled:whisper-tiny.en``, ``hf:<id-or-dir>``, ``random:<family>[-tiny]``).
    window_s : context window in seconds (paper: 16 s).
    stride_s : stride of the paper mode in seconds (paper: 0.1 s).
    mode : ``"paper"`` (last frame every ``stride_s``) or ``"fast"`` (mean of the frames of the last
        ``fast_stride_s`` every ``fast_stride_s``).
    fast_stride_s : stride and averaging span of the fast mode in seconds (default 1 s).
    batch_size : windows per forward pass (memory/speed only; results do not depend on it beyond
        float round-off).
    whisper_input : ``"pad30"`` (every window zero-padded to Whisper's 30 s input, as the released
        code does) or ``"window"`` (the encoder runs on the window's own length with its positional
        table sliced: ~2× cheaper for 16 s windows, not a float-level change, see the module
        docstring). Default: ``"pad30"`` in paper mode, ``"window"`` in fast mode.
    precision : ``"fp32"`` (default) or ``"bf16"`` (the forward pass under bf16 autocast; features
        are returned as float32). A rounding change only: README ("Speech models") gives its measured
        effect on the demo's per-voxel r and its speed.
    """

    def __init__(self, spec: str, window_s: float = PAPER_WINDOW_S, stride_s: float = PAPER_STRIDE_S,
                 mode: str = "paper", fast_stride_s: float = FAST_STRIDE_S, batch_size: int = 8,
                 whisper_input: str | None = None, precision: str = "fp32"):
        if precision not in PRECISIONS:
            raise ConfigError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        self.precision = precision
        if mode not in MODES:
            raise ConfigError(f"feature mode {mode!r} is not one of {', '.join(MODES)}")
        whisper_input = whisper_input or ("pad30" if mode == "paper" else "window")
        if whisper_input not in WHISPER_INPUTS:
            raise ConfigError(f"whisper_input {whisper_input!r} is not one of {', '.join(WHISPER_INPUTS)}")
        self.whisper_input = whisper_input
        for name, val in (("window_s", window_s), ("stride_s", stride_s), ("fast_stride_s", fast_stride_s)):
            if not np.isfinite(val) or val <= 0:
                raise ConfigError(f"{name}={val!r} must be a positive number of seconds")
        if int(batch_size) < 1:
            raise ConfigError(f"batch_size={batch_size!r} must be ≥ 1")
        self.spec = spec
        self.window_s, self.stride_s = float(window_s), float(stride_s)
        self.fast_stride_s = float(fast_stride_s)
        self.mode, self.batch_size = mode, int(batch_size)
        if self.step_s > self.window_s:
            raise ConfigError(f"stride {self.step_s} s is longer than the window {self.window_s} s")

    # -- FeatureSource protocol ------------------------------------------------------------
    @property
    def model(self):
        """The loaded :class:`core.models.SpeechModel` (loaded on first use; ``load_model`` keeps one
        per process and per version of an ``hf:`` folder's files, so it always matches
        :meth:`fingerprint`)."""
        from core.models import load_model

        return load_model(self.spec)

    @property
    def step_s(self) -> float:
        """Seconds between windows: ``stride_s`` (paper) or ``fast_stride_s`` (fast)."""
        return self.stride_s if self.mode == "paper" else self.fast_stride_s

    def protocol(self) -> dict:
        """The parameters that determine the features (part of the fingerprint)."""
        out = {"window_s": self.window_s, "step_s": self.step_s, "mode": self.mode}
        if self.whisper_input != "pad30":  # keeps the keys of existing pad30 caches
            out["whisper_input"] = self.whisper_input
        if self.precision != "fp32":  # keeps the keys of existing fp32 caches
            out["precision"] = self.precision
        return out

    def layers(self) -> List[str]:
        """``["layer_0", …, "layer_L"]`` of the model (from its config: the model is not loaded)."""
        from core.models import model_info

        return list(model_info(self.spec).layer_names)

    def fingerprint(self) -> str:
        """Hash of the model fingerprint (weights hash included), the protocol and the code tag.

        Computed without loading the model (:func:`core.models.model_fingerprint`: config,
        preprocessor and the weight files' hashes), equal to ``load_model(spec).fingerprint``.
        """
        from core.models import model_fingerprint

        return key_hash(CODE_TAG, model_fingerprint(self.spec), self.protocol())

    def compute(self, dataset, story: str, layers: Sequence[str],
                progress: ProgressFn = None) -> Dict[str, TimedFeatures]:
        """Features of ``story`` for each of ``layers``, from the cache or :meth:`extract`."""
        audio = np.asarray(dataset.audio(story), dtype=np.float32)
        layers = self._check_layers(layers)
        base = (self.fingerprint(), audio_hash(audio))
        paths = {layer: artifact_path(CACHE_KIND, key_hash(*base, layer), ".npz") for layer in layers}
        todo = [layer for layer in layers if not paths[layer].exists()]
        if todo:
            fresh = self.extract(audio, todo, progress, label=f"story {story!r}")
            for layer in todo:
                save_npz(paths[layer], {"times": fresh[layer].times, "values": fresh[layer].values})
        out = {}
        for layer in layers:
            with np.load(paths[layer]) as z:
                out[layer] = TimedFeatures(z["times"], z["values"])
        report(progress, 1.0, f"story {story!r}: layer features ready")
        return out

    # -- extraction ------------------------------------------------------------------------
    def _check_layers(self, layers: Sequence[str]) -> List[str]:
        names = self.layers()
        bad = [layer for layer in layers if layer not in names]
        if bad or not len(layers):
            raise ConfigError(f"{self.spec} has no layer(s) {bad or '(none asked)'}; "
                              f"valid: {names[0]}..{names[-1]}")
        return list(dict.fromkeys(layers))

    def extract(self, audio: np.ndarray, layers: Sequence[str], progress: ProgressFn = None,
                label: str = "audio") -> Dict[str, TimedFeatures]:
        """Uncached layer features of a 16 kHz waveform ``(n_samples,)``.

        Returns ``{layer: TimedFeatures(times (n_windows,) s, values (n_windows, hidden) float32)}``.
        ``label`` names the audio in errors and progress messages.
        """
        import torch

        m = self.model
        layers = self._check_layers(layers)
        idx = sorted({m.layer_index(layer) for layer in layers})
        audio = np.asarray(audio, dtype=np.float32)
        starts, ends = window_bounds(audio.shape[0], m.sample_rate, self.window_s, self.step_s)
        if not len(ends):
            raise DataError(f"{label} is {audio.shape[0] / m.sample_rate:.3f} s long, shorter than one "
                            f"stride ({self.step_s} s): no window to extract; use a longer story")
        lengths = ends - starts
        self._check_lengths(int(lengths.min()), int(lengths.max()))
        k = max(1, int(round(self.step_s / m.frame_s))) if self.mode == "fast" else 1
        groups: Dict[int, List[int]] = {}  # input length → windows (Whisper: all padded to 30 s)
        for i, n in enumerate(lengths):
            groups.setdefault(0 if self._padded_whisper else int(n), []).append(i)
        batches = [ids[j:j + self.batch_size] for ids in groups.values()
                   for j in range(0, len(ids), self.batch_size)]
        out: Dict[int, np.ndarray] = {}
        done = 0
        with torch.inference_mode():
            for batch in batches:
                waves = [audio[starts[i]:ends[i]] for i in batch]
                last = torch.tensor([self._last_frame(len(w)) for w in waves])
                frames = last[:, None] + torch.arange(1 - k, 1)  # (B, k): the last k frames
                valid = (frames >= 0)[..., None]  # the first windows may hold fewer than k
                hidden = self._forward(waves, idx, frames.clamp(min=0))
                for i in idx:
                    h = hidden[i]
                    rows = (h * valid.to(h)).sum(1) / valid.sum(1).to(h)
                    if i not in out:
                        out[i] = np.zeros((len(ends), rows.shape[1]), np.float32)
                    out[i][batch] = rows.float().cpu().numpy()
                done += len(batch)
                report(progress, done / len(ends), f"{label}: {done}/{len(ends)} windows")
        times = ends / m.sample_rate - (self.step_s / 2 if self.mode == "fast" else 0.0)
        times = times.astype(np.float64)
        return {layer: TimedFeatures(times, out[m.layer_index(layer)]) for layer in layers}

    @property
    def _padded_whisper(self) -> bool:
        return self.model.family == "whisper" and self.whisper_input == "pad30"

    def _check_lengths(self, shortest: int, longest: int) -> None:
        m = self.model
        if m.family == "whisper":
            limit = m.preprocessor.n_samples / m.sample_rate
            if longest > m.preprocessor.n_samples:
                raise ConfigError(f"window {self.window_s} s is longer than Whisper's {limit:.0f} s "
                                  f"input; use window_s ≤ {limit:.0f}")
            need = m.preprocessor.hop_length
        else:
            need = _receptive_field(m.module.config)
        if shortest < need:
            raise ConfigError(f"stride {self.step_s} s gives a first window of {shortest} samples, shorter "
                              f"than {m.spec}'s minimum input ({need} samples); use a longer stride")

    def _last_frame(self, n: int) -> int:
        """Index of the window's last frame of real audio, for an input of ``n`` samples."""
        m = self.model
        if m.family == "whisper":
            return (n // m.preprocessor.hop_length - 1) // 2
        return int(m.module._get_feat_extract_output_lengths(n)) - 1

    def _forward(self, waves: List[np.ndarray], idx: List[int], frames) -> dict:
        """Hidden states ``{layer index: (B, k, hidden)}`` at ``frames`` ``(B, k)`` of a batch of
        equal-length windows (Whisper: the top layer is computed at those frames only)."""
        import torch

        m = self.model
        device = next(m.module.parameters()).device
        # the model (not the preprocessor, whose STFT must stay fp32) under bf16 autocast if asked
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")
        if m.family == "whisper":
            feats = m.preprocessor(waves, sampling_rate=m.sample_rate, return_tensors="pt",
                                   padding="max_length" if self._padded_whisper else "longest"
                                   ).input_features  # zero-pad to 30 s, or keep the window's length
            with autocast:
                return whisper_hidden_states(m.module, feats.to(device), idx, keep=frames)
        values = m.preprocessor(waves, sampling_rate=m.sample_rate, return_tensors="pt",
                                padding="longest").input_values
        with autocast:
            hs = m.module(values.to(device), output_hidden_states=True).hidden_states
        rows = (torch.arange(len(waves), device=device)[:, None], frames.to(device))
        return {i: hs[i][rows] for i in idx}


def _receptive_field(config) -> int:
    """Samples one output frame of a wav2vec2-style CNN front end sees."""
    rf = 1
    for kernel, stride in zip(reversed(config.conv_kernel), reversed(config.conv_stride)):
        rf = (rf - 1) * stride + kernel
    return rf


def whisper_hidden_states(encoder, input_features, idx: Sequence[int], keep=None) -> dict:
    """Hidden states of a ``WhisperEncoder``, running only the layers up to ``max(idx)``.

    ``input_features`` ``(B, n_mels, n_frames)`` log-mel (3000 frames = 30 s). Without ``keep``, the
    same computation as the encoder's own forward with ``output_hidden_states=True`` (tested to be
    bit-identical), which however always runs every layer and keeps every hidden state; this loop
    over its modules stops early and keeps only ``idx``. Returns ``{i: (B, T, d)}``; ``L`` (the
    output) is after the final layer norm, as in transformers.

    ``keep`` ``(B, k)`` int64 frame indices: every returned state is gathered to ``(B, k, d)``, and
    the top layer run (``max(idx)``) computes its queries, attention output and feed-forward block
    for those ``k`` frames only (keys and values still come from every frame). Same numbers up to
    float round-off; for the paper protocol (k = 1) it skips most of one layer's arithmetic, ~20 %
    of whisper-tiny's (4 layers).
    """
    import torch
    import torch.nn.functional as F

    x = F.gelu(encoder.conv2(F.gelu(encoder.conv1(input_features)))).permute(0, 2, 1)
    n_pos = encoder.embed_positions.weight.shape[0]
    if x.shape[1] > n_pos:
        raise ConfigError(f"Whisper input of {x.shape[1]} frames exceeds its {n_pos} positions (30 s)")
    x = x + encoder.embed_positions.weight[:x.shape[1]]
    rows = None if keep is None else (torch.arange(x.shape[0], device=x.device)[:, None], keep.to(x.device))

    def take(h):
        return h if rows is None else h[rows]

    n_layers, top = len(encoder.layers), max(idx)
    out = {0: take(x)} if 0 in idx else {}
    for i in range(top):
        if rows is not None and i + 1 == top:
            x = h = _whisper_layer_at(encoder.layers[i], x, rows)  # already (B, k, d)
        else:
            x = encoder.layers[i](x, None)
            h = take(x)
        if i + 1 in idx:
            out[i + 1] = encoder.layer_norm(h) if i + 1 == n_layers else h
    return out


def _whisper_layer_at(layer, x, rows):
    """A ``WhisperEncoderLayer`` evaluated at frames ``x[rows]`` only: ``(B, k, d)``.

    The pre-norm block of transformers' layer with the attention queried from the kept frames
    (its cross-attention path: keys/values from all frames of ``x``, no mask — as in the encoder).
    """
    h = layer.self_attn_layer_norm(x)
    y = x[rows] + layer.self_attn(hidden_states=h[rows], key_value_states=h)[0]
    return y + layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(y))))
