"""Story timing of the Narratives reader: from scan time to the project's TR-stamp convention.

Scan time ``s`` (seconds from the first kept volume) and the story window: the authors' window is
scan TRs ``[onset, onset + duration)`` of ``code/event_meta.json`` (rint(seconds / 1.5)), and they
drop ``INITIAL_TRIM = 6`` more TRs at its start; so response row ``i`` is scan TR
``onset + 6 + i``, ``n_trs = duration − 6`` rows.

The project's convention (``core.data.timing``, HuthLab): response row ``i`` sits at stamp
``k = i + 10`` with time ``tr·(k − 4.5)`` on the story's audio time base, and there are ``R − 5``
stamps for a "run" of ``R = n_trs + 20``. Both agree when the served audio's time 0 is scan time
``(onset + 1)·tr``: row ``i`` is acquired over scan ``[(onset + 6 + i)·tr, …+tr)`` = audio
``[(i + 5)·tr, (i + 6)·tr)``, midpoint ``tr·(i + 5.5)``. The reader therefore serves each story's
WAV from ``crop = (onset + 1)·tr − audio_offset`` seconds on (``audio_offset`` = scan time of WAV
time 0) and shifts the Gentle times by ``−crop``. What is cut (music, and the story's first TR) is
heard only during the 6 trimmed TRs; the 1–4-TR FIR delays of the first kept row reach back to
audio time ``tr``, inside the served audio.

Per-story TR: each story uses its scans' ``RepetitionTime`` (1.52 s for milkyway synonyms) for its
stamps; ``Dataset.tr`` / ``scanner_tr`` are the test story's (1.5 s).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Optional

import numpy as np

from core.data import timing as huth
from core.data.narratives import meta
from core.errors import DataError

INITIAL_TRIM = 6  #: TRs the Narratives authors drop after the story onset
#: the first aligned word may start at most this long after the story onset (s) …
MAX_WORD_LEAD_S = 12.0
#: … and not earlier than this before it (s; one TR of rounding in the onsets)
WORD_EARLY_TOL_S = 1.6


@dataclass(frozen=True)
class StoryTiming:
    """Timing of one story (all scans of it, before per-scan trigger shifts).

    ``onset`` / ``duration``: scan TRs of the story window; ``tr``: seconds; ``audio_offset``:
    scan time (s) of WAV time 0; ``source``: how ``audio_offset`` was found (for notes).
    """

    task: str
    onset: int
    duration: int
    tr: float
    audio_offset: float
    source: str

    @property
    def n_trs(self) -> int:
        """Response rows after the authors' 6-TR trim."""
        return self.duration - INITIAL_TRIM

    @property
    def crop(self) -> float:
        """Seconds of the WAV cut from its start so that the project's stamp convention holds."""
        return (self.onset + 1) * self.tr - self.audio_offset


def reconcile_offset(story: str, first_word: float, story_onset_s: float,
                     first_event_s: Optional[float]) -> tuple:
    """Scan time of WAV time 0 such that the first aligned word falls just after the story onset.

    Candidates, in order: the first event's onset in the events.tsv (the WAV holds everything the
    scan played, music included: pieman), the story onset (the WAV is the story alone), the scan
    start. The first candidate for which ``candidate + first_word`` lies in ``[story_onset −
    WORD_EARLY_TOL_S, story_onset + MAX_WORD_LEAD_S]`` wins.

    Returns
    -------
    ``(audio_offset_s, source, warning or None)``; ``audio_offset_s`` is None when no candidate
    fits (the caller raises, naming the files).
    """
    cands = []
    if first_event_s is not None:
        cands.append((float(first_event_s), "first event of the events.tsv"))
    cands += [(float(story_onset_s), "story onset"), (0.0, "scan start")]
    seen = set()
    for i, (c, src) in enumerate(cands):
        if c in seen:
            continue
        seen.add(c)
        lead = c + first_word - story_onset_s
        if -WORD_EARLY_TOL_S <= lead <= MAX_WORD_LEAD_S:
            warn = None if i == 0 else (
                f"{story}: WAV time 0 taken as the {src} ({c:.2f} s scan time), not the "
                f"{cands[0][1]} ({cands[0][0]:.2f} s): only then does the first aligned word "
                f"({first_word:.2f} s into the WAV) start {lead:.2f} s after the story onset")
            return c, src, warn
    return None, "", None


def story_timing(story: str, task: str, onset: int, duration: int, trs: list, events: list,
                 first_word: float, notes: list, files: tuple) -> StoryTiming:
    """The :class:`StoryTiming` of ``story`` from its metadata.

    Parameters
    ----------
    story, task : names. onset, duration : ``code/event_meta.json`` entry (TRs).
    trs : ``RepetitionTime`` of each of its scans' sidecars (s; may be empty).
    events : each scan's events ``[(onset_s, duration_s, trial_type)]`` (may be empty).
    first_word : start (s, WAV time) of the first aligned word of its ``align.json``.
    notes : list the reconciliations are appended to (one line each).
    files : ``(align.json path, WAV path)`` for messages.

    Rules: TR = the most common sidecar TR (else :data:`meta.KNOWN_TR`, else 1.5 s); onset = the
    most common ``rint(story onset / TR)`` over the scans' events (trigger-shifted scans are handled
    per scan), else event_meta's with :data:`meta.ONSET_FIXES`; WAV placement by
    :func:`reconcile_offset` (a warning when not the first candidate; DataError when none fits).
    """
    tr = Counter(trs).most_common(1)[0][0] if trs else meta.KNOWN_TR.get(story, meta.DEFAULT_TR)
    if not trs:
        notes.append(f"{story}: no BOLD sidecar; TR {tr} s assumed")
    pairs = [(ev[0][0], next((o for o, _, t in ev if t == "story"), None)) for ev in events if ev]
    pairs = [(first, s) for first, s in pairs if s is not None]
    if pairs:
        onset_ev = Counter(int(np.rint(s / tr)) for _, s in pairs).most_common(1)[0][0]
        first_ev, onset_s = next((f, s) for f, s in pairs if int(np.rint(s / tr)) == onset_ev)
        if onset_ev != onset:
            notes.append(f"{story}: story onset {onset_ev} TRs from the events.tsv files "
                         f"(code/event_meta.json says {onset})")
        onset = onset_ev
    else:
        fix = meta.ONSET_FIXES.get(story)
        if fix is not None and onset != fix:
            notes.append(f"{story}: onset {fix} TRs, not event_meta.json's {onset} (its events "
                         "moved from 2.0 to 3.0 s in release 1.1.3)")
            onset = fix
        first_ev, onset_s = None, onset * tr
    offset, src, warn = reconcile_offset(story, first_word, onset_s, first_ev)
    if offset is None:
        raise DataError(f"{files[0]}: its first aligned word ({first_word:.2f} s into "
                        f"{files[1].name}) cannot be placed near the story onset ({onset_s:.2f} s "
                        "scan time) whether the WAV starts at the first event, the story onset or "
                        "the scan start; check the WAV, align.json and the events.tsv files")
    if warn:
        logging.getLogger("core").warning("%s", warn)
        notes.append(warn)
    if duration <= INITIAL_TRIM + huth.TRIM_END:
        raise DataError(f"code/event_meta.json gives {story} a duration of {duration} TRs; more "
                        f"than {INITIAL_TRIM + huth.TRIM_END} are needed")
    return StoryTiming(task, int(onset), int(duration), float(tr), float(offset), src)
