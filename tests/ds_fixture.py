"""A tiny dataset in exactly the published ds003020 layout, with planted, recoverable effects.

``make_ds003020_fixture(root)`` writes (with ``core.data.layout``'s writers)::

    stimuli/<story>.wav  (+ auditory_localizer.wav, not a story)
    derivative/TextGrids/<story>.TextGrid
    derivative/respdict.json
    derivative/preprocessed_data/UTS01/<story>.hf5   all stories
    derivative/preprocessed_data/UTS02/<story>.hf5   all but the last training story

Stories use real ds003020 names: ``wheretheressmoke`` (test, with ``individual_repeats``),
``stagefright`` (the paper's validation story), then training stories. Their audio is synthetic:
four band-limited noises (100–7000 Hz) whose amplitudes jump at random every 0.4–2.5 s, lasting
``duration_range`` seconds; ``R = timing.run_trs_for_duration(duration)`` so duration ≈ 2R − 20 s.

File variants (by story position; see ``VARIANTS``): 16 kHz mono, 44.1 kHz mono, 44.1 kHz stereo
(L = x + n, R = x − n, so the channel mean is the source x), 22.05 kHz mono; TextGrids in Praat
long format, long with CRLF, long without tier names (position fallback), and short format. Word
tiers carry fillers (``sp``, ``{BR}``, ``sentence_start``, ``{LG}``, ``ns``, whitespace, empty
gaps) and some capitalised words; phones carry stress digits, ``sp`` and ``sil``.

Planted voxels (per subject): acoustic voxels = a smooth random weighting of the 32 mel-band
envelopes (``core.features.spectral``) averaged over each TR's acquisition window, convolved with
a double-gamma HRF; word-rate voxels = number of word onsets per TR window convolved with the
HRF; the rest noise. Sampled at all ``R − 5`` TR stamps and trimmed ``[10:-5]``
(``core.data.timing``), z-scored, plus Gaussian noise (each repeat of the test story its own),
then z-scored per story like the released data. One voxel has NaNs (rows of one training story),
one is constant (zeros everywhere).

``real_defects=True`` adds what the real download has (``planted`` keys in brackets): a voxel with
``-inf`` in one training story's ``data`` ("inf"), a voxel with NaNs in one repeat of the test
story ("nan_repeat"), one with ``+inf`` in a repeat ("inf_repeat"), and one constant over time in
one repeat ("constant_repeat"); the test story's ``data`` stays finite for those. They are taken
from the noise voxels, so every other planted voxel and value is the same as without it.

:func:`corrupt_hf5_chunk` damages an ``.hf5`` so that it opens (headers read fine) but reading a
dataset fails inside h5py, like a torn download.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.fft import irfft, next_fast_len, rfft
from scipy.ndimage import uniform_filter1d
from scipy.signal import lfilter
from scipy.stats import gamma

from core.data import timing
from core.data.audio import resample_to
from core.data.base import SAMPLE_RATE, Events
from core.data.layout import (fill_gaps, responses_dir, stimuli_dir, textgrid_dir,
                              write_respdict, write_responses, write_textgrid, write_wav)
from core.data.textgrid import clean_phone, clean_word
from core.features.spectral import mel_band_envelopes
from core.store import atomic_path

#: keys of ``planted[subj]`` added by ``real_defects=True``
DEFECTS = ("inf", "nan_repeat", "inf_repeat", "constant_repeat")

#: test, val, then training stories (real ds003020 names; life is short-format in the real data)
STORY_ORDER = ("wheretheressmoke", "stagefright", "adollshouse", "life", "legacy", "souls", "naked",
               "buck", "avatar", "sloth")
#: per story position: (sample rate Hz, channels, TextGrid format); cycles past the end
VARIANTS = ((16000, 1, "long"), (44100, 1, "crlf"), (44100, 2, "unnamed"), (22050, 1, "short"),
            (16000, 1, "long"))
BANDS = ((100, 400), (400, 1200), (1200, 3000), (3000, 7000))  #: Hz, the synthetic audio's noises
WORD_FILLERS = ("sp", "{BR}", "sentence_start", "{LG}", " ", "ns", "sentence_end")
LEXICON = {"the": "DH AH0", "story": "S T AO1 R IY0", "and": "AE1 N D", "i": "AY1",
           "was": "W AA1 Z", "going": "G OW1 IH0 NG", "home": "HH OW1 M", "mother": "M AH1 DH ER0",
           "said": "S EH1 D", "night": "N AY1 T", "water": "W AO1 T ER0", "house": "HH AW1 S",
           "we": "W IY1", "it's": "IH1 T S", "smoke": "S M OW1 K", "friend": "F R EH1 N D"}


def hrf(tr: float = timing.TR_SECONDS, length_s: float = 32.0) -> np.ndarray:
    """Double-gamma HRF (peak ≈ 5 s, undershoot ≈ 15 s, ratio 1/6) sampled every ``tr``, sum 1."""
    t = np.arange(0.0, length_s, tr)
    h = gamma.pdf(t, 6.0) - gamma.pdf(t, 16.0) / 6.0
    return h / h.sum()


def _band_noises(rng, n: int) -> list:
    """One unit-variance noise per band of ``BANDS``, ``(n,)`` each (disjoint spectra of one
    white noise, so they are independent)."""
    m = next_fast_len(n)
    spec = rfft(rng.standard_normal(m))
    f = np.fft.rfftfreq(m, 1.0 / SAMPLE_RATE)
    out = []
    for lo, hi in BANDS:
        x = irfft(np.where((f >= lo) & (f <= hi), spec, 0.0), m)[:n]
        out.append(x / x.std())
    return out


def _envelope(rng, n: int) -> np.ndarray:
    """Piecewise-constant amplitude (segments 0.4–2.5 s, 20 % silent), 20 ms smoothed."""
    env, i = np.zeros(n), 0
    while i < n:
        seg = int(rng.uniform(0.4, 2.5) * SAMPLE_RATE)
        env[i:i + seg] = 0.0 if rng.random() < 0.2 else rng.uniform(0.05, 1.0)
        i += seg
    return uniform_filter1d(env, int(0.02 * SAMPLE_RATE))


def synth_audio(rng, duration_s: float) -> np.ndarray:
    """Synthetic 16 kHz source ``(n,)`` float64, peak 0.5, content in 100–7000 Hz."""
    n = int(round(duration_s * SAMPLE_RATE))
    x = sum(_envelope(rng, n) * noise for noise in _band_noises(rng, n))
    return 0.5 * x / np.abs(x).max()


def synth_transcript(rng, duration_s: float) -> tuple:
    """Raw word and phone intervals ``[(on, off, label)]`` with fillers, word rate varying
    0–3.5 words/s over 2–6 s segments."""
    words, phones, t = [], [], 0.3
    vocab = list(LEXICON)
    while t < duration_s - 1.0:
        seg = min(rng.uniform(2.0, 6.0), duration_s - 0.5 - t)
        n = min(rng.poisson(rng.choice([0.0, 0.5, 1.5, 2.5, 3.5]) * seg), int(seg / 0.25))
        slot = seg / max(n, 1)
        for j in range(n):
            dur = min(0.8 * slot, rng.uniform(0.15, 0.4))
            on = t + j * slot + rng.uniform(0.0, slot - dur)
            w = vocab[rng.integers(len(vocab))]
            words.append((on, on + dur, w.capitalize() if rng.random() < 0.2 else w))
            ph = LEXICON[w].split()
            edges = np.linspace(on, on + dur, len(ph) + 1)
            phones += [(a, b, p) for a, b, p in zip(edges[:-1], edges[1:], ph)]
        t += seg
    fillers, pfill, k = [], [], 0
    for (_, b, _), (a, _, _) in zip(words[:-1], words[1:]):
        if a - b > 0.2:
            mid = (a + b) / 2
            fillers.append((mid - 0.05, mid + 0.05, WORD_FILLERS[k % len(WORD_FILLERS)]))
            pfill.append((mid - 0.05, mid + 0.05, ("sp", "sil")[k % 2]))
            k += 1
    return sorted(words + fillers), sorted(phones + pfill)


def clean_events(intervals, clean) -> Events:
    """Reference cleaning of raw intervals (what the reader must return)."""
    kept = [(a, b, c) for a, b, lab in intervals if (c := clean(lab)) is not None]
    return Events([c for _, _, c in kept], np.array([a for a, _, _ in kept]),
                  np.array([b for _, b, _ in kept]))


def write_textgrid_short(path: Path, phones, words, xmax: float,
                         tier_names=("phone", "word")) -> None:
    """Write a Praat short-format ("ooTextFile" with bare values) TextGrid."""
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "0", str(xmax),
             "<exists>", "2"]
    for name, ev in zip(tier_names, (phones, words)):
        ivs = fill_gaps(ev, xmax)
        lines += ['"IntervalTier"', f'"{name}"', "0", str(xmax), str(len(ivs))]
        for a, b, lab in ivs:
            lines += [str(a), str(b), '"' + lab.replace('"', '""') + '"']
    with atomic_path(Path(path)) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def _tr_features(env_t, env, words, n_trs_run: int) -> tuple:
    """Per TR stamp (all R − 5): mean mel envelope over the TR window, and word-onset count."""
    n = timing.n_stamps(n_trs_run)
    mel = np.zeros((n, env.shape[1]))
    rate = np.zeros(n)
    onsets = np.array([a for a, _, _ in words])
    for k in range(n):
        a, b = timing.tr_window(k)
        sel = (env_t >= a) & (env_t < b)
        if sel.any():
            mel[k] = env[sel].mean(axis=0)
        rate[k] = np.count_nonzero((onsets >= a) & (onsets < b))
    return mel, rate


def _zscore(x: np.ndarray) -> np.ndarray:
    sd = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def make_ds003020_fixture(root: Path, *, n_stories: int = 5, n_voxels: int = 300,
                          n_repeats: int = 4, duration_range: tuple = (50.0, 62.0),
                          noise_sd: float = 0.6, seed: int = 0, real_defects: bool = False) -> dict:
    """Write the fixture under ``root`` and return what was planted.

    Parameters
    ----------
    root : dataset root to create (holds ``stimuli/`` and ``derivative/``).
    n_stories : 3–10 stories: test, val, then training ones.
    n_voxels : voxels of UTS01; UTS02 gets ``int(0.8 * n_voxels)``.
    n_repeats : repeats of the test story.
    duration_range : (min, max) story audio duration, seconds.
    noise_sd : noise standard deviation per repeat, relative to a unit-variance planted signal.
    seed : every random choice derives from it.
    real_defects : also plant ``-inf`` in a training story's data and NaN / ``+inf`` / constant
        voxels in the test story's repeats (module docstring; ``planted`` keys ``DEFECTS``).

    Returns
    -------
    dict with ``root``, ``stories`` (sorted), ``test_story``, ``val_story``, ``respdict``,
    ``durations`` {story: s}, ``audio`` {story: 16 kHz float32 source}, ``variants`` {story:
    {"sample_rate", "channels", "textgrid"}}, ``words`` / ``phones`` {story: expected cleaned
    Events}, ``raw_words`` / ``raw_phones`` {story: raw intervals}, ``subjects`` {subj:
    {"stories", "missing", "n_voxels", "n_repeats"}}, ``planted`` {subj: {"acoustic",
    "wordrate", "noise", "nan", "constant": voxel indices}}, plus ``DEFECTS`` keys (one voxel each)
    when ``real_defects``.
    """
    if not 3 <= n_stories <= len(STORY_ORDER):
        raise ValueError(f"n_stories must be 3..{len(STORY_ORDER)}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    names = list(STORY_ORDER[:n_stories])
    out = {"root": root, "stories": sorted(names), "test_story": names[0], "val_story": names[1],
           "respdict": {}, "durations": {}, "audio": {}, "variants": {}, "words": {}, "phones": {},
           "raw_words": {}, "raw_phones": {}, "subjects": {}, "planted": {}}
    feats = {}
    for i, story in enumerate(names):
        rate, channels, fmt = VARIANTS[i % len(VARIANTS)]
        d = float(np.round(rng.uniform(*duration_range), 2))
        x = synth_audio(rng, d)
        words, phones = synth_transcript(rng, d)
        r = timing.run_trs_for_duration(d)
        out["respdict"][story], out["durations"][story] = r, d
        out["audio"][story] = x.astype(np.float32)
        out["variants"][story] = {"sample_rate": rate, "channels": channels, "textgrid": fmt}
        out["raw_words"][story], out["raw_phones"][story] = words, phones
        out["words"][story] = clean_events(words, clean_word)
        out["phones"][story] = clean_events(phones, clean_phone)
        wav = resample_to(x, SAMPLE_RATE, rate)
        if channels == 2:  # L = x + n, R = x - n: the channel mean is the source
            side = 0.1 * rng.uniform(-1.0, 1.0, len(wav))
            wav = np.stack([wav + side, wav - side], axis=1)
        write_wav(stimuli_dir(root) / f"{story}.wav", wav, rate)
        tg = textgrid_dir(root) / f"{story}.TextGrid"
        if fmt == "short":
            write_textgrid_short(tg, phones, words, d)
        else:
            write_textgrid(tg, phones, words, d, crlf=fmt == "crlf",
                           tier_names=("", "") if fmt == "unnamed" else ("phone", "word"))
        env_t, env = mel_band_envelopes(x.astype(np.float32), SAMPLE_RATE)
        feats[story] = _tr_features(env_t, env, words, r)
    write_respdict(root, out["respdict"])
    write_wav(stimuli_dir(root) / "auditory_localizer.wav", 0.1 * rng.standard_normal(SAMPLE_RATE), SAMPLE_RATE)
    h = hrf()
    for s_idx, subj in enumerate(("UTS01", "UTS02")):
        nv = n_voxels if s_idx == 0 else int(0.8 * n_voxels)
        stories = names if s_idx == 0 else names[:-1]
        perm = rng.permutation(nv)
        n_a, n_w = nv // 5, nv // 5
        plant = {"acoustic": np.sort(perm[:n_a]), "wordrate": np.sort(perm[n_a:n_a + n_w]),
                 "nan": perm[n_a + n_w:n_a + n_w + 1], "constant": perm[n_a + n_w + 1:n_a + n_w + 2],
                 "noise": np.sort(perm[n_a + n_w + 2:])}
        if real_defects:  # from the noise voxels, without drawing from rng (all else unchanged)
            k = n_a + n_w + 2
            plant.update({name: perm[k + i:k + i + 1] for i, name in enumerate(DEFECTS)})
            plant["noise"] = np.sort(perm[k + len(DEFECTS):])
        # smooth random band weightings: a few Gaussian bumps across the 32 mel bands
        centres = rng.uniform(0, 31, size=(n_a, 3))
        band = np.arange(32)
        w = (rng.standard_normal((n_a, 3, 1)) * np.exp(-0.5 * ((band - centres[..., None]) / 4.0) ** 2)).sum(1)
        for story in stories:
            mel, wr = feats[story]
            drive = np.zeros((len(wr), nv))
            drive[:, plant["acoustic"]] = (mel - mel.mean(0)) @ w.T
            drive[:, plant["wordrate"]] = (wr - wr.mean())[:, None]
            sig = _zscore(lfilter(h, [1.0], drive, axis=0)[timing.TRIM_START:-timing.TRIM_END])
            sig[:, plant["noise"]] = 0.0
            reps = n_repeats if story == names[0] else 1
            noisy = sig[None] + noise_sd * rng.standard_normal((reps,) + sig.shape)
            data = _zscore(noisy.mean(0))
            rep_data = np.stack([_zscore(y) for y in noisy]) if reps > 1 else None
            for arr in (data, rep_data):
                if arr is not None:
                    arr[..., plant["constant"]] = 0.0
            if story == names[2]:
                data[3:7, plant["nan"]] = np.nan
                if real_defects:
                    data[10, plant["inf"]] = -np.inf
            if real_defects and rep_data is not None:
                rep_data[1, 5:9, plant["nan_repeat"]] = np.nan
                rep_data[reps - 1, 0, plant["inf_repeat"]] = np.inf
                rep_data[0, :, plant["constant_repeat"]] = 0.25
            write_responses(responses_dir(root, subj) / f"{story}.hf5", data, rep_data)
        out["planted"][subj] = plant
        out["subjects"][subj] = {"stories": sorted(stories), "missing": sorted(set(names) - set(stories)),
                                 "n_voxels": nv, "n_repeats": n_repeats}
    return out


def corrupt_hf5_chunk(path: Path, name: str = "data") -> None:
    """Rewrite ``path`` with dataset ``name`` gzip-chunked, then overwrite its first chunk's bytes
    (same file size): the file opens and ``f[name].shape`` reads, but ``f[name][()]`` raises
    ``OSError`` ("filter returned failure during read") inside h5py."""
    import h5py

    path = Path(path)
    with h5py.File(path, "r") as f:
        arrays = {k: f[k][()] for k in f}
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            if k == name:
                f.create_dataset(k, data=v, chunks=v.shape, compression="gzip")
            else:
                f.create_dataset(k, data=v)
    with h5py.File(path, "r") as f:
        chunk = f[name].id.get_chunk_info(0)
    with open(path, "r+b") as fh:
        fh.seek(chunk.byte_offset)
        fh.write(b"\xff" * chunk.size)
