"""Speech for the demo stories: espeak-ng (from ``espeakng-loader``) with word and phone timings.

espeak-ng is driven through ctypes in synchronous mode with phoneme events on
(``espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS=2, 0, data_path, 0x0001)``); its callback receives
16-bit samples at 22,050 Hz and events (1 = word, 7 = phoneme, 0 = end of list) whose
``audio_position`` is in ms from the start of the utterance. Stories are spoken one sentence at
a time (``espeakENDPAUSE`` keeps each sentence's final pause), so every word event maps to a
known word by its character position. Hand-written because no maintained
Python package exposes espeak-ng's word/phoneme timing events.

Timings: a phone lasts from its event to the next phoneme event (pauses included) or the end of
the utterance; a word lasts from its word event to the end of its last phone. espeak phoneme
names are converted to ARPAbet (39 phones, upper-case, no stress digits — ds003020's TextGrid
convention) with :data:`ESPEAK_TO_ARPABET`; r-coloured diphthongs and syllabic consonants
become two ARPAbet phones sharing the interval equally, and so does a zero-length phone event
with the phone before it (espeak folds e.g. a final "l" into the vowel). Pauses and modifiers
(:data:`NON_PHONES`) are dropped; any other unknown name is dropped and counted.
"""

from __future__ import annotations

import ctypes
import threading
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from core.data.base import SAMPLE_RATE
from core.errors import DataError

ESPEAK_RATE = 22_050  #: Hz, espeak-ng's output rate
OUT_RATE = SAMPLE_RATE  #: Hz, the dataset's audio rate (22,050 → 16,000 = ×320/441)

#: The 39-phone ARPAbet set (CMUdict, no stress digits).
ARPABET = frozenset(
    "AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW "
    "V W Y Z ZH".split())

#: espeak-ng English phoneme mnemonics (stress marks ``'`` / ``,`` removed) → ARPAbet phones.
ESPEAK_TO_ARPABET = {
    # vowels (en-us)
    "@": "AH", "@2": "AH", "@5": "AH", "@-": "AH", "V": "AH", "a#": "AH",
    "3": "ER", "3:": "ER",
    "a": "AE", "aa": "AE",
    "A:": "AA", "0": "AA", "A": "AA",
    "E": "EH", "I": "IH", "I#": "IH", "I2": "IH",
    "i": "IY", "i:": "IY",
    "O": "AO", "O:": "AO", "O2": "AO",
    "OI": "OY", "oU": "OW", "oU#": "OW", "U": "UH", "u:": "UW", "u": "UW",
    "aI": "AY", "aU": "AW", "eI": "EY",
    # r-coloured / triphthongs / syllabic consonants → two phones
    "A@": "AA R", "O@": "AO R", "o@": "AO R", "e@": "EH R", "U@": "UH R", "i@3": "IH R",
    "i@": "IY AH", "aI@": "AY AH", "aI3": "AY ER", "aU@": "AW ER",
    "@L": "AH L", "n-": "AH N", "m-": "AH M", "l-": "AH L",
    # consonants
    "b": "B", "d": "D", "d#": "D", "D": "DH", "dZ": "JH", "f": "F", "g": "G", "h": "HH",
    "j": "Y", "k": "K", "x": "K", "l": "L", "m": "M", "n": "N", "N": "NG", "p": "P",
    "r": "R", "r-": "R", "s": "S", "S": "SH", "t": "T", "t#": "T", "?": "T", "T": "TH",
    "tS": "CH", "v": "V", "w": "W", "hw": "W", "z": "Z", "z#": "Z", "Z": "ZH",
}

#: espeak events that are not phones: pauses and prosodic/palatal modifiers (dropped silently).
NON_PHONES = frozenset({"", "_", "_:", "_!", "_^_", "_|", ";", ":", "#", "||", "|"})

_EV_END, _EV_WORD, _EV_PHONEME = 0, 1, 7
_ENDPAUSE = 0x1000  #: espeak_Synth flag: keep the sentence-final pause (sentences are spoken one by one)
_LOCK = threading.Lock()


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """``espeak_EVENT`` from ``speak_lib.h``."""

    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))


class _Engine:
    """The process-wide espeak-ng instance (the library is a singleton)."""

    def __init__(self):
        try:
            import espeakng_loader
        except ImportError as err:  # pragma: no cover - requirements pin it
            raise DataError(f"espeak-ng is unavailable ({err}); pip install espeakng-loader") from err
        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        rate = self.lib.espeak_Initialize(2, 0, espeakng_loader.get_data_path().encode(), 0x0001)
        if rate != ESPEAK_RATE:
            raise DataError(f"espeak-ng initialisation returned {rate} (expected {ESPEAK_RATE} Hz); "
                            "reinstall espeakng-loader==0.2.4")
        self.chunks: list = []
        self.events: list = []
        self._cb = _CALLBACK(self._collect)  # keep a reference: ctypes must not free it
        self.lib.espeak_SetSynthCallback(self._cb)

    def _collect(self, wav, n, events) -> int:
        if n > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != _EV_END:
            e = events[i]
            name = bytes(e.id.string).split(b"\0")[0].decode("ascii", "replace") \
                if e.type == _EV_PHONEME else ""
            self.events.append((e.type, e.text_position, e.audio_position, name))
            i += 1
        return 0

    def speak(self, text: str, voice: str, rate_wpm: int) -> tuple:
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise DataError(f"espeak-ng has no voice {voice!r}; use e.g. 'en-us'")
        self.lib.espeak_SetParameter(1, int(rate_wpm), 0)  # espeakRATE, absolute
        self.chunks, self.events = [], []
        data = text.encode("utf-8")
        self.lib.espeak_Synth(ctypes.c_char_p(data), len(data) + 1, 0, 0, 0, _ENDPAUSE, None, None)
        self.lib.espeak_Synchronize()
        audio = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)
        return audio.astype(np.int16), list(self.events)


@lru_cache(maxsize=1)
def _engine() -> _Engine:
    return _Engine()


def reset_random(seed: int = 1) -> None:
    """Seed espeak-ng's noise generators (its own and libc's ``rand``). Not enough on its own for
    identical audio: the waveform generator also keeps state between utterances, so a build
    speaks each story in a fresh process."""
    lib = _engine().lib
    if hasattr(lib, "espeak_ng_SetRandSeed"):
        lib.espeak_ng_SetRandSeed(ctypes.c_long(seed))
    ctypes.CDLL(None).srand(ctypes.c_uint(seed))


def to_arpabet(name: str) -> list:
    """ARPAbet phones for one espeak phoneme name; ``[]`` for pauses/modifiers.

    Raises ``KeyError`` for a name neither in :data:`ESPEAK_TO_ARPABET` nor :data:`NON_PHONES`.
    """
    base = name.replace("'", "").replace(",", "")
    if base in NON_PHONES:
        return []
    if base not in ESPEAK_TO_ARPABET:
        raise KeyError(name)
    return ESPEAK_TO_ARPABET[base].split()


@dataclass
class Utterance:
    """A spoken stretch of text.

    audio : ``(n,)`` int16 at 22,050 Hz. words / phones : lists of ``(onset_s, offset_s, label)``
    relative to the start of ``audio``. dropped : counts of espeak names not written as phones.
    """

    audio: np.ndarray
    words: list
    phones: list
    dropped: Counter = field(default_factory=Counter)

    @property
    def duration(self) -> float:
        return len(self.audio) / ESPEAK_RATE


def speak_sentence(words: list, voice: str = "en-us", rate_wpm: int = 160) -> Utterance:
    """Speak one sentence of lower-case alphabetic ``words``; word labels are ``words``.

    Raises DataError if espeak does not report exactly one word event per word.
    """
    starts, pos = [], 1  # espeak's text_position is 1-based
    for w in words:
        starts.append(pos)
        pos += len(w) + 1
    text = " ".join(words)
    text = text[:1].upper() + text[1:] + "."
    with _LOCK:
        audio, events = _engine().speak(text, voice, rate_wpm)
    end_ms = 1000.0 * len(audio) / ESPEAK_RATE
    word_at = {p: i for i, p in enumerate(starts)}
    # (type, word index, ms, name) for word and phoneme events, in order
    seq, cur, seen = [], -1, []
    for etype, tpos, ms, name in events:
        if etype == _EV_WORD:
            if tpos not in word_at:
                raise DataError(f"espeak-ng word event at character {tpos} of {text!r} matches no word")
            cur = word_at[tpos]
            seen.append(cur)
            seq.append(("w", cur, float(ms), ""))
        elif etype == _EV_PHONEME:
            seq.append(("p", cur, float(ms), name))
    if seen != list(range(len(words))):
        raise DataError(f"espeak-ng spoke {len(seen)} word events for {len(words)} words in {text!r}")
    phone_times = [s[2] for s in seq if s[0] == "p"] + [end_ms]
    spans, dropped, k = [], Counter(), 0  # spans: [onset_ms, offset_ms, arpabet list, word]
    for kind, wi, ms, name in seq:
        if kind != "p":
            continue
        k += 1
        try:
            arpa = to_arpabet(name)
        except KeyError:
            dropped[name] += 1
            continue
        if not arpa:
            continue
        if phone_times[k] > ms and wi >= 0:
            spans.append([ms, phone_times[k], list(arpa), wi])
        elif spans and spans[-1][3] == wi:  # zero-length phone: shares the previous interval
            spans[-1][2] += arpa
        else:
            dropped[name] += 1
    phones, last_end = [], {}
    for on, off, arpa, wi in spans:
        edges = np.linspace(on, off, len(arpa) + 1) / 1000.0
        phones += [(float(edges[j]), float(edges[j + 1]), arpa[j]) for j in range(len(arpa))]
        last_end[wi] = off
    word_on = {wi: ms for kind, wi, ms, _ in seq if kind == "w"}
    out_words = []
    for i, w in enumerate(words):
        nxt = word_on.get(i + 1, end_ms)
        off = last_end.get(i, nxt)
        out_words.append((word_on[i] / 1000.0, min(off, nxt) / 1000.0, w))
    return Utterance(audio=audio, words=out_words, phones=phones, dropped=dropped)


def speak_text(text: str, voice: str = "en-us", rate_wpm: int = 165) -> np.ndarray:
    """Free text spoken by espeak-ng, ``(n,)`` float32 at 16 kHz (no word/phone timing checks).

    For test sentences and benchmarks; stories use :func:`speak_sentence`, which also returns the
    word and phone events.
    """
    from core.data.audio import resample_to

    with _LOCK:
        audio, _ = _engine().speak(text, voice, rate_wpm)
    return resample_to(audio.astype(np.float32) / 32768.0, ESPEAK_RATE, SAMPLE_RATE)


@dataclass
class SpokenStory:
    """A story's 16 kHz audio ``(n,)`` float32 with word/phone events ``(onset_s, offset_s, label)``."""

    audio: np.ndarray
    words: list
    phones: list
    dropped: Counter

    @property
    def duration(self) -> float:
        return len(self.audio) / OUT_RATE


def join(utterances: list) -> SpokenStory:
    """Concatenate utterances, shift their events, resample 22,050 → 16,000 Hz."""
    from core.data.audio import resample_to

    words, phones, dropped, t0, parts = [], [], Counter(), 0, []
    for u in utterances:
        shift = t0 / ESPEAK_RATE
        words += [(a + shift, b + shift, w) for a, b, w in u.words]
        phones += [(a + shift, b + shift, p) for a, b, p in u.phones]
        dropped.update(u.dropped)
        parts.append(u.audio)
        t0 += len(u.audio)
    raw = np.concatenate(parts).astype(np.float64) / 32768.0 if parts else np.zeros(0)
    audio = resample_to(raw, ESPEAK_RATE, OUT_RATE)  # polyphase, ×320/441
    return SpokenStory(audio=np.clip(audio, -1.0, 1.0), words=words, phones=phones, dropped=dropped)
