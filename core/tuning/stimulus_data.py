"""Samples and labels of the stimulus control (:mod:`core.tuning.stimulus`): same clips, no fMRI.

The samples are the brain-tuning samples (:mod:`core.tuning.samples`: per response row the 10 s
clip = the audio of that TR and the 4 before it) of the subject's training stories and validation
story; the test story is never read, and no response is read either. A sample's "target" row is
int64: ``[crc32(story), row, *labels]`` — the first two seed the sample's masks
(:func:`sample_seed`), the labels depend on the objective:

- wav2vec2: none (the contrastive targets are the model's own quantised features).
- Whisper: the tokenizer's tokens of the words **inside the clip** (:func:`clip_words`: a word
  counts when its whole ``[onset, offset]`` lies in the audio the clip holds), as transformers'
  Whisper fine-tuning labels: ``<|startoftranscript|>`` is the decoder start token, then (multilingual
  vocabularies only) ``<|en|><|transcribe|>``, ``<|notimestamps|>``, the text `` " " + " ".join(words)``
  (OpenAI's transcripts start with a space) and ``<|endoftext|>``; padded with -100 (ignored by the
  loss). A clip without words gets only -100: it is masked out of the loss. Labels longer than the
  decoder's ``max_target_positions`` (448; never reached by 10 s of speech) are cut.
  ``random:`` Whisper models have no tokenizer: :class:`WordHashTokenizer` maps each word to one id.
- HuBERT: k-means cluster ids of MFCC frames, one per model frame — HuBERT's first iteration
  (Hsu et al. 2021, fairseq ``simple_kmeans``): 13 Kaldi-style MFCCs (25 ms Povey window, 10 ms hop,
  23 mel bins, pre-emphasis 0.97, lifter 22, no energy) + Δ + ΔΔ (5-frame regression) = 39 dims,
  :class:`sklearn.cluster.MiniBatchKMeans` with 100 clusters fitted on the **training** stories'
  audio only (seeded, fairseq's settings except ``n_init=3``). Model frame ``t`` (samples
  ``[320t, 320t + 400)``) takes MFCC frame ``2t`` (the same samples): the 100 Hz labels at 50 Hz,
  as fairseq subsamples them.
"""

from __future__ import annotations

import zlib
from typing import List, Sequence

import numpy as np

from core.data import timing
from core.errors import ConfigError, ModelError
from core.tuning.samples import SNIPPET_S, TuningData, TuningSplit, _Story, snippet_bounds

IGNORE = -100  #: label of tokens / frames outside the loss (transformers' ignore index)
N_CLUSTERS = 100  #: HuBERT iteration 1: 100 MFCC clusters (Hsu et al. 2021)
KMEANS_MAX_FRAMES = 200_000  #: seeded subsample of training frames for k-means (memory/time only)
MFCC_HOP, MFCC_WIN, MFCC_NFFT = 160, 400, 512  #: 10 ms hop, 25 ms window at 16 kHz (Kaldi)
N_MELS, N_CEPS, LIFTER, PREEMPH = 23, 13, 22, 0.97  #: Kaldi ``compute-mfcc-feats`` defaults
WORD_TOL_S = 1e-6  #: float tolerance on word boundaries (s)


def sample_seed(seed: int, epoch: int, story_crc: int, row: int) -> int:
    """A 32-bit seed for one sample's masks: a function of (seed, epoch, story, row) only, so masks
    do not depend on batch composition, process count or resumption (epoch −1: validation)."""
    ss = np.random.SeedSequence([int(seed), int(epoch) + 1, int(story_crc), int(row)])
    return int(ss.generate_state(1)[0])


def story_crc(name: str) -> int:
    return zlib.crc32(str(name).encode()) & 0x7FFFFFFF


# --------------------------------------------------------------------------- samples
def stimulus_data(dataset, subject: str, delays: Sequence[int], shift_s: float,
                  sample_rate: int = 16_000) -> TuningData:
    """Train / validation clips of ``subject``'s stories with ``[crc32(story), row]`` rows and no
    voxel targets (``report["n_voxels"] = 0``). Same stories and rows as :meth:`TuningData.build`;
    reads only audio and run lengths. ConfigError when no training or no validation story."""
    delays = tuple(int(d) for d in delays)
    split, test = dataset.split(subject), dataset.test_story
    train = [s for s in split["train"] if s != test]
    val = [s for s in split["val"] if s != test]
    if not train or not val:
        raise ConfigError(f"subject {subject!r} of {dataset.spec} has {len(train)} training and {len(val)} "
                          "validation stories; the stimulus control needs both (add stories)")

    def story(name):
        R = dataset.n_trs_run(name)
        n = timing.n_response_rows(R)
        ids = np.stack([np.full(n, story_crc(name)), np.arange(n)], 1).astype(np.int64)
        audio = np.asarray(dataset.audio(name), dtype=np.float32)
        return _Story(name, audio, snippet_bounds(R, dataset.scanner_tr, shift_s, sample_rate), ids)

    splits = {k: TuningSplit([story(s) for s in names], delays, sample_rate)
              for k, names in (("train", train), ("val", val))}
    data = TuningData(subject, np.zeros(0, np.int64), splits, dataset.scanner_tr)
    data.report["targets_kind"] = "stimulus"
    return data


def set_labels(split: TuningSplit, labels: List[np.ndarray], width: int) -> None:
    """Append per-story labels ``(n_rows, ≤ width)`` (padded with :data:`IGNORE` to ``width``) to
    the ``[crc, row]`` columns of ``split``'s stories."""
    for st, lab in zip(split._stories, labels):
        pad = np.full((len(st.targets), width), IGNORE, np.int64)
        if lab.size:
            pad[:, :lab.shape[1]] = lab
        st.targets = np.concatenate([st.targets[:, :2], pad], 1)


# --------------------------------------------------------------------------- Whisper words
def clip_intervals(bounds: np.ndarray, row: int, delays: Sequence[int], n_audio: int,
                   sample_rate: int = 16_000) -> List[tuple]:
    """Audio intervals (s, merged where contiguous) that the clip of ``row`` holds: per snippet the
    samples :func:`core.tuning.samples.snippet` keeps, ``[max(start, stop − 2 s, 0), min(stop, n))``."""
    k, n2 = int(row) + timing.TRIM_START, SNIPPET_S * int(sample_rate)
    out: List[list] = []
    for d in sorted(delays, reverse=True):
        j = k - int(d)
        if not 0 <= j < len(bounds):
            continue
        hi = min(int(bounds[j, 1]), n_audio)
        lo = max(int(bounds[j, 0]), hi - n2, 0)
        if hi <= lo:
            continue
        if out and out[-1][1] == lo:
            out[-1][1] = hi
        else:
            out.append([lo, hi])
    return [(a / sample_rate, b / sample_rate) for a, b in out]


def clip_words(words, intervals) -> List[str]:
    """Labels of the word events lying wholly inside one of ``intervals`` (s), by onset."""
    order = np.argsort(np.asarray(words.onsets), kind="stable")
    keep = []
    for i in order:
        on, off = float(words.onsets[i]), float(words.offsets[i])
        if any(a - WORD_TOL_S <= on and off <= b + WORD_TOL_S for a, b in intervals):
            keep.append(words.labels[i])
    return keep


class WordHashTokenizer:
    """Labels for ``random:`` Whisper models (no tokenizer exists for their vocabulary): word ``w``
    → ``first + crc32(w) mod (vocab − first)`` with ``first`` = 1 + the largest special id, then EOS."""

    def __init__(self, config):
        specials = [config.pad_token_id, config.bos_token_id, config.eos_token_id, config.decoder_start_token_id]
        self.first = max(int(s) for s in specials if s is not None) + 1
        self.vocab, self.eos = int(config.vocab_size), int(config.eos_token_id)
        if self.vocab <= self.first:
            raise ModelError(f"Whisper vocabulary of {self.vocab} leaves no id for words")

    def __call__(self, words: Sequence[str]) -> List[int]:
        if not words:
            return []
        return [self.first + zlib.crc32(w.encode()) % (self.vocab - self.first) for w in words] + [self.eos]


class WhisperLabels:
    """Whisper fine-tuning labels of a list of words (see the module docstring)."""

    def __init__(self, tokenizer, config):
        self.tok = tokenizer
        ids = tokenizer.convert_tokens_to_ids
        self.start = int(config.decoder_start_token_id)
        multilingual = int(config.vocab_size) >= 51865  # transformers' rule (.en models: 51864)
        prefix = ["<|en|>", "<|transcribe|>"] if multilingual else []
        self.prefix = [int(ids(t)) for t in prefix + ["<|notimestamps|>"]]
        self.eot = int(ids("<|endoftext|>"))

    def __call__(self, words: Sequence[str]) -> List[int]:
        if not words:
            return []
        text = self.tok(" " + " ".join(words), add_special_tokens=False).input_ids
        return self.prefix + [int(t) for t in text] + [self.eot]


def whisper_labeller(speech_model, config):
    """:class:`WhisperLabels` with the tokenizer of the model's folder (``bundled:``, ``hf:``,
    ``ckpt:``), or :class:`WordHashTokenizer` for ``random:`` models; ModelError when a folder
    model has no tokenizer."""
    folder = getattr(speech_model, "folder", None)
    if folder is None:
        return WordHashTokenizer(config)
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError, TypeError) as err:
        raise ModelError(f"the stimulus control needs Whisper's tokenizer in {folder} ({type(err).__name__}); "
                         "copy tokenizer.json (and tokenizer_config.json) of the base model there") from None
    return WhisperLabels(tok, config)


def word_labels(dataset, split: TuningSplit, labeller, max_len: int) -> tuple:
    """Per story ``(n_rows, L)`` label arrays and a report (``n_clips``, ``n_empty`` clips without
    words, ``n_cut`` label sequences cut to ``max_len``, ``max_tokens``)."""
    out, n_empty, n_cut, longest = [], 0, 0, 0
    for st in split._stories:
        words = dataset.words(st.name)
        rows = []
        for r in range(len(st.targets)):
            ids = labeller(clip_words(words, clip_intervals(st.bounds, r, split.delays, len(st.audio),
                                                             split.sample_rate)))
            n_empty += not ids
            n_cut += len(ids) > max_len
            rows.append(ids[:max_len])
            longest = max(longest, len(rows[-1]))
        lab = np.full((len(rows), max(len(x) for x in rows) if rows else 0), IGNORE, np.int64)
        for i, ids in enumerate(rows):
            lab[i, :len(ids)] = ids
        out.append(lab)
    return out, {"n_clips": int(sum(len(s.targets) for s in split._stories)), "n_empty": int(n_empty),
                 "n_cut": int(n_cut), "max_tokens": int(longest)}


# --------------------------------------------------------------------------- HuBERT MFCC + k-means
def _deltas(c: np.ndarray) -> np.ndarray:
    """5-frame regression deltas over time (axis 0), edge frames replicated (torchaudio's rule)."""
    p = np.pad(c, ((2, 2), (0, 0)), mode="edge")
    return ((p[3:-1] - p[1:-3]) + 2 * (p[4:] - p[:-4])) / 10.0


def mfcc(wave: np.ndarray, sample_rate: int = 16_000) -> np.ndarray:
    """Kaldi-style MFCC + Δ + ΔΔ of a waveform, ``(1 + (n − 400) // 160, 39)`` float32 at 100 Hz
    (frames of 400 samples every 160, no centring). Filter bank: transformers' ``mel_filter_bank``
    (Kaldi mel scale) and Povey window; vectorised here (transformers' ``spectrogram`` loops per frame)."""
    from scipy.fft import dct
    from transformers.audio_utils import mel_filter_bank, window_function

    x = np.asarray(wave, dtype=np.float64)
    if x.shape[0] < MFCC_WIN:
        return np.zeros((0, 3 * N_CEPS), np.float32)
    n = 1 + (x.shape[0] - MFCC_WIN) // MFCC_HOP
    frames = np.lib.stride_tricks.sliding_window_view(x, MFCC_WIN)[::MFCC_HOP][:n].copy()
    frames -= frames.mean(1, keepdims=True)
    frames[:, 1:] -= PREEMPH * frames[:, :-1].copy()
    frames[:, 0] *= 1 - PREEMPH
    frames *= window_function(MFCC_WIN, "povey", periodic=False)
    power = np.abs(np.fft.rfft(frames, MFCC_NFFT, axis=1)) ** 2
    mel = mel_filter_bank(num_frequency_bins=MFCC_NFFT // 2 + 1, num_mel_filters=N_MELS, min_frequency=20.0,
                          max_frequency=sample_rate / 2, sampling_rate=sample_rate, norm=None,
                          mel_scale="kaldi", triangularize_in_mel_space=True)
    logmel = np.log(np.maximum(power @ mel, np.finfo(np.float32).eps))
    c = dct(logmel, type=2, norm="ortho", axis=1)[:, :N_CEPS]
    c *= 1 + 0.5 * LIFTER * np.sin(np.pi * np.arange(N_CEPS) / LIFTER)
    d = _deltas(c)
    return np.concatenate([c, d, _deltas(d)], 1).astype(np.float32)


def fit_kmeans(audios: Sequence[np.ndarray], n_clusters: int = N_CLUSTERS, seed: int = 0,
               max_frames: int = KMEANS_MAX_FRAMES):
    """MiniBatchKMeans on the 50 Hz MFCC frames of ``audios`` (training stories); ConfigError when
    there are fewer frames than clusters."""
    from sklearn.cluster import MiniBatchKMeans

    feats = np.concatenate([mfcc(a)[::2] for a in audios]) if audios else np.zeros((0, 3 * N_CEPS))
    if len(feats) < n_clusters:
        raise ConfigError(f"HuBERT's k-means needs ≥ {n_clusters} MFCC frames of training audio, got "
                          f"{len(feats)}; add training stories")
    if len(feats) > max_frames:
        feats = feats[np.sort(np.random.default_rng(seed).choice(len(feats), max_frames, replace=False))]
    km = MiniBatchKMeans(n_clusters=n_clusters, init="k-means++", max_iter=100, batch_size=10000, tol=0.0,
                         max_no_improvement=100, n_init=3, reassignment_ratio=0.0, random_state=int(seed))
    return km.fit(feats)


def cluster_labels(split: TuningSplit, km, n_frames: int) -> List[np.ndarray]:
    """Per story ``(n_rows, n_frames)`` cluster ids: model frame ``t`` ← MFCC frame ``2t`` of the clip."""
    out = []
    for s, st in enumerate(split._stories):
        js = np.flatnonzero(split.index[:, 0] == s)
        lab = np.empty((len(js), n_frames), np.int64)
        for i, j in enumerate(js):
            f = mfcc(split.waveform(int(j)))[0:2 * n_frames:2]
            if len(f) < n_frames:
                raise ConfigError(f"clip of {st.name} row {i} gives {len(f)} MFCC frames for {n_frames} "
                                  "model frames; use clips of ≥ 1 s")
            lab[i] = km.predict(f)
        out.append(lab)
    return out
