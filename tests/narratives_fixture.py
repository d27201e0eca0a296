"""A small dataset in the published Narratives (ds002345 DataLad) layout with planted effects.

``make_narratives_fixture(root)`` writes::

    participants.tsv                                   comma-joined per-task task/condition
    code/event_meta.json, code/scan_exclude.json       onsets/durations in TRs; exclusions
    stimuli/<story>_audio.wav                          44.1 kHz PCM (synthetic band noises)
    stimuli/gentle/<story>/align.json                  Gentle words (+ one not-found-in-audio) and
                                                       suffixed lower-case phones
    sub-XXX/func/<scan>_bold.json, <scan>_events.tsv   RepetitionTime; music/story events
    derivatives/afni-nosmooth/sub-XXX/func/<scan>_space-fsaverage6_hemi-{L,R}_desc-clean.func.gii
                                                       40,962 vertices per hemisphere, float32,
                                                       NaN outside a patch of fsaverage5 vertices

Stories (short): ``pieman`` (TR 1.5 s; WAV from scan time 0 with music 0–13 s, story at 15 s;
sub-001/002 have run-1 and run-2), ``lucy`` (TR 1.5; WAV = the story; events at 3.0 s = 2 TRs
while event_meta.json says 1; sub-004's events say 0.0 s, a trigger shift, and its data follow
them; sub-005 is listed but has no scan), ``milkywaysynonyms`` (task milkyway, condition
synonyms, TR 1.52; music 0–18 s, story at 21 s; sub-005's scan excluded by scan_exclude.json;
sub-002's condition only in its ``_scans.tsv``).

Planted: on every subject the same ``acoustic`` vertices carry ``√ρ·S + √(1−ρ)·noise`` with
``S`` a fixed random mel-band weighting of the served audio's envelopes (the reader's time base:
audio time 0 = scan time (onset + 1)·TR), HRF-convolved and z-scored; ``ρ`` = ``rho`` (true
single-presentation ceiling √ρ); ``noise`` vertices are noise only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.signal import lfilter

from core.data import timing
from core.data.audio import resample_to
from core.data.base import SAMPLE_RATE
from core.data.layout import write_wav
from core.features.spectral import mel_band_envelopes
from tests.ds_fixture import LEXICON, hrf, synth_audio, synth_transcript

SUBJECTS = ("sub-001", "sub-002", "sub-003", "sub-004", "sub-005")
#: story → task, condition, TR, event_meta onset (TRs), duration (TRs), events [(onset, dur, type)],
#: WAV start in scan time, subjects with scans
STORIES = {
    "pieman": dict(task="pieman", cond=None, tr=1.5, meta_onset=10, duration=100,
                   events=[(0.0, 13.0, "music"), (15.0, 141.0, "story")], wav_at=0.0,
                   subjects=SUBJECTS),
    "lucy": dict(task="lucy", cond=None, tr=1.5, meta_onset=1, duration=80,
                 events=[(3.0, 120.0, "story")], wav_at=3.0, subjects=SUBJECTS[:4]),
    "milkywaysynonyms": dict(task="milkyway", cond="synonyms", tr=1.52, meta_onset=14, duration=70,
                             events=[(0.0, 18.0, "music"), (21.0, 100.0, "story")], wav_at=0.0,
                             subjects=SUBJECTS),
}
TWO_RUNS = ("sub-001", "sub-002")
SHIFTED = {("sub-004", "lucy"): 0.0}  #: per-scan story onset (s) of trigger-shifted scans
EXCLUDED = "sub-005_task-milkyway"
EXTRA_TRS = 4  #: volumes after the story window
SCANS_TSV = "sub-002"  #: its conditions only in sub-002/sub-002_scans.tsv (participants.tsv: n/a)


def _gifti(path: Path, data: np.ndarray) -> None:
    """Write ``(n_vertices, n_trs)`` as a GIfTI time series (one float32 array per TR)."""
    import nibabel as nib

    img = nib.gifti.GiftiImage(darrays=[nib.gifti.GiftiDataArray(
        np.ascontiguousarray(col, dtype=np.float32), intent="NIFTI_INTENT_TIME_SERIES",
        datatype="NIFTI_TYPE_FLOAT32") for col in data.T])
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


def _align_json(words, phones_of, shift: float, rng) -> dict:
    """Gentle structure: success words with suffixed phones, plus one not-found-in-audio word."""
    out, pos = [], 0
    for i, (a, b, w) in enumerate(words):
        lab = w.lower()
        ph = [p.rstrip("012").lower() for p in LEXICON[lab].split()]
        d = (b - a) / len(ph)
        suf = ["_S"] if len(ph) == 1 else ["_B"] + ["_I"] * (len(ph) - 2) + ["_E"]
        out.append({"alignedWord": lab, "case": "success", "start": round(a + shift, 3),
                    "end": round(b + shift, 3), "startOffset": pos, "endOffset": pos + len(w),
                    "word": w, "phones": [{"phone": p + s, "duration": d} for p, s in zip(ph, suf)]})
        pos += len(w) + 1
        if i == 3:  # an untimed word (Gentle: not found in the audio)
            out.append({"case": "not-found-in-audio", "word": "uh", "startOffset": pos,
                        "endOffset": pos + 2})
            pos += 3
    return {"transcript": " ".join(w["word"] for w in out), "words": out}


def served_features(x16: np.ndarray, crop: float, n_trs: int, tr: float) -> np.ndarray:
    """Mean mel envelopes per TR stamp (all ``n_trs + 15``) of the audio served from ``crop``."""
    served = x16[int(round(crop * SAMPLE_RATE)):] if crop >= 0 else \
        np.r_[np.zeros(int(round(-crop * SAMPLE_RATE))), x16]
    env_t, env = mel_band_envelopes(served.astype(np.float32), SAMPLE_RATE)
    n = n_trs + 15
    mel = np.zeros((n, env.shape[1]))
    for k in range(n):
        a, b = timing.tr_window(k, tr)
        sel = (env_t >= a) & (env_t < b)
        if sel.any():
            mel[k] = env[sel].mean(axis=0)
    return mel


def _z(x):
    sd = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def make_narratives_fixture(root: Path, seed: int = 0, rho: float = 0.5, n_patch: int = 150,
                            n_acoustic: int = 60) -> dict:
    """Write the fixture under ``root``; return ``{"root", "stories", "subjects", "vertices"
    (fsaverage5 indices with data), "acoustic", "noise" (fsaverage5 indices), "rho", "signal"
    {story: (n_trs, n_acoustic) S}, "n_trs" {story: rows}}``."""
    from core.data.fsaverage import N_PER_HEMI, cortex_mask, standard_rois

    root = Path(root)
    rng = np.random.default_rng(seed)
    cortex = cortex_mask()
    ac = np.flatnonzero(standard_rois()["AC"])
    pool = np.setdiff1d(np.flatnonzero(cortex), ac)
    verts = np.union1d(ac, rng.choice(pool, 2 * n_patch, replace=False))
    acoustic = np.sort(rng.choice(verts, n_acoustic, replace=False))
    noise = np.setdiff1d(verts, acoustic)
    w = rng.standard_normal((32, n_acoustic)) * (rng.random((32, n_acoustic)) < 0.3)
    (root / "code").mkdir(parents=True, exist_ok=True)
    meta = {c["task"]: {c["task"]: {"onset": c["meta_onset"], "duration": c["duration"]}}
            for c in STORIES.values()}
    (root / "code" / "event_meta.json").write_text(json.dumps(meta, indent=1))
    (root / "code" / "scan_exclude.json").write_text(json.dumps(
        {"milkyway": {"sub-005": [EXCLUDED]}, "pieman": {}}, indent=1))
    rows = ["participant_id\tage\tsex\ttask\tcondition\tcomprehension"]
    for sub in SUBJECTS:
        heard = [(c["task"], c["cond"] if c["cond"] and sub != SCANS_TSV else "n/a")
                 for s, c in STORIES.items() if sub in c["subjects"] or (sub == "sub-005" and s == "lucy")]
        rows.append(f"{sub}\t" + ",".join("25" for _ in heard) + "\t" + ",".join("F" for _ in heard)
                    + "\t" + ",".join(t for t, _ in heard) + "\t" + ",".join(c for _, c in heard)
                    + "\t" + ",".join("n/a" for _ in heard))
    (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    (root / SCANS_TSV).mkdir(parents=True, exist_ok=True)
    (root / SCANS_TSV / f"{SCANS_TSV}_scans.tsv").write_text("filename\tcondition\tcomprehension\n")
    h = {}
    out = {"root": root, "stories": sorted(STORIES), "subjects": list(SUBJECTS), "vertices": verts,
           "acoustic": acoustic, "noise": noise, "rho": rho, "signal": {}, "n_trs": {}}
    for story, c in STORIES.items():
        tr, onset, dur = c["tr"], int(round(c["events"][-1][0] / c["tr"])), c["duration"]
        story_on = c["events"][-1][0]
        n_trs, n_scan = dur - 6, onset + dur + EXTRA_TRS
        wav_len = n_scan * tr - c["wav_at"]
        body = synth_audio(rng, wav_len - (story_on - c["wav_at"]) - 1.0)
        x16 = np.zeros(int(round(wav_len * SAMPLE_RATE)))
        i0 = int(round((story_on - c["wav_at"]) * SAMPLE_RATE))
        x16[i0:i0 + len(body)] = body
        if c["events"][0][2] == "music":  # a tone for the music
            t = np.arange(int(c["events"][0][1] * SAMPLE_RATE)) / SAMPLE_RATE
            x16[:len(t)] = 0.3 * np.sin(2 * np.pi * 440 * t)
        write_wav(root / "stimuli" / f"{story}_audio.wav", resample_to(x16, SAMPLE_RATE, 44100), 44100)
        words, _ = synth_transcript(rng, len(body) / SAMPLE_RATE)
        words = [x for x in words if x[2].lower() in LEXICON]
        g = root / "stimuli" / "gentle" / story
        g.mkdir(parents=True, exist_ok=True)
        (g / "align.json").write_text(json.dumps(_align_json(words, LEXICON, story_on - c["wav_at"], rng)))
        crop = (onset + 1) * tr - c["wav_at"]
        mel = served_features(x16, crop, n_trs, tr)
        h[tr] = h.get(tr, hrf(tr))
        sig = _z(lfilter(h[tr], [1.0], (mel - mel.mean(0)) @ w, axis=0)[10:-5])
        out["signal"][story], out["n_trs"][story] = sig, n_trs
        for sub in c["subjects"]:
            for run in ((1, 2) if story == "pieman" and sub in TWO_RUNS else (None,)):
                name = f"{sub}_task-{c['task']}" + (f"_run-{run}" if run else "")
                func = root / sub / "func"
                func.mkdir(parents=True, exist_ok=True)
                if sub == SCANS_TSV:
                    with open(root / sub / f"{sub}_scans.tsv", "a") as f:
                        f.write(f"func/{name}_bold.nii.gz\t{c['cond'] or 'n/a'}\tn/a\n")
                (func / f"{name}_bold.json").write_text(
                    json.dumps({"RepetitionTime": tr, "TaskName": c["task"]}))
                on_s = SHIFTED.get((sub, story), story_on)
                evs = [(o - story_on + on_s, d, t) for o, d, t in c["events"]]
                (func / f"{name}_events.tsv").write_text(
                    "onset\tduration\ttrial_type\tstim_file\n" + "".join(
                        f"{o}\t{d}\t{t}\t{story}_audio.wav\n" for o, d, t in evs))
                data = 5.0 * rng.standard_normal((n_scan, len(verts))) + 100.0
                start = int(round(on_s / tr)) + 6
                y = np.sqrt(1 - rho) * rng.standard_normal((n_trs, len(verts)))
                y[:, np.searchsorted(verts, acoustic)] += np.sqrt(rho) * sig
                data[start:start + n_trs] = 100.0 + 5.0 * y
                full = np.full((2 * N_PER_HEMI, n_scan), np.nan, dtype=np.float32)
                full[verts] = data.T
                der = root / "derivatives" / "afni-nosmooth" / sub / "func"
                for hemi, part in (("L", full[:N_PER_HEMI]), ("R", full[N_PER_HEMI:])):
                    fs6 = np.full((40962, n_scan), np.nan, dtype=np.float32)
                    fs6[:N_PER_HEMI] = part
                    _gifti(der / f"{name}_space-fsaverage6_hemi-{hemi}_desc-clean.func.gii", fs6)
    return out
