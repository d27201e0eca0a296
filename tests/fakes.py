"""A tiny in-memory :class:`core.data.base.Dataset` for unit tests across the project.

``InMemoryDataset`` is built from arrays (audio, word/phone events, ``R`` per story, responses,
repeats); ``make_dataset`` fills one with seeded synthetic stories (noise audio, a small vocabulary
of real words spoken at a steady rate, their ARPAbet phones, random responses).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from core.data import timing
from core.data.base import SAMPLE_RATE, Dataset, Events, scan_voxels
from core.store import key_hash

#: tiny pronunciation dictionary used by make_dataset (ARPAbet, stress digits stripped)
VOCAB = {
    "the": ["DH", "AH"], "cat": ["K", "AE", "T"], "sat": ["S", "AE", "T"], "on": ["AA", "N"],
    "mat": ["M", "AE", "T"], "dog": ["D", "AO", "G"], "ran": ["R", "AE", "N"],
    "home": ["HH", "OW", "M"], "big": ["B", "IH", "G"], "fish": ["F", "IH", "SH"],
}


def events(labels: Sequence[str], onsets, offsets) -> Events:
    """:class:`Events` from lists (float64 seconds)."""
    return Events(list(labels), np.asarray(onsets, dtype=np.float64), np.asarray(offsets, dtype=np.float64))


@dataclass
class FakeStory:
    """One story: 16 kHz mono audio ``(n_samples,)``, word and phone events, run length ``R``."""

    audio: np.ndarray
    words: Events
    phones: Events
    n_trs_run: int


class InMemoryDataset(Dataset):
    """A :class:`Dataset` held in memory.

    Parameters
    ----------
    stories : story → :class:`FakeStory`.
    responses : subject → story → ``(R - 20, n_voxels)`` (the test story's entry is ignored when
        ``repeats`` has the subject: its responses are then the mean of the repeats).
    repeats : subject → ``(n_repeats, R_test - 20, n_voxels)`` repeats of ``test_story``.
    test_story, val_story : split names (``test_story`` defaults to the last story).
    rois : subject → {roi: bool mask ``(n_voxels,)``}; ``"cortex"`` is always added.
    """

    def __init__(self, stories: Mapping[str, FakeStory], responses: Mapping[str, Mapping] = None,
                 repeats: Mapping[str, np.ndarray] = None, test_story: Optional[str] = None,
                 val_story: Optional[str] = None, rois: Mapping[str, Mapping] = None,
                 spec: str = "memory", tr: float = timing.TR_SECONDS):
        self.spec = spec
        self.root = Path(".")
        self.tr = float(tr)
        self._stories = dict(stories)
        self.stories = list(self._stories)
        self._responses = {s: dict(v) for s, v in (responses or {}).items()}
        self._repeats = dict(repeats or {})
        self.subjects = sorted(set(self._responses) | set(self._repeats))
        self.test_story = test_story if test_story is not None else self.stories[-1]
        self.val_story = val_story
        self._rois = {s: dict(v) for s, v in (rois or {}).items()}
        self._fingerprint = None

    def _story(self, story: str) -> FakeStory:
        if story not in self._stories:
            raise KeyError(f"no story {story!r} in {self.spec}")
        return self._stories[story]

    def audio(self, story):
        return np.asarray(self._story(story).audio, dtype=np.float32)

    def words(self, story):
        return self._story(story).words

    def phones(self, story):
        return self._story(story).phones

    def n_trs_run(self, story):
        return int(self._story(story).n_trs_run)

    def subject_stories(self, subject):
        have = set(self._responses.get(subject, {}))
        if subject in self._repeats:
            have.add(self.test_story)
        return [s for s in self.stories if s in have]

    def responses(self, subject, story):
        if story == self.test_story and subject in self._repeats:
            return self.repeats(subject).mean(0).astype(np.float32)
        return np.asarray(self._responses[subject][story], dtype=np.float32)

    def repeats(self, subject, story=None):
        return np.asarray(self._repeats[subject], dtype=np.float32)

    def n_voxels(self, subject):
        if subject in self._repeats:
            return int(self._repeats[subject].shape[-1])
        return int(next(iter(self._responses[subject].values())).shape[1])

    def voxel_report(self, subject):
        """The datasets' one rule (``core.data.base.scan_voxels``) over responses and repeats."""
        reps = self.repeats(subject) if subject in self._repeats else ()
        return scan_voxels(self.n_voxels(subject),
                           (self.responses(subject, s) for s in self.subject_stories(subject)), list(reps))

    def surface(self, subject):
        return None

    def rois(self, subject):
        out = dict(self._rois.get(subject, {}))
        out["cortex"] = np.ones(self.n_voxels(subject), dtype=bool)
        return out

    def fingerprint(self):
        if self._fingerprint is None:
            h = hashlib.sha1()
            for name, st in self._stories.items():
                for part in (name, st.audio, st.words.labels, st.words.onsets, st.words.offsets,
                             st.phones.labels, st.phones.onsets, st.phones.offsets, st.n_trs_run):
                    h.update(_bytes(part))
            for subject in self.subjects:
                h.update(_bytes(subject))
                for story in self.subject_stories(subject):
                    h.update(_bytes(self.responses(subject, story)))
            self._fingerprint = key_hash(self.spec, self.tr, self.test_story, h.hexdigest())
        return self._fingerprint


def _bytes(part) -> bytes:
    if isinstance(part, np.ndarray):
        return np.ascontiguousarray(part).tobytes() + str(part.shape).encode()
    return repr(part).encode()


def make_story(n_trs_run: int = 36, words_per_tr: float = 2.0, seed: int = 0,
               tr: float = timing.TR_SECONDS, amplitude: float = 0.05) -> FakeStory:
    """A synthetic story of ``R = n_trs_run`` TRs.

    Audio: seeded Gaussian noise × ``amplitude`` lasting ``tr·R − 20`` s (the ds003020 relation).
    Words: :data:`VOCAB` words (seeded order) at a steady ``words_per_tr`` rate, each filling its
    slot; phones split each word's slot evenly.
    """
    rng = np.random.default_rng(seed)
    duration = tr * n_trs_run - 10 * tr
    audio = (amplitude * rng.standard_normal(int(round(duration * SAMPLE_RATE)))).astype(np.float32)
    slot = tr / words_per_tr
    n_words = int(np.floor(duration / slot))
    names = list(VOCAB)
    labels = [names[i] for i in rng.integers(0, len(names), n_words)]
    on = np.arange(n_words) * slot
    ph_lab, ph_on, ph_off = [], [], []
    for w, t0 in zip(labels, on):
        ph = VOCAB[w]
        edges = t0 + slot * np.arange(len(ph) + 1) / len(ph)
        ph_lab += ph
        ph_on += list(edges[:-1])
        ph_off += list(edges[1:])
    return FakeStory(audio=audio, words=events(labels, on, on + slot),
                     phones=events(ph_lab, ph_on, ph_off), n_trs_run=n_trs_run)


def make_dataset(n_stories: int = 3, n_trs_run: int = 36, n_voxels: int = 6,
                 subjects: Sequence[str] = ("S01",), n_repeats: int = 3, seed: int = 0,
                 words_per_tr: float = 2.0) -> InMemoryDataset:
    """``n_stories`` synthetic stories (``story0``…; the last is the test story with repeats).

    Story ``i`` has ``R = n_trs_run + i`` TRs (so lengths differ); responses are seeded N(0, 1).
    """
    rng = np.random.default_rng(seed)
    stories = {f"story{i}": make_story(n_trs_run + i, words_per_tr, seed=seed + i)
               for i in range(n_stories)}
    names = list(stories)
    test = names[-1]
    responses, repeats = {}, {}
    for subject in subjects:
        responses[subject] = {
            s: rng.standard_normal((timing.n_response_rows(st.n_trs_run), n_voxels)).astype(np.float32)
            for s, st in stories.items() if s != test}
        repeats[subject] = rng.standard_normal(
            (n_repeats, timing.n_response_rows(stories[test].n_trs_run), n_voxels)).astype(np.float32)
    return InMemoryDataset(stories, responses, repeats, test_story=test,
                           val_story=names[-2] if n_stories > 2 else None)


class StoryGuard:
    """A dataset wrapper that fails if the test story's audio, transcript or responses are read;
    it records (``read``) the stories whose data were read. Subclass it to forbid more."""

    def __init__(self, inner):
        self._inner = inner
        self.read = set()

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def _guard(self, story):
        if story == self._inner.test_story:
            raise AssertionError(f"test story {story!r} was read")
        self.read.add(story)

    def audio(self, story):
        self._guard(story)
        return self._inner.audio(story)

    def words(self, story):
        self._guard(story)
        return self._inner.words(story)

    def phones(self, story):
        self._guard(story)
        return self._inner.phones(story)

    def responses(self, subject, story):
        self._guard(story)
        return self._inner.responses(subject, story)

    def repeats(self, subject, story=None):
        raise AssertionError("repeats (test story) were read")
