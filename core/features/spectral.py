"""Mel-band envelopes of an audio waveform (the demo's acoustic driver and ``lowlevel:powspec``).

Short-time power spectrum (Hann window, 25 ms, hop 10 ms by default) → triangular mel filter bank
(Slaney-normalised, via ``transformers.audio_utils.mel_filter_bank``) → log(1 + power).
"""

from __future__ import annotations

import numpy as np
from scipy.signal import stft


def mel_band_envelopes(audio: np.ndarray, sample_rate: int = 16_000, n_bands: int = 32,
                       win_s: float = 0.025, hop_s: float = 0.010, fmin: float = 50.0,
                       fmax: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Log mel-band power of ``audio``.

    Parameters
    ----------
    audio : ``(n_samples,)`` float mono waveform.
    sample_rate : Hz.
    n_bands : number of mel bands (default 32).
    win_s, hop_s : analysis window and hop, seconds.

    Returns
    -------
    times : ``(n_frames,)`` seconds, frame centres.
    envelopes : ``(n_frames, n_bands)`` float32, ``log1p`` of mel-band power.
    """
    from transformers.audio_utils import mel_filter_bank

    nper = int(round(win_s * sample_rate))
    hop = int(round(hop_s * sample_rate))
    f, t, z = stft(np.asarray(audio, dtype=np.float64), fs=sample_rate, window="hann", nperseg=nper,
                   noverlap=nper - hop, boundary=None, padded=False)
    power = (np.abs(z) ** 2).T  # (n_frames, n_freqs)
    fb = mel_filter_bank(num_frequency_bins=len(f), num_mel_filters=n_bands, min_frequency=fmin,
                         max_frequency=fmax or sample_rate / 2, sampling_rate=sample_rate,
                         norm="slaney", mel_scale="slaney")
    env = np.log1p(power @ fb * 1e4).astype(np.float32)
    return t.astype(np.float64), env
