"""Writers for the ds003020 on-disk layout (used by the demo generator and test fixtures).

Layout (dataset root)::

    stimuli/<story>.wav
    derivative/TextGrids/<story>.TextGrid          tier 0 "phone", tier 1 "word" (Praat long text)
    derivative/respdict.json                        {story: R}
    derivative/preprocessed_data/<SUBJ>/<story>.hf5 dataset "data" (R - 20, n_voxels)
                                                    test story also "individual_repeats"
                                                    (n_repeats, R - 20, n_voxels)

Every writer is atomic (temp name, then rename).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from core.store import atomic_path


def stimuli_dir(root: Path) -> Path:
    return Path(root) / "stimuli"


def textgrid_dir(root: Path) -> Path:
    return Path(root) / "derivative" / "TextGrids"


def respdict_path(root: Path) -> Path:
    return Path(root) / "derivative" / "respdict.json"


def responses_dir(root: Path, subject: str) -> Path:
    return Path(root) / "derivative" / "preprocessed_data" / subject


def write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write 16-bit PCM wav; ``audio`` is ``(n,)`` mono or ``(n, channels)`` floats in [-1, 1]."""
    import soundfile as sf

    with atomic_path(Path(path)) as tmp:
        sf.write(str(tmp), np.asarray(audio, dtype=np.float32), int(sample_rate),
                 subtype="PCM_16", format="WAV")


def _tier_long(name: str, xmax: float, intervals: Sequence[tuple]) -> list:
    lines = ['        class = "IntervalTier" ', f'        name = "{name}" ', "        xmin = 0 ",
             f"        xmax = {xmax} ", f"        intervals: size = {len(intervals)} "]
    for i, (a, b, label) in enumerate(intervals, 1):
        lines += [f"        intervals [{i}]:", f"            xmin = {a} ", f"            xmax = {b} ",
                  f'            text = "{label}" ']
    return lines


def fill_gaps(events: Sequence[tuple], xmax: float) -> list:
    """Praat tiers cover [0, xmax] without gaps: insert empty intervals between events."""
    out, t = [], 0.0
    for a, b, label in sorted(events, key=lambda e: e[0]):
        if a > t + 1e-9:
            out.append((t, a, ""))
        out.append((a, b, label))
        t = b
    if xmax > t + 1e-9:
        out.append((t, xmax, ""))
    return out


def write_textgrid(path: Path, phones: Sequence[tuple], words: Sequence[tuple], xmax: float,
                   crlf: bool = False, tier_names: Sequence[str] = ("phone", "word")) -> None:
    """Write a Praat long-format TextGrid with tiers "phone" then "word".

    ``phones`` / ``words``: sequences of ``(onset_s, offset_s, label)``; gaps become empty labels.
    ``tier_names``: the two tiers' names (e.g. ``("", "")`` for a grid without names).
    """
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0 ",
             f"xmax = {xmax} ", "tiers? <exists> ", "size = 2 ", "item []: "]
    for i, (name, ev) in enumerate(zip(tier_names, (phones, words)), 1):
        lines.append(f"    item [{i}]:")
        lines += _tier_long(name, xmax, fill_gaps(ev, xmax))
    nl = "\r\n" if crlf else "\n"
    with atomic_path(Path(path)) as tmp:
        tmp.write_bytes((nl.join(lines) + nl).encode("utf-8"))


def write_respdict(root: Path, respdict: dict) -> None:
    with atomic_path(respdict_path(root)) as tmp:
        tmp.write_text(json.dumps({k: int(v) for k, v in respdict.items()}, indent=1))


def write_responses(path: Path, data: np.ndarray, repeats: Optional[np.ndarray] = None,
                    dtype=np.float64) -> None:
    """Write an ``.hf5`` with dataset ``data`` ``(R - 20, n_voxels)`` (+ ``individual_repeats``)."""
    import h5py

    with atomic_path(Path(path)) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("data", data=np.asarray(data, dtype=dtype))
            if repeats is not None:
                f.create_dataset("individual_repeats", data=np.asarray(repeats, dtype=dtype))
