"""The one Dataset API every data source implements.

A dataset holds stories (16 kHz mono audio, word and phone events with onset/offset seconds, TR
timing) and subjects (responses per story ``(n_trs, n_voxels)`` float32, a voxel → cortex mapping
for flatmaps, ROI masks), the test story with its individual repeats, and a train / validation /
test split.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Iterable, Mapping, Optional

import numpy as np

from core.data import timing
from core.errors import DataError

SAMPLE_RATE = 16_000  #: Hz, the rate every story's audio is served at (paper: audio resampled to 16 kHz)


@dataclass(frozen=True)
class Events:
    """Labelled intervals on the audio time base.

    labels : list of str, length ``n``; onsets, offsets : ``(n,)`` float64 seconds.
    """

    labels: list
    onsets: np.ndarray
    offsets: np.ndarray

    @property
    def mids(self) -> np.ndarray:
        """Interval midpoints, ``(n,)`` seconds (HuthLab's event time stamps)."""
        return (self.onsets + self.offsets) / 2.0

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class SurfaceMapping:
    """How a subject's response columns map onto a pycortex subject.

    ``cortex_subject`` / ``xfm`` name a pycortex subject and transform; ``mask`` names the
    transform's mask ("thick", "thin", …) whose voxel count equals ``n_voxels``; ``filestore`` is
    the pycortex database folder (None = pycortex's default, which ships S1).
    """

    cortex_subject: str
    xfm: str
    mask: str
    filestore: Optional[Path] = None


@dataclass(frozen=True)
class SurfaceSpace:
    """How a subject's response columns sit on a standard surface mesh (surface datasets).

    ``mesh`` names the mesh the data live on for maps (``"fsaverage5"``, shipped inside nilearn);
    ``vertices`` ``(n_voxels,)`` int64 gives, for response column ``i``, its vertex index in the
    concatenated left + right hemispheres (left = ``0 … n_per_hemi - 1``); vertices without data
    (medial wall, NaN) are simply absent. ``n_per_hemi`` = 10,242 for fsaverage5.
    """

    mesh: str
    vertices: np.ndarray
    n_per_hemi: int

    @property
    def n_vertices(self) -> int:
        return 2 * self.n_per_hemi

    def to_mesh(self, values: np.ndarray, fill: float = np.nan) -> np.ndarray:
        """Per-column ``values`` ``(n_voxels,)`` → per-vertex ``(2 * n_per_hemi,)`` float (``fill``
        where a vertex has no column)."""
        values = np.asarray(values)
        if values.shape != self.vertices.shape:
            raise DataError(f"{values.shape[0] if values.ndim else 0} values do not match the "
                            f"{self.vertices.shape[0]} surface vertices of this subject")
        out = np.full(self.n_vertices, fill, dtype=np.float64)
        out[self.vertices] = values
        return out


def _no_voxels() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


@dataclass
class VoxelReport:
    """Voxels dropped from analysis, per subject: four disjoint index arrays (int64, sorted).

    A voxel is listed under the first rule it breaks, in this order:

    ``nan``
        a non-finite value (NaN or ±inf) anywhere in the subject's ``data`` of any story;
    ``constant``
        constant over time in some story's ``data`` (0/0 after per-story z-scoring);
    ``nonfinite_repeats``
        a non-finite value anywhere in the test story's ``individual_repeats`` (real ds003020
        has them; :func:`core.encoding.ceiling.noise_ceiling` refuses them);
    ``constant_repeats``
        constant over time in some repeat (its noise ceiling is undefined).

    ``n_voxels`` : all voxels of the subject.
    """

    n_voxels: int
    nan: np.ndarray = field(default_factory=_no_voxels)
    constant: np.ndarray = field(default_factory=_no_voxels)
    nonfinite_repeats: np.ndarray = field(default_factory=_no_voxels)
    constant_repeats: np.ndarray = field(default_factory=_no_voxels)

    FIELDS = ("nan", "constant", "nonfinite_repeats", "constant_repeats")  #: the dropped-voxel arrays

    @property
    def dropped(self) -> np.ndarray:
        """Sorted indices of every dropped voxel ``(n_dropped,)``."""
        return np.flatnonzero(~self.valid)

    @property
    def valid(self) -> np.ndarray:
        """Boolean mask ``(n_voxels,)`` of voxels kept."""
        keep = np.ones(self.n_voxels, dtype=bool)
        for name in self.FIELDS:
            keep[getattr(self, name)] = False
        return keep

    def counts(self) -> dict:
        """``{field: number of voxels}`` for each of :attr:`FIELDS`."""
        return {name: int(len(getattr(self, name))) for name in self.FIELDS}

    def summary(self) -> str:
        """One line, e.g. ``"3 of 300 voxels dropped: 1 NaN/inf and 1 constant in the responses,
        1 NaN/inf and 0 constant in the test-story repeats"``."""
        c = self.counts()
        return (f"{self.n_voxels - int(self.valid.sum())} of {self.n_voxels} voxels dropped: "
                f"{c['nan']} NaN/inf and {c['constant']} constant in the responses, "
                f"{c['nonfinite_repeats']} NaN/inf and {c['constant_repeats']} constant in the "
                "test-story repeats")


def scan_voxels(n_voxels: int, responses: Iterable[np.ndarray],
                repeats: Iterable[np.ndarray] = ()) -> VoxelReport:
    """The one voxel-dropping rule (:class:`VoxelReport`), streamed over arrays.

    Parameters
    ----------
    n_voxels : voxels of the subject.
    responses : iterable of ``(n_trs, n_voxels)`` arrays — the subject's ``data`` per story.
    repeats : iterable of ``(n_trs, n_voxels)`` arrays — each individual repeat of the test story
        (empty when the subject has none). One array at a time is held, so memory stays bounded.

    Returns
    -------
    VoxelReport with disjoint ``nan`` / ``constant`` / ``nonfinite_repeats`` / ``constant_repeats``.

    Raises
    ------
    DataError
        An array is not ``(n_trs, n_voxels)``.
    """
    masks = {name: np.zeros(int(n_voxels), dtype=bool) for name in VoxelReport.FIELDS}
    for kind, arrays in (("", responses), ("_repeats", repeats)):
        bad, const = masks["nan" if not kind else "nonfinite_repeats"], masks["constant" + kind]
        for y in arrays:
            y = np.asarray(y)
            if y.ndim != 2 or y.shape[1] != int(n_voxels):
                raise DataError(f"voxel scan: an array of shape {y.shape} does not match "
                                f"(n_trs, {int(n_voxels)}) voxels; the subject's files disagree")
            finite = np.isfinite(y)
            bad |= ~finite.all(axis=0)
            y = np.where(finite, y, np.nan)
            with warnings.catch_warnings():  # all-NaN columns: flagged as non-finite above
                warnings.simplefilter("ignore", RuntimeWarning)
                const |= np.nanmin(y, axis=0) == np.nanmax(y, axis=0)
    taken = np.zeros(int(n_voxels), dtype=bool)
    out = {}
    for name in VoxelReport.FIELDS:  # disjoint: each voxel under the first rule it breaks
        m = masks[name] & ~taken
        out[name] = np.flatnonzero(m)
        taken |= m
    return VoxelReport(n_voxels=int(n_voxels), **out)


class Dataset:
    """Abstract dataset. Subclasses fill the attributes and implement the methods below.

    Attributes
    ----------
    spec : str — the data spec it was opened from (``demo``, ``ds003020:<path>``).
    root : Path — dataset root (folder holding ``stimuli/`` and ``derivative/``).
    tr : float — seconds per TR of the time stamps features are resampled to (2.0, the HuthLab
        simulated convention every published ds003020 result uses).
    scanner_tr : float — seconds between acquisitions on the scanner, used where audio is paired
        with TRs sample by sample (brain-tuning's per-TR snippets). ds003020: 2.0045; the demo:
        its simulated TR (2.0). Defaults to ``tr``.
    skipped : mapping story → reason, for stories left out of ``stories`` for every subject
        because a file is missing (empty when nothing was skipped); see :meth:`skipped_for`.
    stories : list of str — stories with audio and transcript.
    subjects : list of str.
    test_story : str — the held-out story with individual repeats.
    val_story : str or None — validation story (tuning).
    """

    spec: str
    root: Path
    tr: float = timing.TR_SECONDS
    scanner_tr: float = timing.TR_SECONDS
    skipped: Mapping = MappingProxyType({})
    stories: list
    subjects: list
    test_story: str
    val_story: Optional[str] = None

    # -- stories ---------------------------------------------------------------------------
    def audio(self, story: str) -> np.ndarray:
        """Mono float32 waveform at 16 kHz, shape ``(n_samples,)``."""
        raise NotImplementedError

    def words(self, story: str) -> Events:
        """Word events (lower-case labels, fillers and silences dropped)."""
        raise NotImplementedError

    def phones(self, story: str) -> Events:
        """Phone events (ARPAbet, stress digits stripped, upper-case)."""
        raise NotImplementedError

    def n_trs_run(self, story: str) -> int:
        """``R``: TRs of the story's run (``respdict.json``)."""
        raise NotImplementedError

    def tr_stamps(self, story: str) -> np.ndarray:
        """All ``R - 5`` TR time stamps (seconds), before trimming — where features are made."""
        return timing.tr_stamps(self.n_trs_run(story), self.tr)

    def n_trs(self, story: str) -> int:
        """Response rows ``R - 20`` (after the ``[10:-5]`` trim)."""
        return timing.n_response_rows(self.n_trs_run(story))

    # -- subjects --------------------------------------------------------------------------
    def subject_stories(self, subject: str) -> list:
        """Stories with responses for ``subject`` (partial downloads: only those present)."""
        raise NotImplementedError

    def responses(self, subject: str, story: str) -> np.ndarray:
        """Responses ``(n_trs, n_voxels)`` float32 (test story: mean of its repeats)."""
        raise NotImplementedError

    def repeats(self, subject: str, story: Optional[str] = None) -> np.ndarray:
        """Individual repeats of the test story, ``(n_repeats, n_trs, n_voxels)`` float32."""
        raise NotImplementedError

    def n_voxels(self, subject: str) -> int:
        raise NotImplementedError

    def group_responses(self, subject: str, story: Optional[str] = None):
        """The other participants' responses to ``story`` (default: the test story) on
        ``subject``'s columns: an iterable of ``(n_trs, n_voxels)`` float32 arrays (NaN where one
        lacks a column), for the intersubject-correlation noise ceiling
        (:func:`core.encoding.ceiling.subject_isc`) of subjects without repeats. None (the
        default) when the dataset has no such group (ds003020, the demo)."""
        return None

    def n_repeats(self, subject: str) -> int:
        """Number of individual repeats of the test story for ``subject``."""
        return int(self.repeats(subject).shape[0])

    def voxel_report(self, subject: str) -> VoxelReport:
        """Voxels dropped from analysis (:class:`VoxelReport`): non-finite or constant in any
        story's responses or in any repeat of the test story (rule: :func:`scan_voxels`)."""
        raise NotImplementedError

    def skipped_for(self, subject: str) -> list:
        """Stories of ``subject`` left out of its analysis, and why — for provenance and warnings.

        Returns
        -------
        list of ``{"story", "file", "reason", "kind"}`` dicts sorted by story: ``file`` is the
        missing (or unusable) file's path as a string (None when unknown); ``kind`` is ``"story-incomplete"`` (the
        story lacks a stimulus file or respdict entry: skipped for every subject),
        ``"response-missing"`` (a complete story without this subject's response file — a
        partial download) or ``"not-recorded"`` (the published dataset has no such recording
        for this subject: expected, not a loss). The base class lists :attr:`skipped` only.
        """
        return [{"story": s, "file": None, "reason": r, "kind": "story-incomplete"}
                for s, r in sorted(self.skipped.items())]

    def subject_skipped(self, subject: str) -> dict:
        """``{story: reason}`` of :meth:`skipped_for` ``(subject)``."""
        return {d["story"]: d["reason"] for d in self.skipped_for(subject)}

    def surface(self, subject: str) -> Optional[SurfaceMapping]:
        """Voxel → cortex mapping for flatmaps, or None when the dataset has no pycortex-db."""
        raise NotImplementedError

    def surface_space(self, subject: str) -> Optional[SurfaceSpace]:
        """Column → standard-mesh vertex mapping for surface datasets (``demo-group``,
        ``narratives:``; maps drawn with nilearn), None for volume datasets."""
        return None

    def rois(self, subject: str) -> dict:
        """ROI name → boolean mask ``(n_voxels,)``. Always includes ``"cortex"`` (all voxels)."""
        raise NotImplementedError

    # -- split & identity ------------------------------------------------------------------
    def split(self, subject: str) -> dict:
        """``{"train": [...], "val": [...], "test": [test_story]}`` for the subject's stories."""
        have = self.subject_stories(subject)
        val = [self.val_story] if self.val_story in have else []
        train = [s for s in have if s != self.test_story and s not in val]
        return {"train": train, "val": val, "test": [self.test_story] if self.test_story in have else []}

    def fingerprint(self) -> str:
        """Hash identifying the dataset's content (for cache keys)."""
        raise NotImplementedError

    def ground_truth(self, subject: Optional[str] = None) -> Optional[dict]:
        """The simulated brain's planted truth (``ground_truth.npz`` arrays) — of ``subject`` where
        participants differ (``demo-group``); None for real data."""
        return None

    def describe(self) -> dict:
        """The ``datasets describe`` JSON contract of DESIGN.md."""
        return {
            "root": str(self.root),
            "subjects": list(self.subjects),
            "stories": list(self.stories),
            "test_story": self.test_story,
            "n_trs": {s: self.n_trs(s) for s in self.stories},
            "n_voxels": {s: self.n_voxels(s) for s in self.subjects},
            "tr": self.tr,
            "scanner_tr": self.scanner_tr,
            "n_repeats": {s: self.n_repeats(s) for s in self.subjects},
        }
