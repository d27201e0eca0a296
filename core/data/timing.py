"""TR timing conventions of ds003020 / HuthLab (see ``../shared/reference/ds003020.md``).

The scan starts 5 TRs (10 s at TR = 2 s) before the audio (audio onset = time 0). A story with
``R`` TRs in ``respdict.json`` is simulated on ``N = R - 5`` TRs: TR ``k`` is acquired over
``[tr*(k-5), tr*(k-4))`` seconds of audio time, and its time stamp is the midpoint
``tr*(k - 4.5)`` (``2k - 9`` s at TR = 2 s). Features are computed on all ``N`` stamps and
trimmed ``[10:-5]`` → ``R - 20`` rows, matching the released (already trimmed) responses:
response row ``i`` ↔ TR ``k = i + 10``.
"""

from __future__ import annotations

import numpy as np

TR_SECONDS = 2.0  #: simulated-convention TR (true scanner TR ≈ 2.0045 s; paper/HuthLab use 2.0)
SCAN_LEAD_TRS = 5  #: TRs acquired before the audio starts
TRIM_START = 10  #: feature rows dropped at the start (HuthLab ``[5+trim:-trim]`` with trim=5)
TRIM_END = 5  #: feature rows dropped at the end
RUN_EXTRA_TRS = 20  #: R - n_response_rows


def n_stamps(n_trs_run: int) -> int:
    """Number of simulated TR stamps ``N = R - 5`` for a run of ``R`` TRs."""
    return int(n_trs_run) - SCAN_LEAD_TRS


def tr_stamps(n_trs_run: int, tr: float = TR_SECONDS) -> np.ndarray:
    """Time stamps (seconds, audio time base) of all ``R - 5`` TRs, shape ``(R - 5,)``."""
    k = np.arange(n_stamps(n_trs_run), dtype=np.float64)
    return tr * (k - SCAN_LEAD_TRS + 0.5)


def response_stamps(n_trs_run: int, tr: float = TR_SECONDS) -> np.ndarray:
    """Stamps of the released response rows, ``tr_stamps[10:-5]``, shape ``(R - 20,)``."""
    return tr_stamps(n_trs_run, tr)[TRIM_START:-TRIM_END]


def n_response_rows(n_trs_run: int) -> int:
    """``R - 20``: rows of the released (trimmed) responses."""
    return int(n_trs_run) - RUN_EXTRA_TRS


def run_trs_for_duration(duration_s: float, tr: float = TR_SECONDS) -> int:
    """``R`` for an audio of ``duration_s`` seconds (inverse of duration ≈ tr*R − 20 s)."""
    return int(np.floor((duration_s + 10 * tr) / tr))


def tr_window(k: int, tr: float = TR_SECONDS) -> tuple[float, float]:
    """Audio-time interval ``[start, stop)`` (seconds) acquired during TR ``k``."""
    return tr * (k - SCAN_LEAD_TRS), tr * (k - SCAN_LEAD_TRS + 1)
