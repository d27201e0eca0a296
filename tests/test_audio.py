"""Audio reader: any rate / channel count → 16 kHz float32 mono; clear errors on bad files."""

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from core.data.audio import load_audio
from core.data.layout import write_wav
from core.errors import DataError

SR = 16_000


def _tone(rate, seconds=1.0, freq=440.0, amp=0.5):
    t = np.arange(int(rate * seconds)) / rate
    return amp * np.sin(2 * np.pi * freq * t)


@pytest.mark.parametrize("rate, channels", [(16000, 1), (44100, 1), (44100, 2), (22050, 1),
                                            (8000, 1), (48000, 3)])
def test_any_rate_and_channels_give_the_tone_at_16k(tmp_path, rate, channels):
    # channel c carries (c + 1) * tone, so the mono mix is mean(1..C) * tone (closed form)
    tone = _tone(rate, amp=0.3)
    wav = np.stack([(c + 1) * tone for c in range(channels)], axis=1) if channels > 1 else tone
    p = tmp_path / f"t{rate}_{channels}.wav"
    write_wav(p, wav, rate)
    audio = load_audio(p)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) == int(np.ceil(len(tone) * SR / rate))
    gain = np.mean(np.arange(1, channels + 1))
    expected = gain * _tone(SR, seconds=len(audio) / SR, amp=0.3)[:len(audio)]
    core = slice(800, -800)  # the FIR filter's edge transients
    np.testing.assert_allclose(audio[core], expected[core], atol=2e-3)


def test_stereo_mix_equals_mean_of_channels_resampled(tmp_path):
    rng = np.random.default_rng(0)
    wav = 0.3 * rng.uniform(-1, 1, size=(44100, 2))
    p = tmp_path / "noise.wav"
    write_wav(p, wav, 44100)
    raw, rate = sf.read(str(p), dtype="float64")
    assert rate == 44100 and raw.shape == (44100, 2)
    ref = resample_poly(raw.mean(axis=1), 160, 441)
    np.testing.assert_allclose(load_audio(p), ref, atol=1e-6)


def test_returns_a_copy_so_the_cache_stays_intact(tmp_path):
    p = tmp_path / "a.wav"
    write_wav(p, _tone(SR), SR)
    a = load_audio(p)
    a[:] = 0
    assert np.abs(load_audio(p)).max() > 0.4


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"gone\.wav does not exist"):
        load_audio(tmp_path / "gone.wav")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.wav"
    p.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.wav is empty"):
        load_audio(p)


def test_corrupt_file(tmp_path):
    p = tmp_path / "corrupt.wav"
    p.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 4)
    with pytest.raises(DataError, match=r"cannot read audio file .*corrupt\.wav"):
        load_audio(p)


def test_git_annex_pointer_is_reported_as_corrupt(tmp_path):
    p = tmp_path / "pointer.wav"
    p.write_text("/annex/objects/SHA256E-s52918400--abc.wav\n")
    with pytest.raises(DataError, match=r"pointer\.wav.*re-download"):
        load_audio(p)


def test_zero_samples(tmp_path):
    p = tmp_path / "nosamples.wav"
    sf.write(str(p), np.zeros(0, dtype=np.float32), SR, subtype="PCM_16")
    assert p.stat().st_size > 0
    with pytest.raises(DataError, match=r"nosamples\.wav has no samples"):
        load_audio(p)


def test_silent_file(tmp_path):
    p = tmp_path / "silent.wav"
    write_wav(p, np.zeros(SR), SR)
    with pytest.raises(DataError, match=r"silent\.wav is silent"):
        load_audio(p)
