"""Semantic feature spaces (``semantic:<name>``): word embeddings at word midpoints.

HuthLab-style word-level semantic space: each word contributes its embedding at its midpoint and
the TR pipeline Lanczos-sums them to TR stamps (so a TR's row is the sum of its words' vectors,
weighted by the kernel). The paper's semantic-vs-phonetic analysis ("Evaluation 4",
``/work/shared/reference/paper-method.md``) uses such word-embedding targets.

Spaces here:

- ``minilm``: all-MiniLM-L6-v2 word embeddings, 384-d, unit norm
  (:func:`core.features.embeddings.embed_words`).
"""

from __future__ import annotations

from typing import Dict

import numpy as np

from core.features.base import TimedFeatures, register
from core.features.embeddings import MINILM_ID
from core.features.lowlevel import Space, SpaceSource

CODE_TAG = "semantic-v1"  #: bump when a space's meaning changes (invalidates cached features)


def minilm(dataset, story: str, model: str) -> TimedFeatures:
    """MiniLM embeddings ``(n_words, 384)`` float32 at word midpoints (``model``: provenance tag)."""
    from core.features.embeddings import embed_words

    ev = dataset.words(story)
    return TimedFeatures(times=np.asarray(ev.mids, dtype=np.float64),
                         values=embed_words(list(ev.labels)).astype(np.float32))


#: name → space; add a space with one function above and one entry here.
SPACES: Dict[str, Space] = {
    "minilm": Space(minilm, {"model": MINILM_ID}),
}


@register("semantic")
def semantic_source(name: str) -> SpaceSource:
    """Factory for ``semantic:<name>`` specs (see :data:`SPACES`)."""
    return SpaceSource("semantic", name, SPACES, CODE_TAG)
