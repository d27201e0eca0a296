"""The one Dataset API every data source implements.

A dataset holds stories (16 kHz mono audio, word and phone events with onset/offset seconds, TR
timing) and subjects (responses per story ``(n_trs, n_voxels)`` float32, a voxel → cortex mapping
for flatmaps, ROI masks), the test story with its individual repeats, and a train / validation /
test split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from core.data import timing

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


@dataclass
class VoxelReport:
    """Voxels dropped from analysis (NaN anywhere, or constant over time), per subject."""

    n_voxels: int
    nan: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    constant: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def valid(self) -> np.ndarray:
        """Boolean mask ``(n_voxels,)`` of voxels kept."""
        keep = np.ones(self.n_voxels, dtype=bool)
        keep[self.nan] = False
        keep[self.constant] = False
        return keep

    def summary(self) -> str:
        return (f"{len(self.nan)} NaN and {len(self.constant)} constant voxels dropped "
                f"of {self.n_voxels}")


class Dataset:
    """Abstract dataset. Subclasses fill the attributes and implement the methods below.

    Attributes
    ----------
    spec : str — the data spec it was opened from (``demo``, ``ds003020:<path>``).
    root : Path — dataset root (folder holding ``stimuli/`` and ``derivative/``).
    tr : float — seconds per TR (2.0, the HuthLab simulated convention).
    stories : list of str — stories with audio and transcript.
    subjects : list of str.
    test_story : str — the held-out story with individual repeats.
    val_story : str or None — validation story (tuning).
    """

    spec: str
    root: Path
    tr: float = timing.TR_SECONDS
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

    def n_repeats(self, subject: str) -> int:
        """Number of individual repeats of the test story for ``subject``."""
        return int(self.repeats(subject).shape[0])

    def voxel_report(self, subject: str) -> VoxelReport:
        """NaN / constant voxels over all of the subject's responses (dropped from analysis)."""
        raise NotImplementedError

    def surface(self, subject: str) -> Optional[SurfaceMapping]:
        """Voxel → cortex mapping for flatmaps, or None when the dataset has no pycortex-db."""
        raise NotImplementedError

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

    def ground_truth(self) -> Optional[dict]:
        """The demo's planted truth (``ground_truth.npz`` arrays), None for real data."""
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
            "n_repeats": {s: self.n_repeats(s) for s in self.subjects},
        }
