"""Reader for the OpenNeuro ds003020 layout (LeBel et al. 2023), also used by the demo dataset.

Dataset root = the folder holding ``stimuli/`` and ``derivative/`` (``../shared/reference/
ds003020.md``)::

    stimuli/<story>.wav                               any rate / channels (mixed, resampled)
    derivative/TextGrids/<story>.TextGrid             phone + word tiers
    derivative/respdict.json                          {story: R}
    derivative/preprocessed_data/<SUBJ>/<story>.hf5   "data" (R - 20, n_voxels) float64
                                                      test story: "individual_repeats"
    derivative/pycortex-db/<SUBJ>/                    optional pycortex subject (flatmaps, ROIs)
    derivative/subject_xfms.json                      optional {SUBJ: transform name}
    derivative/split.json                             optional {"test": story, "val": story}
                                                      (our extension; the demo writes it)
    derivative/scanner_tr.json                        optional {"scanner_tr": seconds}
                                                      (our extension; default 2.0045 s)

Partial downloads work: a story is used when its wav, TextGrid and respdict entry are all present;
a subject is a folder under ``preprocessed_data`` holding ``.hf5`` files. What is left out is
recorded, never dropped silently: :attr:`Ds003020Dataset.skipped` (stories lacking a stimulus file
or respdict entry) and :meth:`Ds003020Dataset.skipped_for` (per subject, also complete stories
without that subject's ``.hf5``). Everything is read lazily; file headers (hf5 shapes, wav sizes)
are enough for :meth:`describe`. A file that opens but cannot be read (truncated, corrupt chunks)
raises :class:`DataError` naming it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from core.data import timing
from core.data.audio import load_audio
from core.data.base import SAMPLE_RATE, Dataset, Events, SurfaceMapping, VoxelReport, scan_voxels
from core.data.digests import FileDigests
from core.data.layout import respdict_path, responses_dir, stimuli_dir, textgrid_dir
from core.data.textgrid import read_phones, read_words
from core.errors import DataError, StudioError
from core.progress import ProgressFn
from core.store import cached_arrays, key_hash

PAPER_TEST_STORY = "wheretheressmoke"  #: held-out story with repeats (LeBel et al. 2023)
PAPER_VAL_STORY = "stagefright"  #: validation story of the paper's split
DURATION_TOLERANCE_TRS = 2.0  #: |audio duration − (tr·R − 20 s)| allowed, in TRs
VOXEL_REPORT_VERSION = "voxel-report-v2"  #: cache tag; bump when the dropping rule changes
#: seconds between acquisitions on the ds003020 scanner (LeBel et al. 2023; brain-tuning pairs
#: audio with TRs at this rate); ``tr`` (2.0 s) stays the stamp convention of the released data
SCANNER_TR_SECONDS = 2.0045
SCANNER_TR_FILE = "scanner_tr.json"  #: optional override under derivative/: {"scanner_tr": seconds}
FINGERPRINT_VERSION = "ds-fingerprint-v2"  #: names + sizes + content digests (v1: names + sizes)
#: stories recorded for UTS05–08 in ds003020 (UTS04: these minus "life"); UTS01–03 have all 84
STORIES_27 = frozenset((
    "adollshouse", "adventuresinsayingyes", "alternateithicatom", "avatar", "buck", "exorcism",
    "eyespy", "fromboyhoodtofatherhood", "hangtime", "haveyoumethimyet", "howtodraw", "inamoment",
    "itsabox", "legacy", "life", "myfirstdaywiththeyankees", "naked", "odetostepfather", "sloth",
    "souls", "stagefright", "swimmingwithastronauts", "thatthingonmyarm",
    "theclosetthatateeverything", "tildeath", "undertheinfluence", "wheretheressmoke"))
RECORDED = {**{f"UTS0{i}": STORIES_27 for i in (5, 6, 7, 8)}, "UTS04": STORIES_27 - {"life"}}
#: annexed files (datalad / git-annex) link to objects named by a content key: the key is the digest
READ_ERRORS = (OSError, KeyError, ValueError, RuntimeError)  #: what h5py raises on damaged files
LAYOUT_HELP = ("a ds003020 root holds stimuli/<story>.wav and derivative/ with TextGrids/, "
               "respdict.json and preprocessed_data/<SUBJ>/<story>.hf5")


def check_layout(root: Path) -> Path:
    """Return ``root`` resolved if it looks like a ds003020 root, else raise DataError."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"ds003020 root {root} does not exist or is not a folder; {LAYOUT_HELP}")
    missing = [d for d in ("stimuli", "derivative") if not (root / d).is_dir()]
    if missing:
        raise DataError(f"{root} is not a ds003020 root: missing {' and '.join(m + '/' for m in missing)}"
                        f"; {LAYOUT_HELP}")
    return root.resolve()


def _available(names, limit: int = 12) -> str:
    names = sorted(names)
    shown = ", ".join(names[:limit]) + (f", … ({len(names)} in all)" if len(names) > limit else "")
    return shown or "none"


@contextlib.contextmanager
def _reading(path: Path, what: str) -> Iterator[None]:
    """Turn h5py's errors while reading ``what`` of an opened ``path`` into one-line DataErrors."""
    try:
        yield
    except READ_ERRORS as err:
        msg = " ".join(str(err).split())
        raise DataError(f"cannot read {what} of {path} ({type(err).__name__}: {msg}); the file is "
                        "truncated or corrupt — re-download it") from None


class Ds003020Dataset(Dataset):
    """A dataset in the ds003020 layout (see the module docstring).

    Parameters
    ----------
    root : folder holding ``stimuli/`` and ``derivative/``.
    spec : data spec it was opened from (default ``ds003020:<root>``).

    Attributes
    ----------
    skipped : dict story → reason, for stories named by ``respdict.json``, a TextGrid or a
        subject's ``.hf5`` that lack a file (partial downloads) and are therefore not in
        ``stories``. Per subject (also complete stories lacking its ``.hf5``): :meth:`skipped_for`.
    scanner_tr : float — 2.0045 s, or ``derivative/scanner_tr.json``'s ``"scanner_tr"``.
    roi_notes : dict subject → why :meth:`rois` gave what it gave (e.g. no pycortex-db).
    """

    DEFAULT_SCANNER_TR = SCANNER_TR_SECONDS  #: used when derivative/scanner_tr.json is absent

    def __init__(self, root: Path, spec: Optional[str] = None):
        self.root = check_layout(root)
        self.spec = spec or f"ds003020:{self.root}"
        self.respdict = self._read_respdict()
        self.scanner_tr = self._read_scanner_tr()
        # exists() follows links: datalad/git-annex files not fetched yet are broken links = absent
        wavs = {p.stem for p in stimuli_dir(self.root).glob("*.wav") if p.exists()}
        grids = {p.stem for p in textgrid_dir(self.root).glob("*.TextGrid") if p.exists()}
        pre = self.root / "derivative" / "preprocessed_data"
        self._hf5 = {}
        if pre.is_dir():
            for d in sorted(p for p in pre.iterdir() if p.is_dir()):
                files = {f.stem: f for f in d.glob("*.hf5") if f.exists()}
                if files:
                    self._hf5[d.name] = files
        self.subjects = sorted(self._hf5)
        self.stories = sorted(wavs & grids & set(self.respdict))
        # a story is named by a TextGrid, a respdict entry or a subject's .hf5 (a lone wav, e.g.
        # the localizer, is not); named but incomplete → skipped, with the files it lacks
        named = grids | set(self.respdict) | {s for files in self._hf5.values() for s in files}
        self.skipped = {}
        self._lacking: dict = {}  # story → [(missing file, what)] for skipped stories
        for s in sorted(named - set(self.stories)):
            lack = [(path, what) for path, what, have in (
                (stimuli_dir(self.root) / f"{s}.wav", f"stimuli/{s}.wav", wavs),
                (textgrid_dir(self.root) / f"{s}.TextGrid", f"derivative/TextGrids/{s}.TextGrid", grids),
                (respdict_path(self.root), "a respdict.json entry", self.respdict)) if s not in have]
            self._lacking[s] = lack
            self.skipped[s] = "missing " + ", ".join(what for _, what in lack)
        if not self.stories:
            raise DataError(f"no complete story under {self.root} (each needs stimuli/<story>.wav, "
                            "derivative/TextGrids/<story>.TextGrid and a respdict.json entry)")
        if not self.subjects:
            raise DataError(f"no responses under {pre} (expected <SUBJ>/<story>.hf5); "
                            "download derivative/preprocessed_data for at least one subject")
        self.test_story, self.val_story = self._choose_split()
        self._shapes: dict = {}
        self._reports: dict = {}
        self._digests: Optional[FileDigests] = None  # content digests, memoised by stat
        self.roi_notes: dict = {}

    # -- construction helpers -------------------------------------------------------------
    def _read_respdict(self) -> dict:
        path = respdict_path(self.root)
        if not path.is_file():
            raise DataError(f"{path} is missing; it ships with ds003020's derivative/ folder "
                            "({story: number of TRs})")
        try:
            raw = json.loads(path.read_text())
            return {str(k): int(v) for k, v in raw.items()}
        except (ValueError, TypeError, AttributeError) as err:
            raise DataError(f"{path} is not a {{story: TRs}} JSON object ({err}); re-download it") from None

    def _read_scanner_tr(self) -> float:
        path = self.root / "derivative" / SCANNER_TR_FILE
        if not path.is_file():
            return type(self).DEFAULT_SCANNER_TR
        try:
            value = json.loads(path.read_text())["scanner_tr"]
        except (ValueError, KeyError, TypeError) as err:
            raise DataError(f"{path} must be {{\"scanner_tr\": seconds}} ({type(err).__name__}: "
                            f"{err}); fix it, or delete it to use {self.DEFAULT_SCANNER_TR} s") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or value <= 0:
            raise DataError(f"{path}: \"scanner_tr\" must be a positive, finite number of seconds, "
                            f"got {value!r}; fix it, or delete it to use {self.DEFAULT_SCANNER_TR} s")
        return float(value)

    def _choose_split(self) -> tuple:
        path = self.root / "derivative" / "split.json"
        if path.is_file():
            try:
                raw = json.loads(path.read_text())
                test, val = raw["test"], raw.get("val")
            except (ValueError, KeyError, TypeError, AttributeError) as err:
                raise DataError(f"{path} must be {{\"test\": story, \"val\": story}} ({err!r})") from None
            test, val = (x[0] if isinstance(x, list) and len(x) == 1 else x for x in (test, val))
            for role, s in (("test", test), ("val", val)):
                if s is not None and s not in self.stories:
                    raise DataError(f"{path} names {role} story {s!r}, which is not a complete story "
                                    f"here; available: {_available(self.stories)}")
            return test, val
        val = PAPER_VAL_STORY if PAPER_VAL_STORY in self.stories else None
        if PAPER_TEST_STORY in self.stories:
            return PAPER_TEST_STORY, val
        for subj in self.subjects:
            for story, f in sorted(self._hf5[subj].items()):
                if story in self.stories:
                    with self._open(f) as h, _reading(f, "the dataset list"):
                        has_repeats = "individual_repeats" in h
                    if has_repeats:
                        return story, (val if val != story else None)
        raise DataError(f"no test story under {self.root}: {PAPER_TEST_STORY} is absent and no .hf5 "
                        "holds 'individual_repeats'; download it or name one in derivative/split.json")

    @staticmethod
    def _open(path: Path):
        import h5py

        try:
            return h5py.File(path, "r")
        except (OSError, RuntimeError) as err:
            msg = " ".join(str(err).split())
            raise DataError(f"cannot read {path} ({msg}); it is corrupt or not fetched — "
                            "re-download it") from None

    # -- stories ---------------------------------------------------------------------------
    def _story(self, story: str) -> str:
        if story in self.stories:
            return story
        if story in self.skipped:
            raise DataError(f"story {story!r} is incomplete under {self.root}: {self.skipped[story]}")
        raise DataError(f"unknown story {story!r} under {self.root}; available: "
                        f"{_available(self.stories)}")

    def n_trs_run(self, story: str) -> int:
        """``R`` of ``story`` from ``respdict.json``."""
        return self.respdict[self._story(story)]

    def audio(self, story: str) -> np.ndarray:
        """Mono float32 16 kHz waveform ``(n_samples,)``; its duration must be ≈ tr·R − 20 s."""
        path = stimuli_dir(self.root) / f"{self._story(story)}.wav"
        audio = load_audio(path)
        r = self.n_trs_run(story)
        duration = len(audio) / SAMPLE_RATE
        expected = self.tr * (r - 2 * timing.SCAN_LEAD_TRS)
        if abs(duration - expected) > DURATION_TOLERANCE_TRS * self.tr:
            raise DataError(f"audio {path} lasts {duration:.1f} s but respdict.json gives R={r} TRs "
                            f"(≈ {expected:.0f} s expected); the wav or respdict.json is wrong — "
                            "re-download the one that does not match")
        return audio

    def words(self, story: str) -> Events:
        return read_words(textgrid_dir(self.root) / f"{self._story(story)}.TextGrid")

    def phones(self, story: str) -> Events:
        return read_phones(textgrid_dir(self.root) / f"{self._story(story)}.TextGrid")

    # -- subjects --------------------------------------------------------------------------
    def _subject(self, subject: str) -> dict:
        if subject not in self._hf5:
            raise DataError(f"unknown subject {subject!r} under {self.root}; available: "
                            f"{_available(self.subjects)}")
        return self._hf5[subject]

    def subject_stories(self, subject: str) -> list:
        files = self._subject(subject)
        return [s for s in self.stories if s in files]

    def _file(self, subject: str, story: str) -> Path:
        files = self._subject(subject)
        story = self._story(story)
        if story not in files:
            raise DataError(f"no responses of {subject} for {story!r} "
                            f"({responses_dir(self.root, subject) / (story + '.hf5')} is missing); "
                            f"{subject} has: {_available(self.subject_stories(subject))}")
        return files[story]

    def _check_rows(self, path: Path, story: str, rows: int) -> None:
        r = self.n_trs_run(story)
        if rows != timing.n_response_rows(r):
            raise DataError(f"{path} has {rows} response rows but respdict.json gives R={r} for "
                            f"{story!r} (expected R-20 = {timing.n_response_rows(r)}); "
                            "the hf5 or respdict.json is wrong — re-download it")

    def _data_shapes(self, subject: str) -> dict:
        """story → ``(rows, n_voxels)`` of the subject's ``data`` (headers only), validated."""
        if subject in self._shapes:
            return self._shapes[subject]
        shapes, first = {}, None
        for story in self.subject_stories(subject):
            path = self._file(subject, story)
            with self._open(path) as h:
                with _reading(path, "the header of 'data'"):
                    shape = h["data"].shape if "data" in h else None
            if shape is None:
                raise DataError(f"{path} has no 'data' dataset; re-download it")
            if len(shape) != 2:
                raise DataError(f"{path}: 'data' has shape {shape}, expected (R-20, n_voxels)")
            self._check_rows(path, story, shape[0])
            if first is not None and shape[1] != first[1]:
                raise DataError(f"{subject}: {path} has {shape[1]} voxels but {first[0]} has "
                                f"{first[1]}; all of a subject's stories must share one voxel set")
            first = first or (path, shape[1])
            shapes[story] = shape
        self._shapes[subject] = shapes
        return shapes

    def n_voxels(self, subject: str) -> int:
        """Voxels of ``subject`` (from hf5 headers; all its stories must agree)."""
        shapes = self._data_shapes(subject)
        if not shapes:
            raise DataError(f"{subject} has no responses for any complete story under {self.root}")
        return int(next(iter(shapes.values()))[1])

    def responses(self, subject: str, story: str) -> np.ndarray:
        """Responses ``(R - 20, n_voxels)`` float32 of ``subject`` for ``story`` (as released:
        z-scored per story; for the test story the mean of its repeats). Read from disk each call
        (the OS page cache makes re-reads cheap; no second copy is held here)."""
        path = self._file(subject, story)
        self.n_voxels(subject)  # validates rows and voxel counts of every story (headers only)
        with self._open(path) as h, _reading(path, "'data'"):
            return h["data"].astype(np.float32)[()]

    def repeats(self, subject: str, story: Optional[str] = None) -> np.ndarray:
        """Individual repeats ``(n_repeats, R - 20, n_voxels)`` float32 of the test story."""
        story = self.test_story if story is None else story
        path = self._file(subject, story)
        with self._open(path) as h:
            ds = self._repeats_dataset(h, path, subject, story)
            with _reading(path, "'individual_repeats'"):
                return ds.astype(np.float32)[()]

    def _repeats_dataset(self, h, path: Path, subject: str, story: str):
        """The validated ``individual_repeats`` h5py dataset of the open file ``h``."""
        n_vox = self.n_voxels(subject)
        with _reading(path, "the header of 'individual_repeats'"):
            ds = h["individual_repeats"] if "individual_repeats" in h else None
            shape = ds.shape if ds is not None else None
        if ds is None:
            raise DataError(f"{path} has no 'individual_repeats'; only the test story has them "
                            f"(test story here: {self.test_story})")
        if len(shape) != 3 or shape[2] != n_vox:
            raise DataError(f"{path}: 'individual_repeats' has shape {shape}, expected "
                            f"(n_repeats, R-20, {n_vox})")
        self._check_rows(path, story, shape[1])
        return ds

    def n_repeats(self, subject: str) -> int:
        """Repeats of the test story for ``subject`` (hf5 header only); 0 when the subject has no
        test-story file or it holds no ``individual_repeats`` (partial downloads)."""
        path = self._subject(subject).get(self.test_story)
        if path is None:
            return 0
        with self._open(path) as h, _reading(path, "the header of 'individual_repeats'"):
            ds = h.get("individual_repeats")
            return int(ds.shape[0]) if ds is not None else 0

    def voxel_report(self, subject: str) -> VoxelReport:
        """Voxels dropped from analysis (rule: :func:`core.data.base.scan_voxels`): non-finite
        (NaN/inf) anywhere in the subject's ``data``, constant over time in any story (0/0 after
        per-story z-scoring), and — when the subject has the test story's
        ``individual_repeats`` — non-finite anywhere in them or constant in some repeat (the
        noise ceiling is undefined there). Reads every story and repeat once, one array at a
        time; the result is cached in memory and on disk (keyed by :meth:`fingerprint`)."""
        if subject not in self._reports:
            n_vox = self.n_voxels(subject)
            key = key_hash(VOXEL_REPORT_VERSION, self.fingerprint(), subject)
            arrays = cached_arrays("voxel-report", key, lambda: self._scan_voxels(subject, n_vox))
            self._reports[subject] = VoxelReport(n_voxels=n_vox, **{
                name: arrays[name] for name in VoxelReport.FIELDS})
        return self._reports[subject]

    def _scan_voxels(self, subject: str, n_vox: int) -> dict:
        stories = self.subject_stories(subject)
        rep = scan_voxels(n_vox, (self.responses(subject, s) for s in stories),
                          self._iter_repeats(subject) if self.test_story in stories else ())
        return {name: getattr(rep, name) for name in VoxelReport.FIELDS}

    def _iter_repeats(self, subject: str) -> Iterator[np.ndarray]:
        """Each repeat ``(R - 20, n_voxels)`` float32 of the test story, read one at a time;
        nothing when the subject's test-story file holds no ``individual_repeats``."""
        path = self._file(subject, self.test_story)
        with self._open(path) as h:
            with _reading(path, "the dataset list"):
                present = "individual_repeats" in h
            if not present:
                return
            ds = self._repeats_dataset(h, path, subject, self.test_story)
            for i in range(ds.shape[0]):
                with _reading(path, f"repeat {i} of 'individual_repeats'"):
                    block = ds[i].astype(np.float32)
                yield block

    def skipped_for(self, subject: str) -> list:
        """Stories left out of ``subject``'s analysis: ``[{"story", "file", "reason", "kind"}]``
        sorted by story (see :meth:`core.data.base.Dataset.skipped_for`). ``kind``:
        ``"story-incomplete"`` (a stimulus file or respdict entry missing; ``file`` = the first
        one), ``"response-missing"`` (a complete story without
        ``preprocessed_data/<SUBJ>/<story>.hf5``) or ``"not-recorded"`` (ds003020 never
        recorded the story for this subject: UTS05–08 heard 27 stories, UTS04 those minus
        ``life``)."""
        files = self._subject(subject)
        out = []
        for s in sorted(set(self.skipped) | (set(self.stories) - set(files))):
            hf5 = responses_dir(self.root, subject) / f"{s}.hf5"
            if s in self.skipped:
                item = {"file": str(self._lacking[s][0][0]), "reason": self.skipped[s],
                        "kind": "story-incomplete"}
                if s in files:
                    item["reason"] += f" ({subject}'s {hf5.name} is present but unused)"
            elif s not in RECORDED.get(subject, (s,)):
                item = {"file": str(hf5), "reason": f"{subject} was not recorded on {s!r} in "
                        "ds003020 (expected)", "kind": "not-recorded"}
            else:
                item = {"file": str(hf5), "reason": f"missing {hf5.relative_to(self.root).as_posix()}",
                        "kind": "response-missing"}
            out.append({"story": s, **item})
        return out

    # -- cortex ----------------------------------------------------------------------------
    def surface(self, subject: str) -> Optional[SurfaceMapping]:
        """pycortex mapping when ``derivative/pycortex-db/<SUBJ>/`` exists (transform from
        ``derivative/subject_xfms.json``, else ``<SUBJ>_auto``; mask "thick"), else None."""
        self._subject(subject)
        db = self.root / "derivative" / "pycortex-db"
        if not (db / subject).is_dir():
            return None
        xfm = f"{subject}_auto"
        xfms_path = self.root / "derivative" / "subject_xfms.json"
        if xfms_path.is_file():
            try:
                xfm = str(json.loads(xfms_path.read_text()).get(subject, xfm))
            except (ValueError, AttributeError) as err:
                raise DataError(f"{xfms_path} must be a {{subject: transform}} JSON object ({err})") from None
        return SurfaceMapping(cortex_subject=subject, xfm=xfm, mask="thick", filestore=db)

    def rois(self, subject: str) -> dict:
        """ROI masks ``{name: (n_voxels,) bool}`` from the pycortex overlays when available, plus
        ``"cortex"`` (all voxels). A missing pycortex-db or an overlay without ROIs gives only
        ``"cortex"``; the reason is kept in ``self.roi_notes[subject]``."""
        n_vox = self.n_voxels(subject)
        masks = {}
        mapping = self.surface(subject)
        notes = self.roi_notes
        if mapping is None:
            notes[subject] = "no pycortex-db for this subject"
        else:
            try:
                from core.data.cortex_rois import roi_masks

                masks = dict(roi_masks(mapping))
                notes[subject] = f"{len(masks)} ROIs from {mapping.filestore / subject}"
            except (ImportError, StudioError, OSError, KeyError, ValueError) as err:
                notes[subject] = f"ROIs unavailable ({type(err).__name__}: {err})"
        for name, m in masks.items():
            if np.shape(m) != (n_vox,):
                raise DataError(f"ROI {name!r} of {subject} has {np.size(m)} voxels but the responses "
                                f"have {n_vox}; transform {mapping.xfm} does not match the data")
        masks = {k: np.asarray(v, dtype=bool) for k, v in masks.items()}
        masks["cortex"] = np.ones(n_vox, dtype=bool)
        return masks

    # -- identity --------------------------------------------------------------------------
    FINGERPRINT_PATTERNS = ("stimuli/*.wav", "derivative/TextGrids/*.TextGrid",
                            "derivative/preprocessed_data/*/*.hf5",
                            "derivative/pycortex-db/*/overlays.svg",
                            "derivative/pycortex-db/*/transforms/*/*")
    SMALL_FILES = ("respdict.json", "split.json", "subject_xfms.json", SCANNER_TR_FILE)

    def fingerprint(self, progress: ProgressFn = None) -> str:
        """sha1 (16 hex) identifying the dataset's content, for cache keys.

        Hashes each data file's path relative to the root, its size and a digest of its full
        content, plus the bytes of the small JSON files (respdict, split, subject_xfms,
        scanner_tr). So it is stable when the root moves or is copied, and changes when any
        byte of a stimulus or response file changes, even at the same size.

        Cost: digests are memoised by stat (``core.data.digests``: an in-place edit with its mtime
        restored is still re-hashed; annexed files use their annex key). The first call on a plain
        20 GB download reads it once (about as long as one :meth:`voxel_report`); ``progress``
        reports it.
        """
        h = hashlib.sha1(FINGERPRINT_VERSION.encode())
        der = self.root / "derivative"
        for name in self.SMALL_FILES:
            if (der / name).is_file():
                h.update(f"{name}\n".encode() + (der / name).read_bytes())
        paths = [p for pat in self.FINGERPRINT_PATTERNS for p in sorted(self.root.glob(pat))
                 if p.is_file()]
        if self._digests is None:
            self._digests = FileDigests(self.root)
        for rel, size, digest in self._digests.digest(paths, progress):
            h.update(f"{rel}\t{size}\t{digest}\n".encode())
        return h.hexdigest()[:16]
