"""Read a story's waveform as 16 kHz float32 mono.

ds003020 ships its stimuli as 16-bit PCM at 44.1 kHz, mostly stereo, with a few mono / 22.05 kHz
files (``../shared/reference/ds003020.md``). Refusing them is not an option, so this reader
**mixes every file to mono** (mean over channels) and **resamples it to 16 kHz** (the rate the
paper feeds its speech models, ``paper-method.md``) with :func:`scipy.signal.resample_poly`, using
the exact rational factor ``16000 / rate`` (e.g. 160/441 for 44.1 kHz); its Kaiser-windowed FIR
is the anti-aliasing filter.
"""

from __future__ import annotations

from collections import OrderedDict
from math import gcd
from pathlib import Path
from threading import Lock

import numpy as np

from core.data.base import SAMPLE_RATE
from core.errors import DataError

_CACHE_SIZE = 4  #: decoded files kept in memory (a 10 min story is ~38 MB at 16 kHz float32)
_cache: "OrderedDict[tuple, np.ndarray]" = OrderedDict()
_lock = Lock()


def resample_to(audio: np.ndarray, rate_in: int, rate_out: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling of ``audio`` ``(n,)`` from ``rate_in`` to ``rate_out`` Hz.

    Uses :func:`scipy.signal.resample_poly` with ``up/down = rate_out/rate_in`` reduced by their
    gcd; returns float32 ``(ceil(n * rate_out / rate_in),)``.
    """
    from scipy.signal import resample_poly

    rate_in, rate_out = int(rate_in), int(rate_out)
    if rate_in == rate_out:
        return np.asarray(audio, dtype=np.float32)
    g = gcd(rate_in, rate_out)
    out = resample_poly(np.asarray(audio, dtype=np.float64), rate_out // g, rate_in // g)
    return out.astype(np.float32)


def load_audio(path: Path) -> np.ndarray:
    """Load an audio file as a mono float32 waveform at 16 kHz.

    Any sample rate and channel count that libsndfile reads is accepted: channels are averaged to
    mono and the result is resampled to 16 kHz (see the module docstring). Decoded files are kept
    in a small in-process LRU cache keyed by path, size and modification time; each call returns
    a fresh copy, so callers may modify it.

    Parameters
    ----------
    path : audio file (``stimuli/<story>.wav`` in ds003020).

    Returns
    -------
    audio : ``(n_samples,)`` float32 in [-1, 1] at 16 000 Hz.

    Raises
    ------
    DataError
        The file is missing, empty, unreadable / corrupt, has no samples, holds non-finite values
        or is entirely silent (all zeros — a placeholder or failed download).
    """
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        raise DataError(f"audio file {path} does not exist; download it (e.g. `datalad get {path.name}`) "
                        "or remove the story") from None
    if not path.is_file():
        raise DataError(f"audio path {path} is not a file; point it at a .wav file")
    if st.st_size == 0:
        raise DataError(f"audio file {path} is empty (0 bytes); re-download it")
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit.copy()
    audio = _decode(path)
    with _lock:
        _cache[key] = audio
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return audio.copy()


def _decode(path: Path) -> np.ndarray:
    import soundfile as sf

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, ValueError, OSError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"cannot read audio file {path} ({first}); it is corrupt or not audio — "
                        "re-download it") from None
    if data.shape[0] == 0:
        raise DataError(f"audio file {path} has no samples; re-download it")
    if not np.all(np.isfinite(data)):
        raise DataError(f"audio file {path} holds NaN/inf samples; re-export it as PCM wav")
    if not np.any(data):
        raise DataError(f"audio file {path} is silent (all samples are zero); re-download it")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return resample_to(mono, rate, SAMPLE_RATE)


def clear_cache() -> None:
    """Forget all decoded files (tests; or after files changed in place with equal size/mtime)."""
    with _lock:
        _cache.clear()
