"""Encoding parameters and the two evaluation protocols — the one source of the paper's defaults.

Every default below is the paper's (Moussa et al. 2025, Evaluation 1;
``/work/shared/reference/paper-method.md``) and lives in exactly one place: the ridge constants in
``core.encoding.ridge``, the FIR delays in ``core.features.delays``, the noise-ceiling threshold in
``core.encoding.ceiling``. :class:`EncodeParams` only points at them.

Two protocols (``--protocol``):

``project`` (default) — this project's reading of the method:
    - training stories: the dataset's split (every story with responses except the test story;
      the validation story included, as the paper's 24 stories include ``stagefright``);
    - the test story scored over all its ``R − 20`` rows;
    - features z-scored per story, delayed per story on the full ``R − 5`` stamps, then trimmed
      ``[10:-5]``: the first delayed rows of each story come from its own earlier TRs (real audio),
      and no story leaks into the next;
    - alpha per voxel by mean held-out Pearson r (what the paper's text says);
    - noise ceiling from z-scored repeats with ``Var(ȳ)`` ddof 0 (Schoppe's formula on z-scored
      data); voxels with ``cc_max < 0.1`` get no cc_norm (a ratio over a tiny ceiling is noise).

``released`` — what the released code (``bridge-ai-neuro/brain-tuning``) does, to reproduce its
numbers:
    - the fixed 24 training stories (:data:`RELEASED_TRAIN_STORIES`, those present);
    - test scored from response row 40 (features ``[50:-5]``, repeats ``[:, 40:]``);
    - per story trim ``[10:-5]`` (test ``[50:-5]``), z-score, stack, then delay the stacked matrix
      (HuthLab's order: the first rows are zero-filled, and each later story's first delayed rows
      hold the previous story's last rows);
    - alpha chosen by signed √R² on the held-out chunks (``use_corr=False``);
    - ceiling with ``Var(ȳ)`` ddof 1 on the repeats as released (not re-z-scored, TP = 1), undefined
      ceilings set to 0 and no voxel excluded by a threshold (cc_norm is still undefined where the
      ceiling is 0, instead of ±inf).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Optional

import numpy as np

from core.errors import ConfigError

PROTOCOLS = ("project", "released")
SELECTIONS = ("corr", "r2")  #: alpha selection: held-out Pearson r, or signed √R² (HuthLab use_corr=False)
ORDERS = ("delay-trim", "trim-zscore-delay")  #: design order (project, released)

#: the released code's encoding training stories (27 shared stories minus life,
#: myfirstdaywiththeyankees and wheretheressmoke), in its order
RELEASED_TRAIN_STORIES = (
    "adollshouse", "adventuresinsayingyes", "alternateithicatom", "avatar", "buck", "exorcism",
    "eyespy", "fromboyhoodtofatherhood", "hangtime", "haveyoumethimyet", "howtodraw", "inamoment",
    "itsabox", "legacy", "naked", "odetostepfather", "sloth", "souls", "stagefright",
    "swimmingwithastronauts", "thatthingonmyarm", "theclosetthatateeverything", "tildeath",
    "undertheinfluence")
RELEASED_TEST_START = 40  #: response row the released code scores the test story from


def _ridge_defaults() -> dict:
    from core.encoding.ceiling import MIN_CC_MAX
    from core.encoding.ridge import CHUNK_LEN, DEFAULT_ALPHAS, HELD_FRAC, N_BOOTS
    from core.features.delays import DEFAULT_DELAYS

    return {"delays": tuple(DEFAULT_DELAYS), "alphas": tuple(np.asarray(DEFAULT_ALPHAS).tolist()),
            "n_boots": N_BOOTS, "chunk_len": CHUNK_LEN, "held_frac": HELD_FRAC, "min_cc_max": MIN_CC_MAX}


_D = _ridge_defaults()


@dataclass(frozen=True)
class EncodeParams:
    """Everything that changes the numbers of an encoding (recorded in provenance and cache keys).

    Parameters
    ----------
    protocol : ``"project"`` (default) or ``"released"`` — see the module docstring. Use
        :meth:`for_protocol` to get a protocol's full parameter set.
    delays : FIR delays in TRs (paper: 1, 2, 3, 4).
    alphas : ridge grid, HuthLab scale (paper: ``logspace(1, 4, 15)``).
    n_boots, chunk_len, held_frac : bootstrap CV (paper: 3 bootstraps, 20-TR chunks, 25 % held out).
    selection : ``"corr"`` (held-out r, paper text) or ``"r2"`` (signed √R², released code).
    order : ``"delay-trim"`` (project) or ``"trim-zscore-delay"`` (released; HuthLab).
    test_start : first response row of the test story that is scored (project 0, released 40).
    ceiling_ddof : ddof of ``Var(ȳ)`` in the Schoppe ceiling (project 0, released 1).
    ceiling_zscore : z-score each repeat before the ceiling (project True, released False: TP = 1
        is assumed of the released, already z-scored repeats).
    min_cc_max : voxels whose ceiling is below this get no cc_norm (project 0.1); None = no
        threshold (released: undefined ceilings are 0, and only those are left without cc_norm).
    train_stories : explicit training stories (None = the protocol's choice).
    seed : bootstrap seed.
    """

    protocol: str = "project"
    delays: tuple = _D["delays"]
    alphas: tuple = _D["alphas"]
    n_boots: int = _D["n_boots"]
    chunk_len: int = _D["chunk_len"]
    held_frac: float = _D["held_frac"]
    selection: str = "corr"
    order: str = "delay-trim"
    test_start: int = 0
    ceiling_ddof: int = 0
    ceiling_zscore: bool = True
    min_cc_max: Optional[float] = _D["min_cc_max"]
    train_stories: Optional[tuple] = None
    seed: int = 0

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"unknown protocol {self.protocol!r}; expected one of {', '.join(PROTOCOLS)}")
        if self.selection not in SELECTIONS:
            raise ConfigError(f"unknown alpha selection {self.selection!r}; expected one of "
                              f"{', '.join(SELECTIONS)}")
        if self.order not in ORDERS:
            raise ConfigError(f"unknown design order {self.order!r}; expected one of {', '.join(ORDERS)}")
        if int(self.test_start) != self.test_start or self.test_start < 0:
            raise ConfigError(f"test_start must be a non-negative integer (rows), got {self.test_start!r}")
        if self.ceiling_ddof not in (0, 1):
            raise ConfigError(f"ceiling_ddof must be 0 or 1, got {self.ceiling_ddof!r}")
        if self.min_cc_max is not None and not (np.isfinite(self.min_cc_max) and self.min_cc_max > 0):
            raise ConfigError(f"min_cc_max must be a positive number or None, got {self.min_cc_max!r}")
        if self.train_stories is not None:
            stories = tuple(str(s) for s in self.train_stories)
            if not stories or len(set(stories)) != len(stories):
                raise ConfigError(f"train_stories must be a non-empty list of distinct stories, "
                                  f"got {list(self.train_stories)}")
            object.__setattr__(self, "train_stories", stories)
        object.__setattr__(self, "delays", tuple(int(d) for d in self.delays))
        object.__setattr__(self, "alphas", tuple(float(a) for a in self.alphas))

    @classmethod
    def for_protocol(cls, protocol: str = "project", **overrides) -> "EncodeParams":
        """The full parameter set of ``protocol`` with ``overrides`` (e.g. ``seed``, ``train_stories``)."""
        if protocol == "released":
            base = dict(selection="r2", order="trim-zscore-delay", test_start=RELEASED_TEST_START,
                        ceiling_ddof=1, ceiling_zscore=False, min_cc_max=None)
        elif protocol == "project":
            base = {}
        else:
            raise ConfigError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
        bad = sorted(set(overrides) - set(cls.__dataclass_fields__) | ({"protocol"} & set(overrides)))
        if bad:
            raise ConfigError(f"unknown or fixed encode parameter(s) {bad} for for_protocol")
        return cls(protocol=protocol, **{**base, **overrides})

    def with_(self, **changes) -> "EncodeParams":
        """A copy with ``changes``."""
        return replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-able parameters (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Optional[dict]) -> "EncodeParams":
        """Inverse of :meth:`to_dict` (unknown keys are an error naming them)."""
        d = dict(d or {})
        known = set(cls.__dataclass_fields__)
        bad = sorted(set(d) - known)
        if bad:
            raise ConfigError(f"unknown encode parameter(s) {bad}; known: {', '.join(sorted(known))}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
