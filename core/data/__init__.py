"""Datasets: the one :class:`Dataset` API, and :func:`load_dataset` to open one from a data spec.

Data specs (DESIGN.md): ``demo`` (the embedded demo brain, built into the cache on first use) and
``ds003020:<path>`` (a folder in the published ds003020 layout; partial downloads work).
"""

from __future__ import annotations

from pathlib import Path

from core.data.base import SAMPLE_RATE, Dataset, Events, SurfaceMapping, SurfaceSpace, VoxelReport
from core.errors import ConfigError
from core.progress import ProgressFn

VALID_SPECS = ("demo", "demo-group", "ds003020:<path>", "narratives:<path>")

__all__ = ["SAMPLE_RATE", "Dataset", "Events", "SurfaceMapping", "SurfaceSpace", "VoxelReport", "VALID_SPECS",
           "load_dataset"]


def load_dataset(spec: str, progress: ProgressFn = None) -> Dataset:
    """Open the dataset named by ``spec``.

    Parameters
    ----------
    spec : ``"demo"`` or ``"ds003020:<path>"`` (path = folder holding ``stimuli/`` and
        ``derivative/``; ``~`` is expanded).
    progress : optional ``(fraction, message)`` callback (the demo reports its first-use build).

    Raises
    ------
    ConfigError
        ``spec`` is not one of the valid forms.
    DataError
        The path does not exist or is not in the ds003020 layout, or its files are inconsistent.
    """
    spec = str(spec).strip()
    if spec == "demo":
        from core.data.demo import open_demo

        return open_demo(progress=progress)
    if spec == "demo-group":
        from core.data.demo_group import open_group

        return open_group(progress=progress)
    prefix, sep, rest = spec.partition(":")
    if prefix == "ds003020" and sep and rest.strip():
        from core.data.ds003020 import Ds003020Dataset

        return Ds003020Dataset(Path(rest.strip()).expanduser(), spec=spec)
    if prefix == "narratives" and sep and rest.strip():  # path = folder holding participants.tsv
        from core.data.narratives import NarrativesDataset

        return NarrativesDataset(Path(rest.strip()).expanduser(), spec=spec)
    raise ConfigError(f"unknown data spec {spec!r}; valid specs: {', '.join(VALID_SPECS)} "
                      "(e.g. ds003020:/data/ds003020)")
