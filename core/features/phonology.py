"""Phone-level helpers for the low-level spaces: ARPAbet → IPA, panphon articulatory features, and
hashed phone n-grams (diphones / triphones).

- :data:`ARPABET_IPA`: the 39 ARPAbet phones (CMUdict, stress stripped) as IPA strings. The table
  is only a spelling map; the features come from ``panphon`` (``FeatureTable``, 24 features, +1/−1/0).
  Affricates are written with a tie bar (``t͡ʃ``, ``d͡ʒ``) so panphon reads one segment; ER is the
  rhotacised schwa ``ə˞`` (panphon has no ``ɝ``); the five diphthongs (AW AY EY OW OY) are two
  segments, and their feature vector is the **mean of the two segments' vectors** (features that
  change across the glide, e.g. ``hi``/``lo``/``back``, become 0 or ±0.5...±1 averages).
- :func:`ngram_column`: a phone n-gram ``("AH", "K")`` → ``zlib.crc32("AH K") % n_columns``
  (deterministic across runs, platforms and Python versions, unlike ``hash``).
"""

from __future__ import annotations

import functools
import zlib
from typing import Sequence, Tuple

import numpy as np

from core.errors import ConfigError

#: ARPAbet (39) → IPA, for panphon.
ARPABET_IPA = {
    "AA": "ɑ", "AE": "æ", "AH": "ʌ", "AO": "ɔ", "AW": "aʊ", "AY": "aɪ", "B": "b", "CH": "t͡ʃ",
    "D": "d", "DH": "ð", "EH": "ɛ", "ER": "ə˞", "EY": "eɪ", "F": "f", "G": "ɡ", "HH": "h",
    "IH": "ɪ", "IY": "i", "JH": "d͡ʒ", "K": "k", "L": "l", "M": "m", "N": "n", "NG": "ŋ",
    "OW": "oʊ", "OY": "ɔɪ", "P": "p", "R": "ɹ", "S": "s", "SH": "ʃ", "T": "t", "TH": "θ",
    "UH": "ʊ", "UW": "u", "V": "v", "W": "w", "Y": "j", "Z": "z", "ZH": "ʒ",
}


@functools.lru_cache(maxsize=1)
def _feature_table():
    import panphon

    return panphon.FeatureTable()


def feature_names() -> Tuple[str, ...]:
    """panphon's 24 feature names (``syl``, ``son``, ``cons``, …), the column order of
    :func:`articulation_table`."""
    return tuple(_feature_table().names)


@functools.lru_cache(maxsize=1)
def articulation_table() -> dict:
    """``{ARPAbet phone: (24,) float32}`` panphon features (+1, −1, 0; diphthongs: segment mean)."""
    ft = _feature_table()
    out = {}
    for phone, ipa in ARPABET_IPA.items():
        segs = ft.word_to_vector_list(ipa, numeric=True)
        if not segs:  # a panphon version that cannot read the IPA: fail loudly, not silently zero
            raise ConfigError(f"panphon cannot read the IPA {ipa!r} of ARPAbet {phone}; "
                              f"install panphon==0.22.2 (pinned)")
        out[phone] = np.mean(np.asarray(segs, dtype=np.float64), axis=0).astype(np.float32)
    return out


def ngram_column(ngram: Sequence[str], n_columns: int) -> int:
    """Column of a phone n-gram: ``zlib.crc32(" ".join(ngram).encode()) % n_columns``."""
    return zlib.crc32(" ".join(ngram).encode("ascii")) % int(n_columns)
