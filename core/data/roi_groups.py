"""ROI groups: named sets of ROIs summarised like ROIs (e.g. ``semantic``, ``auditory``).

A group's mask is the union of its member ROIs' masks. Defaults follow the demo's planted regions
(``core.data.demo``): ``semantic`` = Broca, sPMv, IPS, RSC, FO (context-averaged word embeddings)
and ``auditory`` = AC (mel-band envelopes); the same names are HuthLab's localizer ROIs in the
ds003020 pycortex-db, so the defaults apply there too when those ROIs exist. Users define their own
in a JSON file ``{"group": ["ROI", ...], ...}`` (``--roi-groups FILE``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Optional, Union

import numpy as np

from core.errors import ConfigError

#: default groups (members that a subject lacks are left out; a group with none is left out)
DEFAULT_ROI_GROUPS = {"semantic": ("Broca", "sPMv", "IPS", "RSC", "FO"), "auditory": ("AC",)}


def read_roi_groups(path: Union[str, Path]) -> dict:
    """Groups from a JSON file ``{"group": ["ROI", ...]}``; ConfigError naming the file if malformed."""
    path = Path(path).expanduser()
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"ROI-group file {path} does not exist; give a JSON file "
                          '{"group": ["ROI", ...]}') from None
    except (OSError, ValueError) as err:
        raise ConfigError(f"ROI-group file {path} is not readable JSON ({err}); expected "
                          '{"group": ["ROI", ...]}') from None
    if not isinstance(raw, dict) or not raw or not all(
            isinstance(k, str) and k and isinstance(v, list) and v and all(isinstance(m, str) for m in v)
            for k, v in raw.items()):
        raise ConfigError(f"ROI-group file {path} must map each group name to a non-empty list of ROI "
                          'names, e.g. {"semantic": ["Broca", "sPMv"]}')
    return {k: tuple(v) for k, v in raw.items()}


def group_masks(rois: Mapping[str, np.ndarray], groups: Optional[Mapping[str, tuple]] = None,
                strict: bool = True) -> dict:
    """Masks of ROI groups: the union of their members' masks.

    Parameters
    ----------
    rois : ROI name → ``(n_voxels,)`` bool mask (``dataset.rois(subject)``).
    groups : group name → member ROI names (default :data:`DEFAULT_ROI_GROUPS`, non-strict).
    strict : a member ROI that ``rois`` lacks is an error (user-given groups); when False, it is
        left out and a group without any member present is left out (defaults).

    Returns
    -------
    ``{group: {"mask": (n_voxels,) bool, "members": [roi, ...]}}``.
    """
    if groups is None:
        groups, strict = DEFAULT_ROI_GROUPS, False
    out = {}
    for name, members in groups.items():
        if name in rois:
            raise ConfigError(f"ROI group {name!r} has the name of an ROI; rename the group")
        present = [m for m in members if m in rois]
        missing = [m for m in members if m not in rois]
        if missing and strict:
            raise ConfigError(f"ROI group {name!r} names ROI(s) {missing} that this subject does not "
                              f"have; available: {', '.join(sorted(rois))}")
        if not present:
            continue
        mask = np.zeros_like(np.asarray(rois[present[0]], dtype=bool))
        for m in present:
            mask |= np.asarray(rois[m], dtype=bool)
        out[name] = {"mask": mask, "members": present}
    return out
