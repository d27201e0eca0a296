"""The :class:`NarrativesDataset`: Narratives (ds002345, DataLad release) behind the Dataset API.

Layout, timing and the known defects are in ``/work/shared/reference/narratives.md``; the time
base is explained in :mod:`core.data.narratives.timing`. Choices:

- stories = audio files ``stimuli/<story>_audio.wav`` with a Gentle ``stimuli/gentle/<story>/
  align.json`` and a single-part ``code/event_meta.json`` entry for their task (slumlordreach's two
  parts are not supported yet: skipped). Scans map to stories by task and condition
  (``milkyway`` + ``synonyms`` → ``milkywaysynonyms``; ``prettymouth`` + ``affair`` →
  ``prettymouth``), conditions from ``sub-XXX_scans.tsv`` or ``participants.tsv``;
- test story = ``pieman`` (14 participants heard it twice) when present, else the story with
  the most subjects; no validation story (every other story trains);
- story window: the story onset of each scan's own ``_events.tsv`` (``rint(onset / tr)``) when
  present — so trigger-shifted scans (sub-038, sub-105) are cut where their story is — else
  ``event_meta.json``'s onset with known fixes (lucy: 2 TRs, not 1); ``duration − 6`` rows;
- subjects = participants with at least one usable scan; voxels = fsaverage5 vertices finite in
  the subject's first scan (the medial wall is NaN); ``surface_space`` maps them on fsaverage5;
- repeats: all runs of the test story (pieman run-1 / run-2); otherwise one;
- :meth:`group_responses` serves the other participants' test-story responses for the ISC ceiling.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from core.data import timing as huth
from core.data.audio import load_audio
from core.data.base import SAMPLE_RATE, Dataset, Events, SurfaceSpace, VoxelReport, scan_voxels
from core.data.digests import FileDigests
from core.data.narratives import meta
from core.data.narratives.scans import Scan, choose_derivative, find_scans, fingerprint, load_scan
from core.data.narratives.timing import INITIAL_TRIM, StoryTiming, story_timing
from core.errors import DataError
from core.store import cached_arrays, key_hash

log = logging.getLogger("core")
TEST_STORY = "pieman"  #: the story with repeats (run-1 / run-2)
VOXEL_REPORT_VERSION = "narratives-voxel-report-v1"
SCAN_CACHE_VERSION = "narratives-fsaverage5-v1"  #: bump when decoding changes
N_PER_HEMI = 10242
LAYOUT_HELP = ("a Narratives root holds participants.tsv, stimuli/<story>_audio.wav, "
               "stimuli/gentle/<story>/align.json, code/event_meta.json and derivatives/afni-nosmooth/")


def _available(names) -> str:
    names = sorted(names)
    return ", ".join(names[:12]) + (f", … ({len(names)} in all)" if len(names) > 12 else "") or "none"


class NarrativesDataset(Dataset):
    """The Narratives dataset in its published layout (module docstring).

    Parameters
    ----------
    root : folder holding ``participants.tsv``.
    spec : data spec (default ``narratives:<root>``).
    derivative : ``"auto"`` (afni-nosmooth, else afni-smooth), ``"afni-nosmooth"`` or
        ``"afni-smooth"``.

    Attributes
    ----------
    timings : ``{story: StoryTiming}``; notes : list of str (how timing was reconciled).
    """

    def __init__(self, root: Path, spec: Optional[str] = None, derivative: str = "auto"):
        root = Path(root).expanduser()
        if not (root / "participants.tsv").is_file():
            raise DataError(f"{root} is not a Narratives root: participants.tsv is missing; {LAYOUT_HELP}")
        self.root = root.resolve()
        self.spec = spec or f"narratives:{self.root}"
        self.event_meta = meta.event_meta(self.root)
        self.excluded = meta.scan_exclude(self.root)
        self.participants = meta.participants(self.root)
        self.derivative = choose_derivative(self.root, derivative)
        self.notes: list = []
        self._records: dict = {}  # subject → [skipped_for records]
        self._conds: dict = {}  # subject → {scan name: condition} of its scans.tsv
        self._find_stories()
        self._map_scans()
        self._reports: dict = {}
        self._vertices: dict = {}
        self._digests: Optional[FileDigests] = None

    # -- construction ------------------------------------------------------------------------
    def _task_of(self, story: str) -> Optional[str]:
        if story in self.event_meta:
            return story
        hits = [t for t in self.event_meta if story.startswith(t)]
        return max(hits, key=len) if hits else None

    def _find_stories(self) -> None:
        stim = self.root / "stimuli"
        self._wav = {p.name[:-len("_audio.wav")]: p for p in stim.glob("*_audio.wav") if p.exists()}
        self._align = {p.parent.name: p for p in stim.glob("gentle/*/align.json") if p.exists()}
        self.skipped, self._lacking = {}, {}
        named = set(self._wav) | set(self._align) | {d.name for d in stim.glob("gentle/*") if d.is_dir()}
        complete = []
        for s in sorted(named):
            task = self._task_of(s)
            lack = [(p, w) for p, w, have in (
                (stim / f"{s}_audio.wav", f"stimuli/{s}_audio.wav", s in self._wav),
                (stim / "gentle" / s / "align.json", f"stimuli/gentle/{s}/align.json", s in self._align),
                (self.root / "code" / "event_meta.json", "a code/event_meta.json entry", task is not None))
                if not have]
            if not lack and len(self.event_meta[task]) != 1:
                lack = [(self.root / "code" / "event_meta.json",
                         f"single-part timing ({task} has parts {sorted(self.event_meta[task])}: "
                         "multi-part stories are not supported yet)")]
            if lack:
                self._lacking[s] = lack[0][0]
                self.skipped[s] = "missing " + ", ".join(w for _, w in lack)
            else:
                complete.append(s)
        self._complete = complete  # before scans are known (timing needs their sidecars)

    def _story_of(self, subject: str, scan_name: str, task: str) -> Optional[str]:
        if subject not in self._conds:
            self._conds[subject] = meta.scans_conditions(self.root, subject)
        cond = self._conds[subject].get(scan_name)
        if cond is None:
            cond = self.participants.get(subject, {}).get(task)
        for cand in ((task + cond) if cond else None, task):
            if cand and (cand in self._complete or cand in self.skipped):
                return cand
        return None

    def _map_scans(self) -> None:
        scans, lacking = find_scans(self.derivative)
        self._scans: dict = {}  # subject → story → [Scan] sorted by run
        for sc in scans:
            story = self._story_of(sc.subject, sc.name, sc.task)
            if story is None or story in self.skipped:
                continue
            if any(sc.name.startswith(p) for p in self.excluded):
                self._record(sc.subject, story, sc.left, f"scan {sc.name} is excluded by "
                             "code/scan_exclude.json (expected)", "excluded")
                continue
            self._scans.setdefault(sc.subject, {}).setdefault(story, []).append(sc)
        heard = {s for b in self._scans.values() for s in b}
        self.timings = {s: self._story_timing(s) for s in self._complete if s in heard}
        self._shift: dict = {}  # scan name → onset TR of that scan
        for subj, by_story in list(self._scans.items()):
            for story, runs in list(by_story.items()):
                keep = []
                for sc in runs:
                    onset = self._scan_onset(sc, story)
                    if onset is None:
                        self._record(subj, story, sc.left, f"scan {sc.name}: its events.tsv has no "
                                     "story event; cannot place the story window", "response-missing")
                        continue
                    self._shift[sc.name] = onset
                    keep.append(sc)
                if keep:
                    by_story[story] = sorted(keep, key=lambda x: x.run or 0)
                else:
                    del by_story[story]
            if not by_story:
                del self._scans[subj]
        self.stories = [s for s in self._complete if any(s in b for b in self._scans.values())]
        for s in self._complete:
            if s not in self.stories:
                self.skipped[s] = "no usable scan of this story under " + self.derivative.name
                self._lacking[s] = self.derivative
        self.subjects = sorted(self._scans)
        if not self.stories or not self.subjects:
            raise DataError(f"no story with usable scans under {self.root} (complete stories: "
                            f"{_available(self._complete)}; {LAYOUT_HELP})")
        self._listed: dict = {}  # subject → stories participants.tsv / scans.tsv list for it
        for subj in self.subjects:  # listed scans whose files are absent
            listed = set(self._conds.get(subj) or {}) or {
                f"{subj}_task-{t}" for t in self.participants.get(subj, {})}
            have = {sc.name for scs in self._scans[subj].values() for sc in scs}
            self._listed[subj] = set()
            for name in sorted(listed):
                m = meta.SCAN_NAME.match(name)
                story = self._story_of(subj, name, m.group(2)) if m else None
                self._listed[subj].add(story)
                if story in self.stories and not any(h == name or h.startswith(name + "_run-")
                                                     for h in have) and \
                        not any(name.startswith(p) for p in self.excluded) and \
                        not any(r["file"] and name in r["file"] for r in self._records.get(subj, [])):
                    f = self.derivative / subj / "func" / \
                        f"{name}_space-fsaverage6_hemi-L_desc-clean.func.gii"
                    why = f"right hemisphere {lacking[name].name} missing" if name in lacking else "missing"
                    self._record(subj, story, f, f"scan {name} is listed but its surface file is {why}",
                                 "response-missing")
                    log.warning("%s: skipped scan %s (%s): listed in participants/scans.tsv but its "
                                "surface data are not under %s", subj, name, f.name, self.derivative)
        self.test_story = TEST_STORY if TEST_STORY in self.stories else max(
            self.stories, key=lambda s: (sum(s in b for b in self._scans.values()), s))
        self.val_story = None
        self.tr = self.scanner_tr = self.timings[self.test_story].tr

    def _record(self, subject, story, path, reason, kind) -> None:
        self._records.setdefault(subject, []).append(
            {"story": story, "file": str(path), "reason": reason, "kind": kind})

    def _story_timing(self, story: str) -> StoryTiming:
        task = self._task_of(story)
        scans = [sc for b in self._scans.values() for sc in b.get(story, [])]
        trs = [t for sc in scans if (t := meta.sidecar_tr(self.root, sc.subject, sc.name, task))]
        events = [e for sc in scans if (e := meta.scan_events(self.root, sc.subject, sc.name, task))]
        words, _ = meta.gentle(self._align[story])
        ((onset, duration),) = self.event_meta[task].values()
        return story_timing(story, task, onset, duration, trs, events, float(words.onsets[0]),
                            self.notes, (self._align[story], self._wav[story]))

    def _scan_onset(self, sc: Scan, story: str) -> Optional[int]:
        t = self.timings[story]
        ev = meta.scan_events(self.root, sc.subject, sc.name, t.task)
        if ev is None:
            return t.onset
        onset_s = next((o for o, _, kind in ev if kind == "story"), None)
        if onset_s is None:
            return None
        onset = int(np.rint(onset_s / t.tr))
        if onset != t.onset:
            log.warning("%s: story onset of %s is %d TRs (%.1f s) in its events.tsv, not %d like the "
                        "other scans (trigger error); its window is cut from the scan's own onset",
                        sc.subject, sc.name, onset, onset_s, t.onset)
        return onset

    # -- stories -----------------------------------------------------------------------------
    def _story(self, story: str) -> str:
        if story in self.stories:
            return story
        if story in self.skipped:
            raise DataError(f"story {story!r} is incomplete under {self.root}: {self.skipped[story]}")
        raise DataError(f"unknown story {story!r} under {self.root}; available: {_available(self.stories)}")

    def story_tr(self, story: str) -> float:
        """Seconds per TR of ``story``'s scans (``RepetitionTime``; 1.52 for milkywaysynonyms)."""
        return self.timings[self._story(story)].tr

    def n_trs_run(self, story: str) -> int:
        """``R = n_trs + 20``: the project's run length whose ``[10:-5]``-trimmed stamps are the
        story's response rows (see :mod:`core.data.narratives.timing`)."""
        return self.timings[self._story(story)].n_trs + huth.RUN_EXTRA_TRS

    def tr_stamps(self, story: str) -> np.ndarray:
        """``(R − 5,)`` stamps (s, served-audio time) at the story's own TR."""
        return huth.tr_stamps(self.n_trs_run(story), self.story_tr(story))

    def audio(self, story: str) -> np.ndarray:
        """The story's WAV at 16 kHz mono float32, from ``crop`` seconds on (zero-padded when the
        WAV starts later than the served time 0)."""
        x = load_audio(self._wav[self._story(story)])
        t = self.timings[story]
        n = int(round(t.crop * SAMPLE_RATE))
        x = x[n:] if n >= 0 else np.concatenate([np.zeros(-n, np.float32), x])
        need = (t.n_trs + huth.SCAN_LEAD_TRS) * t.tr  # end of the last response row's acquisition
        if len(x) / SAMPLE_RATE < need - 2 * t.tr:
            log.warning("%s ends %.1f s before the end of the %s window (%d TRs from scan TR %d); "
                        "the last TRs get silent features — check the WAV and code/event_meta.json",
                        self._wav[story], need - len(x) / SAMPLE_RATE, story, t.duration, t.onset)
        return x

    def _events(self, story: str, which: int) -> Events:
        ev = meta.gentle(self._align[self._story(story)])[which]
        c = self.timings[story].crop
        keep = ev.onsets - c >= 0
        labels = [lab for lab, k in zip(ev.labels, keep) if k]
        return Events(labels, ev.onsets[keep] - c, ev.offsets[keep] - c)

    def words(self, story: str) -> Events:
        """Aligned words (Gentle ``success``), lower-case, on the served audio's time base."""
        return self._events(story, 0)

    def phones(self, story: str) -> Events:
        """Aligned phones (ARPAbet, suffixes and stress stripped) on the served audio's time base."""
        return self._events(story, 1)

    # -- subjects ----------------------------------------------------------------------------
    def _subject(self, subject: str) -> dict:
        if subject not in self._scans:
            raise DataError(f"unknown subject {subject!r} under {self.root}; available: "
                            f"{_available(self.subjects)}")
        return self._scans[subject]

    def subject_stories(self, subject: str) -> list:
        have = self._subject(subject)
        return [s for s in self.stories if s in have]

    def vertices(self, subject: str) -> np.ndarray:
        """fsaverage5 vertex indices ``(n_voxels,)`` int64 of ``subject``'s columns: those finite at
        every time point of its first scan (medial wall dropped); cached on disk by the scan's
        content digest, so :meth:`describe` reads each subject's first scan once."""
        if subject not in self._vertices:
            by_story = self._subject(subject)
            first = min((sc for scs in by_story.values() for sc in scs), key=lambda sc: sc.name)
            key = key_hash(VOXEL_REPORT_VERSION, self._scan_key(first))
            self._vertices[subject] = cached_arrays("narratives-vertices", key, lambda: {
                "v": np.flatnonzero(np.isfinite(self._load(first)).all(axis=0))})["v"]
        return self._vertices[subject]

    def _scan_key(self, sc: Scan) -> str:
        """Content hash of a scan's two GIfTIs (digests memoised by stat; annex keys)."""
        if self._digests is None:
            self._digests = FileDigests(self.root, tag="narratives")
        return key_hash(SCAN_CACHE_VERSION, self._digests.digest([sc.left, sc.right]))

    def _load(self, sc: Scan) -> np.ndarray:
        return load_scan(sc, self._scan_key(sc))

    def n_voxels(self, subject: str) -> int:
        return int(len(self.vertices(subject)))

    def _window(self, sc: Scan, story: str) -> np.ndarray:
        """Rows of ``sc`` for ``story`` on all 20484 vertices, ``(n_trs, 20484)`` float32."""
        data = self._load(sc)
        start, n = self._shift[sc.name] + INITIAL_TRIM, self.timings[story].n_trs
        if start < 0 or data.shape[0] < start + n:
            raise DataError(f"{sc.left} has {data.shape[0]} time points but the {story} window needs "
                            f"rows {start}..{start + n - 1}; the scan is truncated or its events.tsv "
                            "is wrong — re-download it")
        return data[start:start + n]

    def _runs(self, subject: str, story: str) -> list:
        runs = self._subject(subject).get(self._story(story))
        if not runs:
            raise DataError(f"no scan of {subject} for {story!r}; {subject} has: "
                            f"{_available(self.subject_stories(subject))}")
        return runs

    def repeats(self, subject: str, story: Optional[str] = None) -> np.ndarray:
        """All runs of ``story`` (default the test story), ``(n_runs, n_trs, n_voxels)`` float32."""
        story = self.test_story if story is None else story
        v = self.vertices(subject)
        return np.stack([self._window(sc, story)[:, v] for sc in self._runs(subject, story)])

    def responses(self, subject: str, story: str) -> np.ndarray:
        """``(n_trs, n_voxels)`` float32: the story window (mean over runs where there are several)."""
        return self.repeats(subject, story).mean(axis=0)

    def n_repeats(self, subject: str) -> int:
        return len(self._subject(subject).get(self.test_story, []))

    def group_responses(self, subject: str, story: Optional[str] = None) -> Optional[Iterator]:
        """The other participants' responses to ``story`` (default the test story) on ``subject``'s
        columns, one ``(n_trs, n_voxels)`` float32 array each (their first run; NaN where they lack
        a vertex) — for the leave-one-subject-out ISC ceiling. None when nobody else heard it."""
        story = self._story(self.test_story if story is None else story)
        others = [s for s in self.subjects if s != subject and story in self._scans[s]]
        if not others:
            return None
        v = self.vertices(subject)

        def gen():
            for o in others:
                yield self._window(self._scans[o][story][0], story)[:, v]
        return gen()

    def voxel_report(self, subject: str) -> VoxelReport:
        """Voxels dropped (rule: :func:`core.data.base.scan_voxels`) over every story and, with
        ≥ 2 runs of the test story, its repeats; cached in memory and on disk."""
        if subject not in self._reports:
            n = self.n_voxels(subject)
            stories = self.subject_stories(subject)

            def scan():
                reps = self.repeats(subject) if self.n_repeats(subject) >= 2 else ()
                rep = scan_voxels(n, (self.responses(subject, s) for s in stories), reps)
                return {f: getattr(rep, f) for f in VoxelReport.FIELDS}
            key = key_hash(VOXEL_REPORT_VERSION, self.fingerprint(), subject)
            arrays = cached_arrays("voxel-report", key, scan)
            self._reports[subject] = VoxelReport(n_voxels=n, **{f: arrays[f] for f in VoxelReport.FIELDS})
        return self._reports[subject]

    def skipped_for(self, subject: str) -> list:
        """Stories left out for ``subject``: skipped stories (``story-incomplete``), listed scans
        without files (``response-missing``, also warned at open), excluded scans (``excluded``)
        and stories it never heard (``not-recorded``)."""
        have = self._subject(subject)
        out = [{"story": s, "file": str(self._lacking[s]), "reason": r, "kind": "story-incomplete"}
               for s, r in self.skipped.items() if self._lacking[s] != self.derivative]
        out += [{"story": s, "file": str(self.derivative), "reason": r, "kind": (
            "response-missing" if s in self._listed.get(subject, ()) else "not-recorded")}
                for s, r in self.skipped.items() if self._lacking[s] == self.derivative]
        out += [dict(r) for r in self._records.get(subject, [])]
        noted = {r["story"] for r in out}
        out += [{"story": s, "file": None, "reason": f"{subject} did not hear {s!r} (expected)",
                 "kind": "not-recorded"} for s in self.stories if s not in have and s not in noted]
        return sorted(out, key=lambda r: (r["story"], r["kind"]))

    # -- surfaces ----------------------------------------------------------------------------
    def surface(self, subject: str):
        """None: Narratives lives on fsaverage (see :meth:`surface_space`), not in pycortex."""
        return None

    def surface_space(self, subject: str) -> SurfaceSpace:
        return SurfaceSpace(mesh="fsaverage5", vertices=self.vertices(subject).astype(np.int64),
                            n_per_hemi=N_PER_HEMI)

    def rois(self, subject: str) -> dict:
        """``core.data.fsaverage.standard_rois()`` on the subject's vertices, plus ``"cortex"``."""
        from core.data.fsaverage import standard_rois

        v = self.vertices(subject)
        out = {name: np.asarray(m, dtype=bool)[v] for name, m in standard_rois().items()}
        out["cortex"] = np.ones(len(v), dtype=bool)
        return out

    # -- identity ----------------------------------------------------------------------------
    def describe(self) -> dict:
        out = super().describe()
        out["story_tr"] = {s: self.story_tr(s) for s in self.stories}
        out["derivative"] = self.derivative.name
        return out

    def fingerprint(self, progress=None) -> str:
        """sha1 (16 hex) of the metadata files' bytes and the content digests (memoised by stat,
        annex keys for DataLad links) of the WAVs, align.json files and the chosen derivative's
        surface files (:func:`core.data.narratives.scans.fingerprint`)."""
        if self._digests is None:
            self._digests = FileDigests(self.root, tag="narratives")
        return fingerprint(self.root, self.derivative, self._digests, progress)
