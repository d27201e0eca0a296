"""Parameters of the simulated demo group (:class:`GroupConfig`) and its code-version tag."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from core.data.demo.config import TYPE_NAMES, DemoConfig
from core.errors import ConfigError
from core.store import key_hash

GROUP_VERSION = "demo-group-v1"  #: bump when the generator's output changes meaning (forces a rebuild)
MESH = "fsaverage5"

#: (ROI, voxel type, fraction of the participant's jittered disc), applied in order per ROI: the
#: first rule of an ROI takes the vertices nearest the disc centre, later rules the ring around
#: them. Acoustic core + mixed ring in auditory cortex; semantic cores (+ mixed rings) in lateral
#: temporal, inferior frontal, ventral premotor and angular cortex (Huth et al. 2016's bilateral
#: semantic network, as far as the standard discs of ``core.data.fsaverage`` name it).
DEFAULT_GROUP_PLAN = (
    ("AC", "acoustic", 0.65), ("AC", "mixed", 0.25),
    ("LTC", "semantic", 0.55), ("LTC", "mixed", 0.25),
    ("Broca", "semantic", 0.6), ("Broca", "mixed", 0.2),
    ("sPMv", "semantic", 0.5), ("sPMv", "mixed", 0.3),
    ("AG", "semantic", 0.7),
)


@dataclass(frozen=True)
class GroupConfig:
    """Everything that determines the demo-group dataset (with ``GROUP_VERSION``).

    Attributes
    ----------
    seed : master seed of every random choice of the group (jitter, weights, noise).
    demo : the :class:`~core.data.demo.DemoConfig` whose built stories (audio, word/phone
        timings) and true acoustic / semantic drivers are reused (default ``DemoConfig()``).
    n_participants : simulated participants ``P01 … Pnn`` (>= 1; the default group has 6).
    repeats : presentations of the test story per participant, cycled over participants
        (1 = a single presentation: ``repeats(subject)`` has shape ``(1, n_trs, n_voxels)``).
    jitter_mm : each participant's disc centre is a random cortical vertex within this geodesic
        distance (mm, pial) of the standard centre.
    radius_scale : (lo, hi) uniform factor on each standard disc radius, per participant and disc.
    cc_range : (lo, hi) true noise ceiling of ONE presentation at planted vertices (highest at
        the disc centre, falling with distance); the ceiling of a participant's test-story mean
        follows from its number of repeats (``ground_truth(subject)["true_cc_max"]``).
    mixed_semantic_share : (lo, hi) semantic share of a mixed vertex's signal variance.
    weight_similarity : ``rho`` in ``w = sqrt(rho) w_group + sqrt(1 - rho) w_own``: how much a
        vertex's raw driver weights are shared by all participants (so responses correlate
        across participants where their planted regions overlap, as the intersubject-correlation
        ceiling assumes) versus drawn for the participant alone.
    vertex_step : keep every ``vertex_step``-th cortical vertex as a response column (1 = all
        19,004 cortical fsaverage5 vertices; larger = faster tests).
    plan : ``(roi, type, fraction)`` rules (see :data:`DEFAULT_GROUP_PLAN`).
    """

    seed: int = 0
    demo: DemoConfig = field(default_factory=DemoConfig)
    n_participants: int = 6
    repeats: tuple = (3, 1, 4, 1, 2, 1)
    jitter_mm: float = 5.0
    radius_scale: tuple = (0.85, 1.2)
    cc_range: tuple = (0.45, 0.9)
    mixed_semantic_share: tuple = (0.3, 0.7)
    weight_similarity: float = 0.8
    vertex_step: int = 1
    plan: tuple = DEFAULT_GROUP_PLAN

    def __post_init__(self):
        from core.data.fsaverage import STANDARD_ROI_CENTRES

        bad = []
        if not isinstance(self.demo, DemoConfig):
            bad.append(f"demo={self.demo!r} (need a DemoConfig)")
        if int(self.n_participants) < 1:
            bad.append(f"n_participants={self.n_participants} (need >= 1)")
        if not self.repeats or any(int(r) < 1 for r in self.repeats):
            bad.append(f"repeats={self.repeats} (need a non-empty tuple of counts >= 1)")
        if not self.jitter_mm >= 0:
            bad.append(f"jitter_mm={self.jitter_mm} (need >= 0)")
        lo, hi = self.radius_scale
        if not 0.0 < lo <= hi:
            bad.append(f"radius_scale={self.radius_scale} (need 0 < lo <= hi)")
        for name in ("cc_range", "mixed_semantic_share"):
            lo, hi = getattr(self, name)
            if not 0.0 < lo <= hi < 1.0:
                bad.append(f"{name}={getattr(self, name)} (need 0 < lo <= hi < 1)")
        if not 0.0 <= self.weight_similarity <= 1.0:
            bad.append(f"weight_similarity={self.weight_similarity} (need 0 <= rho <= 1)")
        if int(self.vertex_step) < 1:
            bad.append(f"vertex_step={self.vertex_step} (need >= 1)")
        for roi, kind, frac in self.plan:
            if roi not in STANDARD_ROI_CENTRES or kind not in TYPE_NAMES[1:] or not 0.0 < frac <= 1.0:
                bad.append(f"plan entry {(roi, kind, frac)} (ROI in {sorted(STANDARD_ROI_CENTRES)}, "
                           f"type in {TYPE_NAMES[1:]}, 0 < fraction <= 1)")
        if bad:
            raise ConfigError("invalid GroupConfig: " + "; ".join(bad))

    @classmethod
    def tiny(cls, seed: int = 0) -> "GroupConfig":
        """A fast configuration for tests: the tiny demo's 5 stories, 2 participants (3 and 1
        presentations of the test story), every 3rd cortical vertex."""
        return cls(seed=seed, demo=DemoConfig.tiny(), n_participants=2, repeats=(3, 1), vertex_step=3)

    @property
    def subjects(self) -> list:
        """Participant names ``["P01", …]``."""
        return [f"P{i + 1:02d}" for i in range(int(self.n_participants))]

    def n_repeats_of(self, index: int) -> int:
        """Test-story presentations of participant ``index`` (0-based)."""
        return int(self.repeats[index % len(self.repeats)])

    def with_(self, **changes) -> "GroupConfig":
        """A copy with ``changes`` applied."""
        return replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples become lists; ``demo`` its own dict), stored in ``group.json``."""
        return {"seed": int(self.seed), "demo": self.demo.to_dict(), "n_participants": int(self.n_participants),
                "repeats": [int(r) for r in self.repeats], "jitter_mm": float(self.jitter_mm),
                "radius_scale": list(self.radius_scale), "cc_range": list(self.cc_range),
                "mixed_semantic_share": list(self.mixed_semantic_share),
                "weight_similarity": float(self.weight_similarity),
                "vertex_step": int(self.vertex_step), "plan": [list(p) for p in self.plan]}

    @classmethod
    def from_dict(cls, d: dict) -> "GroupConfig":
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        if "demo" in d:
            d["demo"] = DemoConfig.from_dict(d["demo"])
        for name in ("repeats", "radius_scale", "cc_range", "mixed_semantic_share"):
            if name in d:
                d[name] = tuple(d[name])
        if "plan" in d:
            d["plan"] = tuple(tuple(p) for p in d["plan"])
        return cls(**d)

    def key(self) -> str:
        """Hash of the config and ``GROUP_VERSION`` (names the cache folder of non-default configs)."""
        return key_hash(GROUP_VERSION, self.to_dict())

    @property
    def is_default(self) -> bool:
        return self == GroupConfig()
