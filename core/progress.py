"""Progress callbacks: ``progress(fraction_done, message)``. Core never prints.

The CLI binds them to tqdm, jobs write them to status.json, the app to ``st.progress``.
"""

from __future__ import annotations

from typing import Callable, Optional

ProgressFn = Optional[Callable[[float, str], None]]


def report(progress: ProgressFn, fraction: float, message: str = "") -> None:
    """Call ``progress`` if given, with ``fraction`` clipped to [0, 1]."""
    if progress is not None:
        progress(min(max(float(fraction), 0.0), 1.0), message)


def sub_progress(progress: ProgressFn, start: float, stop: float) -> ProgressFn:
    """A callback mapping [0, 1] onto [start, stop] of ``progress`` (for nested steps)."""
    if progress is None:
        return None

    def _inner(fraction: float, message: str = "") -> None:
        report(progress, start + (stop - start) * fraction, message)

    return _inner
