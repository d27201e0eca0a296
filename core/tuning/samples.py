"""Brain-tuning training samples: 10 s of audio paired with one response row (paper-method.md).

How the released code pairs audio with TRs (``bridge-ai-neuro/brain-tuning``, ``src/dataset.py``,
``get_inds2tr_map`` + ``make_delayed``), reproduced here:

- the TR time stamps (spaced by the **scanner** TR, 2.0045 s on ds003020) are shifted by +1 s;
- the snippet of TR ``k`` is the audio between ``int(t[k-1] + 1)`` and ``int(t[k] + 1)`` seconds
  (whole seconds, truncated: sample ``16000·int(·)``), left-zero-padded to 2 s;
- the snippets of TRs ``k-4 … k`` (delays 4 … 0, oldest first) are concatenated → 10 s =
  160,000 samples at 16 kHz.

Mapping to this project's timing (``core.data.timing``; ds003020.md): a run of ``R`` TRs has
``N = R - 5`` simulated TRs; TR ``k`` is acquired over ``[tr·(k-5), tr·(k-4))`` s of audio time and
stamped at its midpoint ``t[k] = tr·(k - 4.5)``. Here ``tr`` is ``dataset.scanner_tr`` (ds003020
2.0045 s, demo 2.0 s), so ``t[k] + 1`` is the end of TR ``k``'s acquisition window at TR = 2 s
(``2k - 8``) and drifts later by ``0.0045·(k - 4.5)`` s on the real scanner TR, as in the released
code. **Response row ``i`` ↔ TR ``k = i + 10``** (the released responses are trimmed ``[10:-5]``),
so row ``i``'s sample holds the snippets of TRs ``i+6 … i+10``; at TR = 2 s that is audio
``[2i + 2, 2i + 12)`` s (ds003020.md: row ``i`` is acquired over ``[2i+10, 2i+12)``). The released
code pairs rows off by 10 in one place (ds003020.md); the pairing above is the consistent one.

Edge rules (where the released code crashes or is undefined): a snippet that starts before the
audio (negative time) reads zeros there; one that runs past the audio's end keeps what exists
(left-padded, as released); one longer than 2 s (a whole-second boundary crossed by the 2.0045 s
spacing: ``int`` differences of 3) keeps its **last** 2 s — the released code would fail to stack it.

``TuningData`` builds the per-split samples of one subject lazily (a 10 s waveform is built from
the story audio when indexed; materialising ds003020's ~8k samples would take ~5 GB). It reads the
responses and audio of the training and validation stories only — never the test story.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

from core.data import timing
from core.errors import ConfigError, DataError

SAMPLE_RATE = 16_000  #: Hz (paper: audio resampled to 16 kHz)
SNIPPET_S = 2  #: whole seconds per TR snippet (released code: 2 s at 16 kHz)
DELAYS = (0, 1, 2, 3, 4)  #: TR delays concatenated (released code: ``range(0, 4 + 1)``)
SHIFT_S = 1.0  #: seconds added to the TR stamps (released code: ``tr_times + 1``)


def snippet_bounds(n_trs_run: int, scanner_tr: float, shift_s: float = SHIFT_S,
                   sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Audio sample bounds of every simulated TR's snippet, as the released code cuts them.

    Parameters
    ----------
    n_trs_run : ``R``, TRs of the story's run (``respdict.json``).
    scanner_tr : seconds between acquisitions (ds003020: 2.0045 s; demo: 2.0 s).
    shift_s : added to the stamps (released code: 1 s). sample_rate : Hz (16000).

    Returns
    -------
    ``(R - 5, 2)`` int64: ``[start, stop)`` samples of TR ``k``'s snippet, ``start =
    sr·floor(t[k-1] + shift)``, ``stop = sr·floor(t[k] + shift)`` with ``t[k] = scanner_tr·(k - 4.5)``
    (``floor`` = the released ``int`` for the non-negative times that rows use). TR 0 has no
    previous stamp: its start is ``stop - 2 s``. May be negative or past the audio (see module).
    """
    t = timing.tr_stamps(n_trs_run, float(scanner_tr)) + float(shift_s)
    ends = np.floor(t).astype(np.int64)
    starts = np.concatenate([[ends[0] - SNIPPET_S], ends[:-1]]) if len(ends) else ends
    return np.stack([starts, ends], axis=1) * int(sample_rate)


def snippet(audio: np.ndarray, start: int, stop: int, length: int) -> np.ndarray:
    """The audio that exists in ``[start, stop)`` (clipped to ``[0, len(audio))``), left-zero-padded
    to ``length`` samples or cut to its last ``length`` samples, as the released code pads
    ``wav[sidx:eidx]``. Returns ``(length,)`` float32."""
    out = np.zeros(length, dtype=np.float32)
    seg = audio[max(int(start), 0):max(min(int(stop), audio.shape[0]), 0)][-length:]
    if seg.shape[0]:
        out[length - seg.shape[0]:] = seg
    return out


def sample_waveform(audio: np.ndarray, bounds: np.ndarray, row: int, delays: Sequence[int] = DELAYS,
                    sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The training waveform of response row ``row``: snippets of TRs ``k - max(delays) … k`` with
    ``k = row + 10`` (oldest first), ``(len(delays)·2·sample_rate,)`` float32 (paper: 160,000).

    ``bounds`` from :func:`snippet_bounds`. A TR before the first simulated TR reads as silence.
    """
    k = int(row) + timing.TRIM_START
    n = SNIPPET_S * int(sample_rate)
    parts = []
    for d in sorted(delays, reverse=True):
        j = k - int(d)
        parts.append(snippet(audio, bounds[j, 0], bounds[j, 1], n) if 0 <= j < len(bounds)
                     else np.zeros(n, np.float32))
    return np.concatenate(parts)


def story_samples(audio: np.ndarray, n_trs_run: int, scanner_tr: float, rows=None,
                  delays: Sequence[int] = DELAYS, shift_s: float = SHIFT_S,
                  sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """All (or ``rows``) training waveforms of one story, ``(n_rows, 160000)`` float32.

    ``audio`` ``(n_samples,)`` 16 kHz mono; rows default to ``0 … R - 21`` (every response row).
    """
    bounds = snippet_bounds(n_trs_run, scanner_tr, shift_s, sample_rate)
    rows = range(timing.n_response_rows(n_trs_run)) if rows is None else rows
    audio = np.asarray(audio, dtype=np.float32)
    return np.stack([sample_waveform(audio, bounds, r, delays, sample_rate) for r in rows])


def zscore_story(y: np.ndarray) -> np.ndarray:
    """Per-column z-score over time (ddof 0) of ``(n_trs, n_voxels)``; a constant column → 0."""
    y = np.asarray(y, dtype=np.float64)
    sd = y.std(0)
    return ((y - y.mean(0)) / np.where(sd > 0, sd, 1.0)).astype(np.float32)


@dataclass
class _Story:
    name: str
    audio: np.ndarray
    bounds: np.ndarray
    targets: np.ndarray  # (n_rows, n_voxels) float32, z-scored


class TuningSplit:
    """One split's samples, a map-style ``torch.utils.data.Dataset`` (duck-typed: ``__len__`` and
    ``__getitem__``).

    ``split[j]`` → ``(waveform (160000,) float32 tensor, target (n_voxels,) float32 tensor)``;
    samples are ordered story by story, row by row. ``index`` ``(n_samples, 2)`` holds (story
    position in ``stories``, response row).
    """

    def __init__(self, stories: List[_Story], delays: Sequence[int], sample_rate: int):
        self._stories = stories
        self.stories = [s.name for s in stories]
        self.delays = tuple(delays)
        self.sample_rate = int(sample_rate)
        self.index = np.array([(i, r) for i, s in enumerate(stories) for r in range(len(s.targets))],
                              dtype=np.int64).reshape(-1, 2)

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def waveform(self, j: int) -> np.ndarray:
        """Waveform of sample ``j``, ``(160000,)`` float32 (numpy)."""
        s, r = self.index[j]
        st = self._stories[s]
        return sample_waveform(st.audio, st.bounds, int(r), self.delays, self.sample_rate)

    def target(self, j: int) -> np.ndarray:
        """Target of sample ``j``, ``(n_voxels,)`` float32 (z-scored per story)."""
        s, r = self.index[j]
        return self._stories[s].targets[r]

    def __getitem__(self, j: int) -> Tuple[object, object]:
        import torch

        if not -len(self) <= j < len(self):
            raise IndexError(j)
        j = j % len(self)
        return torch.from_numpy(self.waveform(j)), torch.from_numpy(self.target(j).copy())

    def arrays(self) -> Tuple[np.ndarray, np.ndarray]:
        """All samples: waveforms ``(n_samples, 160000)`` float32, targets ``(n_samples, n_voxels)``
        float32 (small data only: 640 kB per sample)."""
        x = np.stack([self.waveform(j) for j in range(len(self))]) if len(self) else np.zeros((0, 0))
        y = np.concatenate([s.targets for s in self._stories]) if self._stories else np.zeros((0, 0))
        return x.astype(np.float32), y.astype(np.float32)


class TuningData:
    """Train and validation samples of one subject (training stories; the validation story).

    Attributes
    ----------
    train, val : :class:`TuningSplit`. voxels : ``(n_voxels,)`` int64 target voxel indices.
    subject, scanner_tr (s), delays, report : {"train_stories", "val_stories", "n_train",
    "n_val", "n_voxels", "scanner_tr"}.
    """

    def __init__(self, subject: str, voxels: np.ndarray, splits: Dict[str, TuningSplit],
                 scanner_tr: float):
        self.subject, self.voxels, self.scanner_tr = subject, voxels, float(scanner_tr)
        self.train, self.val = splits["train"], splits["val"]
        self.delays = self.train.delays
        self.report = {"train_stories": self.train.stories, "val_stories": self.val.stories,
                       "n_train": len(self.train), "n_val": len(self.val),
                       "n_voxels": int(len(voxels)), "scanner_tr": self.scanner_tr}

    @classmethod
    def build(cls, dataset, subject: str, voxels, delays: Sequence[int] = DELAYS,
              shift_s: float = SHIFT_S, sample_rate: int = SAMPLE_RATE) -> "TuningData":
        """Samples of ``subject`` for the target ``voxels`` (indices into the response columns).

        Parameters
        ----------
        dataset : :class:`core.data.base.Dataset`; its ``split(subject)`` names the stories and its
            ``scanner_tr`` (s) pairs audio with TRs.
        voxels : sorted unique voxel indices ``(n_voxels,)`` (:mod:`core.tuning.targets`).
        delays : TR delays per sample (paper: 0–4 → 10 s). shift_s : stamp shift (released: 1 s).

        Raises
        ------
        ConfigError : no training or no validation story, bad voxel indices or delays.
        DataError : a story's responses have the wrong number of rows or non-finite target values.
        """
        voxels = _check_voxels(voxels, dataset.n_voxels(subject), subject)
        delays = tuple(int(d) for d in delays)
        if not delays or min(delays) < 0 or len(set(delays)) != len(delays):
            raise ConfigError(f"delays {delays} must be distinct TR counts ≥ 0, e.g. 0,1,2,3,4 (paper)")
        split = dataset.split(subject)
        test = dataset.test_story
        train = [s for s in split["train"] if s != test]
        val = [s for s in split["val"] if s != test]
        if not train:
            raise ConfigError(f"subject {subject!r} of {dataset.spec} has no training story to tune on "
                              "(every story is the test or validation story); add stories")
        if not val:
            raise ConfigError(f"subject {subject!r} of {dataset.spec} has no validation story "
                              f"(val_story={getattr(dataset, 'val_story', None)!r} has no responses); "
                              "tuning needs one for early stopping")
        splits = {name: TuningSplit([_load_story(dataset, subject, s, voxels, shift_s, sample_rate)
                                     for s in stories], delays, sample_rate)
                  for name, stories in (("train", train), ("val", val))}
        return cls(subject, voxels, splits, dataset.scanner_tr)


def _check_voxels(voxels, n_total: int, subject: str) -> np.ndarray:
    v = np.asarray(voxels)
    if v.ndim != 1 or not len(v) or not np.issubdtype(v.dtype, np.integer):
        raise ConfigError(f"target voxels must be a non-empty 1-D array of indices, got shape "
                          f"{v.shape} dtype {v.dtype}; select them with core.tuning.targets")
    if v.min() < 0 or v.max() >= n_total or np.any(np.diff(v) <= 0):
        raise ConfigError(f"target voxel indices must be sorted, unique and in 0..{n_total - 1} "
                          f"(subject {subject!r}); got {v.min()}..{v.max()}")
    return v.astype(np.int64)


def _load_story(dataset, subject: str, story: str, voxels: np.ndarray, shift_s: float,
                sample_rate: int) -> _Story:
    R = dataset.n_trs_run(story)
    y = np.asarray(dataset.responses(subject, story))
    if y.ndim != 2 or y.shape[0] != timing.n_response_rows(R):
        raise DataError(f"responses of {subject}/{story} have shape {y.shape}, expected "
                        f"({timing.n_response_rows(R)}, n_voxels) for R = {R} TRs; re-download the story")
    y = y[:, voxels]
    if not np.all(np.isfinite(y)):
        bad = int((~np.isfinite(y)).any(0).sum())
        raise DataError(f"responses of {subject}/{story} have non-finite values in {bad} target voxel(s); "
                        "select targets with core.tuning.targets (it drops invalid voxels)")
    audio = np.asarray(dataset.audio(story), dtype=np.float32)
    return _Story(story, audio, snippet_bounds(R, dataset.scanner_tr, shift_s, sample_rate), zscore_story(y))
