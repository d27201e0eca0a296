"""Random-fMRI controls (paper-method.md, "Controls"): the same trainer on mismatched targets.

Only the **training** stories' targets change; the validation story keeps its real responses (early
stopping / the validation loss then tell how much of the real signal the control model fits).

- ``random-story`` — each training story's targets are replaced by another training story's
  (a seeded derangement), trimmed to its length or padded with randomly drawn rows of that story
  (the released code's ``'all'`` control).
- ``chunk-shuffle`` — each training story's rows are cut into chunks of :data:`CHUNK_TRS` TRs and
  chunk ``i`` is swapped with chunk ``i + m//2`` (``m`` whole chunks; a trailing partial chunk stays):
  partners are ``m//2`` chunks apart, ≥ :data:`CHUNK_MIN_APART` when ``m ≥ 20`` ("where possible";
  fewer chunks give the largest distance that pairs all of them). Deterministic (the released
  code's ``'local'`` control: chunks of 15 TRs swapped at least 10 chunks apart).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from core.errors import ConfigError

CONTROLS = ("random-story", "chunk-shuffle")
CHUNK_TRS = 15  #: chunk length of the chunk-shuffle control (TRs)
CHUNK_MIN_APART = 10  #: minimum distance (chunks) between swapped chunks, where possible


def apply_control(data, control: Optional[str], seed: int = 0) -> dict:
    """Replace ``data.train``'s targets in place by a control's; returns a report (JSON-able)."""
    if control is None:
        return {"control": None}
    if control not in CONTROLS:
        raise ConfigError(f"unknown control {control!r}; choose one of {', '.join(CONTROLS)} "
                          "(stimulus and representation controls are not implemented yet)")
    stories = data.train._stories
    rng = np.random.default_rng(int(seed))
    if control == "random-story":
        if len(stories) < 2:
            raise ConfigError(f"the random-story control needs ≥ 2 training stories, subject has "
                              f"{len(stories)}; use chunk-shuffle or add stories")
        n = len(stories)
        while True:  # a derangement: no story keeps its own responses
            perm = rng.permutation(n)
            if not np.any(perm == np.arange(n)):
                break
        originals = [s.targets for s in stories]
        pairs = {}
        for i, st in enumerate(stories):
            src = originals[perm[i]]
            L = len(st.targets)
            if len(src) >= L:
                new = src[:L]
            else:
                extra = src[rng.integers(0, len(src), L - len(src))]
                new = np.concatenate([src, extra])
            st.targets = np.ascontiguousarray(new, dtype=np.float32)
            pairs[st.name] = stories[perm[i]].name
        return {"control": control, "seed": int(seed), "source_story": pairs}
    swapped = {}
    for st in stories:
        m = len(st.targets) // CHUNK_TRS
        half = m // 2
        y = st.targets.copy()
        for i in range(half):
            a, b = slice(i * CHUNK_TRS, (i + 1) * CHUNK_TRS), slice((i + half) * CHUNK_TRS, (i + half + 1) * CHUNK_TRS)
            y[a], y[b] = st.targets[b], st.targets[a]
        st.targets = y
        swapped[st.name] = {"chunks": m, "apart": half}
    return {"control": control, "chunk_trs": CHUNK_TRS, "stories": swapped}
