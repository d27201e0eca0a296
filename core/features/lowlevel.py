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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Mapping, Sequence

import numpy as np

from core.data.base import SAMPLE_RATE
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


#: name → space; add a space with one function above and one entry here.
SPACES: Dict[str, Space] = {
    "powspec": Space(powspec, {"n_bands": 32, "win_s": 0.025, "hop_s": 0.010}),
    "phonemes": Space(phonemes),
    "wordrate": Space(wordrate),
}


@register("lowlevel")
def lowlevel_source(name: str) -> SpaceSource:
    """Factory for ``lowlevel:<name>`` specs (see :data:`SPACES`)."""
    return SpaceSource("lowlevel", name, SPACES, CODE_TAG)
