"""Parameters of the simulated demo brain (:class:`DemoConfig`) and its code-version tag."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from core.errors import ConfigError
from core.store import key_hash

DEMO_VERSION = "demo-v1"  #: bump when the generator's output changes meaning (forces a rebuild)
SUBJECT = "S1"  #: the simulated subject = the pycortex subject whose voxels it uses
TYPE_NAMES = ("none", "acoustic", "semantic", "mixed")  #: ground-truth voxel type codes 0–3

#: (ROI, voxel type, fraction of the ROI's voxels planted with it), applied in order; a voxel
#: already planted is not planted again. Acoustic drive in auditory cortex, semantic drive in
#: Broca's area, ventral premotor speech area and parietal/retrosplenial/opercular parcels
#: (the semantic network of Huth et al. 2016 as far as S1's overlay names it), mixed in between.
DEFAULT_PLAN = (
    ("AC", "acoustic", 0.50), ("AC", "mixed", 0.15),
    ("Broca", "semantic", 0.50), ("Broca", "mixed", 0.10),
    ("sPMv", "semantic", 0.40), ("sPMv", "mixed", 0.20),
    ("IPS", "semantic", 0.25), ("RSC", "semantic", 0.40), ("FO", "semantic", 0.40),
)


def rng_for(seed: int, *stream: int) -> np.random.Generator:
    """An independent generator for one use (``stream``) of the master ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), *map(int, stream)]))


@dataclass(frozen=True)
class DemoConfig:
    """Everything that determines the demo dataset (with ``DEMO_VERSION``).

    Attributes
    ----------
    seed : master seed of every random choice (text, voxel planting, weights, noise).
    n_stories : stories, including the test and validation stories (>= 3).
    story_seconds : (min, max) target duration of each training/validation story's audio, s.
    test_story_seconds : (min, max) target duration of the test story, s. Longer than the others
        (like ds003020's 10-minute test story): a noise ceiling estimated from ``n_repeats``
        repeats over ~220 TRs tracks the true one closely (r ≈ 0.9 across voxels).
    n_repeats : presentations of the test story (its ``individual_repeats``).
    voice, rate_wpm : espeak-ng voice and speaking rate (words per minute).
    n_mel_bands : mel bands of the acoustic analysis (``mel_band_envelopes``).
    n_acoustic : acoustic drivers = leading principal components of the log-mel envelopes.
    n_semantic : semantic drivers = leading principal components of the vocabulary's MiniLM
        embeddings.
    context_words : the semantic driver is the mean over the last ``context_words`` content
        words, held between word onsets.
    sim_dt : simulation grid step, seconds (drivers, HRF convolution).
    cc_max_range : (lo, hi) of planted voxels' true noise ceilings (mean of ``n_repeats``).
    mixed_semantic_share : (lo, hi) of the semantic share of a mixed voxel's signal variance.
    plan : ``(roi, type, fraction)`` planting rules (see :data:`DEFAULT_PLAN`).
    field_sigma : smoothness (voxels, Gaussian sigma) of the random fields that place planted
        patches and their noise ceilings.
    """

    seed: int = 0
    n_stories: int = 14
    story_seconds: tuple = (150.0, 170.0)
    test_story_seconds: tuple = (440.0, 460.0)
    n_repeats: int = 5
    voice: str = "en-us"
    rate_wpm: int = 160
    n_mel_bands: int = 32
    n_acoustic: int = 4
    n_semantic: int = 16
    context_words: int = 8
    sim_dt: float = 0.1
    cc_max_range: tuple = (0.3, 0.95)
    mixed_semantic_share: tuple = (0.3, 0.7)
    plan: tuple = DEFAULT_PLAN
    field_sigma: float = 2.0

    def __post_init__(self):
        bad = []
        if self.n_stories < 3:
            bad.append(f"n_stories={self.n_stories} (need >= 3: train, val, test)")
        if self.n_repeats < 2:
            bad.append(f"n_repeats={self.n_repeats} (need >= 2 for a noise ceiling)")
        for name in ("story_seconds", "test_story_seconds"):
            lo, hi = getattr(self, name)
            if not 20.0 <= lo <= hi:
                bad.append(f"{name}={(lo, hi)} (need 20 <= min <= max)")
        lo, hi = self.cc_max_range
        if not 0.0 < lo <= hi < 1.0:
            bad.append(f"cc_max_range={self.cc_max_range} (need 0 < lo <= hi < 1)")
        lo, hi = self.mixed_semantic_share
        if not 0.0 < lo <= hi < 1.0:
            bad.append(f"mixed_semantic_share={self.mixed_semantic_share} (need 0 < lo <= hi < 1)")
        for roi, kind, frac in self.plan:
            if kind not in TYPE_NAMES[1:] or not 0.0 < frac <= 1.0:
                bad.append(f"plan entry {(roi, kind, frac)} (type in {TYPE_NAMES[1:]}, 0 < fraction <= 1)")
        if bad:
            raise ConfigError("invalid DemoConfig: " + "; ".join(bad))

    @classmethod
    def tiny(cls, seed: int = 0) -> "DemoConfig":
        """A fast configuration for tests: 5 stories of ~40 s (test story ~60 s), 3 repeats."""
        return cls(seed=seed, n_stories=5, story_seconds=(36.0, 44.0), test_story_seconds=(56.0, 64.0),
                   n_repeats=3)

    def with_(self, **changes) -> "DemoConfig":
        """A copy with ``changes`` applied."""
        return replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples become lists), as stored in ``demo.json``."""
        d = asdict(self)
        d["story_seconds"] = list(self.story_seconds)
        d["test_story_seconds"] = list(self.test_story_seconds)
        d["cc_max_range"] = list(self.cc_max_range)
        d["mixed_semantic_share"] = list(self.mixed_semantic_share)
        d["plan"] = [list(p) for p in self.plan]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DemoConfig":
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        for name in ("story_seconds", "test_story_seconds", "cc_max_range", "mixed_semantic_share"):
            if name in d:
                d[name] = tuple(d[name])
        if "plan" in d:
            d["plan"] = tuple(tuple(p) for p in d["plan"])
        return cls(**d)

    def key(self) -> str:
        """Hash of the config and ``DEMO_VERSION`` (names the cache folder of non-default configs)."""
        return key_hash(DEMO_VERSION, self.to_dict())

    @property
    def is_default(self) -> bool:
        return self == DemoConfig()
