"""Low-level feature spaces (``lowlevel:<name>``): acoustic and phonetic descriptors of a story.

The paper (``/work/shared/reference/paper-method.md``, "Evaluation 2") uses low-level spaces to
measure how much a model's brain alignment rests on acoustics/phonetics. Each space is one function
``fn(dataset, story, **params) -> TimedFeatures`` plus one entry in :data:`SPACES`; the TR pipeline
(``core.features.pipeline``) Lanczos-resamples the result to TR stamps. Event spaces put one row
per event at its midpoint, so the Lanczos sum turns them into rates per TR.

Spaces here:

- ``powspec``: mel-band power spectrum — log(1 + mel-band power) of 25 ms Hann frames every 10 ms,
  32 mel bands (:func:`core.features.spectral.mel_band_envelopes`), at frame centres.
- ``phonemes``: one-hot of the 39 ARPAbet phones at phone midpoints → phoneme rates per TR.
  Labels outside the 39 (silences, noise, empty) are ignored.
- ``wordrate``: a 1 at each word midpoint → words per TR.
- ``fbank``: log mel filterbank energies — 40 HTK-mel triangles (20 Hz – Nyquist, unnormalised, as
  Kaldi/torchaudio FBANK) over the power spectrum of 25 ms periodic-Hann frames every 10 ms,
  ``log(max(E, 1e-10))``, at frame centres: ``(n_frames, 40)``.
- ``mfcc``: the first 13 coefficients of the orthonormal DCT-II (``scipy.fft.dct(type=2,
  norm="ortho")``) of the 40 ``fbank`` log energies (no liftering, c0 kept): ``(n_frames, 13)``.
- ``diphones`` / ``triphones``: one row per phone n-gram (2 / 3 consecutive 39-ARPAbet phones) at the
  centre of its span (first onset … last offset), a 1 in column ``crc32("P1 P2[ P3]") % 256``
  (:func:`core.features.phonology.ngram_column`: deterministic, dataset-independent; distinct
  n-grams may share a column). ``scope="story"`` (default): consecutive phones of the story's phone
  sequence (silences and non-phones are not phones, so n-grams span pauses and word boundaries);
  ``scope="word"``: only n-grams whose phones' midpoints fall in one word. → n-gram rates per TR,
  ``(n_ngrams, 256)``.
- ``articulation``: panphon's 24 phonological features (+1/−1/0) of each phone at its midpoint
  (:mod:`core.features.phonology`: ARPAbet → IPA, diphthongs = mean of their two segments):
  ``(n_phones, 24)`` → summed per TR.
- ``phonemerate``: a 1 at each phone midpoint (the 39 phones) → phones per TR, ``(n_phones, 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Mapping, Sequence

import numpy as np

from core.data.base import SAMPLE_RATE, Events
from core.data.textgrid import clean_phone
from core.errors import ConfigError, DataError
from core.features.base import TimedFeatures, register
from core.progress import ProgressFn, report
from core.store import key_hash

CODE_TAG = "lowlevel-v1"  #: bump when a space's meaning changes (invalidates cached features)

#: The 39 ARPAbet phones (CMUdict set, stress digits stripped), the paper's phoneme inventory.
PHONES = ("AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G",
          "HH", "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T",
          "TH", "UH", "UW", "V", "W", "Y", "Z", "ZH")


@dataclass(frozen=True)
class Space:
    """One feature space: ``fn(dataset, story, **params) -> TimedFeatures`` and its defaults."""

    fn: Callable[..., TimedFeatures]
    params: Mapping = field(default_factory=dict)


class SpaceSource:
    """A :class:`core.features.base.FeatureSource` for one entry of a table of spaces.

    Parameters
    ----------
    prefix : spec prefix (``"lowlevel"``, ``"semantic"``).
    name : the space's name in ``table``.
    table : name → :class:`Space`.
    code_tag : code-version tag hashed into the fingerprint.
    """

    def __init__(self, prefix: str, name: str, table: Mapping[str, Space], code_tag: str):
        if name not in table:
            known = ", ".join(f"{prefix}:{n}" for n in sorted(table))
            raise ConfigError(f"unknown feature space {prefix}:{name}; expected one of {known}")
        self.spec = f"{prefix}:{name}"
        self.name = name
        self.space = table[name]
        self.code_tag = code_tag

    def layers(self) -> list:
        """The single layer, named like the space."""
        return [self.name]

    def fingerprint(self) -> str:
        """``key_hash(spec, params, code tag)``."""
        return key_hash(self.spec, dict(self.space.params), self.code_tag)

    def compute(self, dataset, story: str, layers: Sequence[str] = (),
                progress: ProgressFn = None) -> Dict[str, TimedFeatures]:
        """``{name: TimedFeatures}`` of ``story`` (``layers`` must be empty or ``[name]``)."""
        bad = [layer for layer in layers if layer != self.name]
        if bad:
            raise ConfigError(f"{self.spec} has the single layer {self.name!r}, not {bad}")
        report(progress, 0.0, f"{self.spec} {story}")
        feats = self.space.fn(dataset, story, **self.space.params)
        report(progress, 1.0, f"{self.spec} {story}")
        return {self.name: feats}

    def __repr__(self) -> str:
        return f"SpaceSource({self.spec!r})"


# -- spaces -------------------------------------------------------------------------------------

def powspec(dataset, story: str, n_bands: int, win_s: float, hop_s: float) -> TimedFeatures:
    """Mel-band power spectrum at frame centres: ``(n_frames, n_bands)`` log(1 + power).

    Paper's "power spectrum" low-level space; 32 bands, 25 ms windows, 10 ms hop by default.
    """
    from core.features.spectral import mel_band_envelopes

    audio = np.asarray(dataset.audio(story), dtype=np.float32)
    if audio.ndim != 1 or len(audio) < int(round(win_s * SAMPLE_RATE)):
        raise DataError(f"audio of {story!r} has shape {audio.shape}; need a mono waveform longer "
                        f"than one {win_s * 1000:.0f} ms window")
    times, env = mel_band_envelopes(audio, SAMPLE_RATE, n_bands=n_bands, win_s=win_s, hop_s=hop_s)
    return TimedFeatures(times=times, values=env.astype(np.float32))


def phonemes(dataset, story: str) -> TimedFeatures:
    """One-hot ``(n_phones, 39)`` of the ARPAbet phones at their midpoints (others ignored)."""
    ev = dataset.phones(story)
    index = {p: i for i, p in enumerate(PHONES)}
    cols = np.array([index.get(clean_phone(lab) or "", -1) for lab in ev.labels], dtype=np.int64)
    keep = cols >= 0
    values = np.zeros((int(keep.sum()), len(PHONES)), dtype=np.float32)
    values[np.arange(len(values)), cols[keep]] = 1.0
    return TimedFeatures(times=np.asarray(ev.mids, dtype=np.float64)[keep], values=values)


def wordrate(dataset, story: str) -> TimedFeatures:
    """``(n_words, 1)`` ones at word midpoints (Lanczos sum → words per TR)."""
    ev = dataset.words(story)
    return TimedFeatures(times=np.asarray(ev.mids, dtype=np.float64),
                         values=np.ones((len(ev), 1), dtype=np.float32))


def phonemerate(dataset, story: str) -> TimedFeatures:
    """``(n_phones, 1)`` ones at the midpoints of the 39 ARPAbet phones (→ phones per TR)."""
    labels, on, off = _phone_sequence(dataset.phones(story))
    return TimedFeatures(times=(on + off) / 2, values=np.ones((len(labels), 1), dtype=np.float32))


def _phone_sequence(ev: Events) -> tuple:
    """(labels, onsets, offsets) of the events that are one of the 39 phones, sorted by onset."""
    keep = [i for i, lab in enumerate(ev.labels) if (clean_phone(lab) or "") in _PHONE_INDEX]
    on = np.asarray(ev.onsets, dtype=np.float64)[keep]
    off = np.asarray(ev.offsets, dtype=np.float64)[keep]
    labels = [clean_phone(ev.labels[i]) for i in keep]
    order = np.argsort(on, kind="stable")
    return [labels[i] for i in order], on[order], off[order]


_PHONE_INDEX = {p: i for i, p in enumerate(PHONES)}

# -- spectral spaces ----------------------------------------------------------------------------

_LOG_FLOOR = 1e-10  #: log(max(E, floor)) of the mel energies (silence stays finite)
_FRAME_BLOCK = 4096  #: frames per block (bounded memory on long stories)


def log_mel_energies(audio: np.ndarray, sample_rate: int = SAMPLE_RATE, n_mels: int = 40,
                     win_s: float = 0.025, hop_s: float = 0.010, fmin: float = 20.0,
                     fmax: float | None = None) -> tuple:
    """Log mel filterbank energies of a mono waveform.

    Frames of ``win_s`` (400 samples at 16 kHz) every ``hop_s`` (160), starting at sample 0, the
    last frame the last full one; each frame times a periodic Hann window
    (``scipy.signal.get_window("hann", n)``), ``|rfft|²`` with ``n_fft = n`` (no padding, no
    normalisation), HTK-mel triangular filters from ``fmin`` to ``fmax`` (Nyquist) without area
    normalisation (``transformers.audio_utils.mel_filter_bank(norm=None, mel_scale="htk")``), then
    ``log(max(E, 1e-10))``.

    Returns
    -------
    times : ``(n_frames,)`` float64 seconds, frame centres. logmel : ``(n_frames, n_mels)`` float64.
    """
    from numpy.lib.stride_tricks import sliding_window_view
    from scipy.signal import get_window
    from transformers.audio_utils import mel_filter_bank

    x = np.asarray(audio, dtype=np.float64)
    n = int(round(win_s * sample_rate))
    hop = int(round(hop_s * sample_rate))
    if x.ndim != 1 or len(x) < n:
        raise DataError(f"audio has shape {x.shape}; need a mono waveform longer than one "
                        f"{win_s * 1000:.0f} ms window")
    frames = sliding_window_view(x, n)[::hop]
    window = get_window("hann", n)
    fb = mel_filter_bank(num_frequency_bins=n // 2 + 1, num_mel_filters=n_mels, min_frequency=fmin,
                         max_frequency=fmax or sample_rate / 2, sampling_rate=sample_rate, norm=None,
                         mel_scale="htk")
    out = np.empty((len(frames), n_mels))
    for i in range(0, len(frames), _FRAME_BLOCK):
        spec = np.abs(np.fft.rfft(frames[i:i + _FRAME_BLOCK] * window, n=n, axis=1)) ** 2
        out[i:i + _FRAME_BLOCK] = np.log(np.maximum(spec @ fb, _LOG_FLOOR))
    times = (np.arange(len(frames)) * hop + n / 2) / sample_rate
    return times, out


def _audio(dataset, story: str) -> np.ndarray:
    audio = np.asarray(dataset.audio(story), dtype=np.float32)
    if audio.ndim != 1:
        raise DataError(f"audio of {story!r} has shape {audio.shape}; need a mono waveform")
    return audio


def fbank(dataset, story: str, n_mels: int, win_s: float, hop_s: float) -> TimedFeatures:
    """FBANK: ``(n_frames, n_mels)`` log mel energies at frame centres (:func:`log_mel_energies`;
    40 bands, 25 ms / 10 ms by default). Units: natural log of power (unnormalised |rfft|²)."""
    try:
        times, logmel = log_mel_energies(_audio(dataset, story), SAMPLE_RATE, n_mels, win_s, hop_s)
    except DataError as err:
        raise DataError(f"audio of {story!r}: {err}") from None
    return TimedFeatures(times=times, values=logmel.astype(np.float32))


def mfcc(dataset, story: str, n_mfcc: int, n_mels: int, win_s: float, hop_s: float) -> TimedFeatures:
    """MFCC: ``(n_frames, n_mfcc)`` — ``dct(logmel, type=2, norm="ortho")[:, :n_mfcc]`` of the
    ``fbank`` log energies (13 of 40 by default; c0 kept, no lifter). Dimensionless cepstra."""
    from scipy.fft import dct

    if not 1 <= n_mfcc <= n_mels:
        raise ConfigError(f"mfcc needs 1 <= n_mfcc <= n_mels, got {n_mfcc} and {n_mels}")
    try:
        times, logmel = log_mel_energies(_audio(dataset, story), SAMPLE_RATE, n_mels, win_s, hop_s)
    except DataError as err:
        raise DataError(f"audio of {story!r}: {err}") from None
    cep = dct(logmel, type=2, norm="ortho", axis=1)[:, :n_mfcc]
    return TimedFeatures(times=times, values=cep.astype(np.float32))


# -- phone n-grams and articulation -------------------------------------------------------------

def phone_ngrams(labels: Sequence[str], onsets: np.ndarray, offsets: np.ndarray, n: int,
                 groups: Sequence | None = None) -> tuple:
    """Consecutive phone ``n``-grams: ``(ngrams [tuple], centres (k,) seconds)``.

    ``groups`` (one id per phone, e.g. its word index; None = one group): an n-gram is kept only
    when all its phones share a group id (and no id is None).
    """
    grams, centres = [], []
    for i in range(len(labels) - n + 1):
        if groups is not None:
            g = groups[i:i + n]
            if g[0] is None or any(x != g[0] for x in g):
                continue
        grams.append(tuple(labels[i:i + n]))
        centres.append((onsets[i] + offsets[i + n - 1]) / 2)
    return grams, np.asarray(centres, dtype=np.float64)


def _word_of(phone_mids: np.ndarray, words: Events) -> list:
    """Index of the word whose [onset, offset) holds each phone midpoint (None outside words)."""
    on = np.asarray(words.onsets, dtype=np.float64)
    off = np.asarray(words.offsets, dtype=np.float64)
    order = np.argsort(on, kind="stable")
    on, off = on[order], off[order]
    idx = np.searchsorted(on, phone_mids, side="right") - 1
    return [int(order[j]) if j >= 0 and m < off[j] else None for j, m in zip(idx, phone_mids)]


def _ngram_space(dataset, story: str, n: int, n_columns: int, scope: str) -> TimedFeatures:
    from core.features.phonology import ngram_column

    if scope not in ("story", "word"):
        raise ConfigError(f"phone n-gram scope must be 'story' or 'word', got {scope!r}")
    if n_columns < 1:
        raise ConfigError(f"phone n-grams need n_columns >= 1, got {n_columns}")
    labels, on, off = _phone_sequence(dataset.phones(story))
    groups = _word_of((on + off) / 2, dataset.words(story)) if scope == "word" else None
    grams, centres = phone_ngrams(labels, on, off, n, groups)
    values = np.zeros((len(grams), n_columns), dtype=np.float32)
    cols = np.array([ngram_column(g, n_columns) for g in grams], dtype=np.int64)
    values[np.arange(len(grams)), cols] = 1.0
    return TimedFeatures(times=centres, values=values)


def diphones(dataset, story: str, n_columns: int, scope: str) -> TimedFeatures:
    """Hashed diphone indicators ``(n_diphones, n_columns)`` at diphone centres (module docstring)."""
    return _ngram_space(dataset, story, 2, n_columns, scope)


def triphones(dataset, story: str, n_columns: int, scope: str) -> TimedFeatures:
    """Hashed triphone indicators ``(n_triphones, n_columns)`` at triphone centres (module docstring)."""
    return _ngram_space(dataset, story, 3, n_columns, scope)


def articulation(dataset, story: str) -> TimedFeatures:
    """panphon phonological features ``(n_phones, 24)`` (+1/−1/0; diphthongs averaged) at phone
    midpoints, columns in :func:`core.features.phonology.feature_names` order."""
    from core.features.phonology import articulation_table

    table = articulation_table()
    labels, on, off = _phone_sequence(dataset.phones(story))
    values = np.stack([table[p] for p in labels]) if labels else np.zeros((0, 24), dtype=np.float32)
    return TimedFeatures(times=(on + off) / 2, values=values.astype(np.float32))


#: name → space; add a space with one function above and one entry here.
SPACES: Dict[str, Space] = {
    "powspec": Space(powspec, {"n_bands": 32, "win_s": 0.025, "hop_s": 0.010}),
    "phonemes": Space(phonemes),
    "wordrate": Space(wordrate),
    "fbank": Space(fbank, {"n_mels": 40, "win_s": 0.025, "hop_s": 0.010}),
    "mfcc": Space(mfcc, {"n_mfcc": 13, "n_mels": 40, "win_s": 0.025, "hop_s": 0.010}),
    "diphones": Space(diphones, {"n_columns": 256, "scope": "story"}),
    "triphones": Space(triphones, {"n_columns": 256, "scope": "story"}),
    "articulation": Space(articulation),
    "phonemerate": Space(phonemerate),
}


@register("lowlevel")
def lowlevel_source(name: str) -> SpaceSource:
    """Factory for ``lowlevel:<name>`` specs (see :data:`SPACES`)."""
    return SpaceSource("lowlevel", name, SPACES, CODE_TAG)
