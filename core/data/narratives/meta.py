"""Readers for the Narratives (ds002345) metadata files: participants, scans, events, TRs, Gentle.

Facts (``/work/shared/reference/narratives.md``): ``participants.tsv`` holds one comma-separated
value per task in its ``task`` / ``condition`` columns; ``code/event_meta.json`` gives
``{task: {part: {"onset": TRs, "duration": TRs}}}``; ``code/scan_exclude.json`` gives
``{task: {sub: ["sub-XXX_task-T[_run-N]", …]}}``; BOLD sidecars carry ``RepetitionTime``;
``*_events.tsv`` has ``onset duration trial_type stim_file`` (seconds from scan start); Gentle's
``align.json`` lists words with ``case`` ``success`` (timed) or not (untimed, skipped) and phones
with position suffixes ``_B _I _E _S``.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Optional

import numpy as np

from core.data.base import Events
from core.data.textgrid import clean_phone
from core.errors import DataError

DEFAULT_TR = 1.5  #: seconds; every Narratives scan but milkyway synonyms (RepetitionTime)
#: TRs used when no BOLD sidecar is present (documented facts of ds002345)
KNOWN_TR = {"milkywaysynonyms": 1.52}
#: event_meta.json onsets known to be wrong (TRs): lucy's events moved from 2.0 to 3.0 s in
#: release 1.1.3, i.e. 2 TRs, while event_meta.json still says 1
ONSET_FIXES = {"lucy": 2}
#: phones Gentle emits that are not speech sounds of the project's set (dropped like silences)
GENTLE_NON_PHONES = frozenset({"oov", "sil", "sp", "spn", "nsn"})
SCAN_NAME = re.compile(r"^(sub-[A-Za-z0-9]+)_task-([A-Za-z0-9]+)(?:_run-(\d+))?")


def read_json(path: Path, what: str):
    """Parse a JSON file; a missing or malformed file → one-line DataError naming it."""
    if not path.is_file():
        raise DataError(f"{path} is missing; it ships with the Narratives DataLad release "
                        f"({what}) — `datalad get` it")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise DataError(f"{path} is not valid JSON ({err}); re-download it") from None


def read_tsv(path: Path) -> list:
    """Rows of a BIDS ``.tsv`` as dicts (header = first line); malformed → DataError."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"cannot read {path} ({err}); re-download it") from None
    return rows


def event_meta(root: Path) -> dict:
    """``{task: {part: (onset_trs, duration_trs)}}`` from ``code/event_meta.json``."""
    path = root / "code" / "event_meta.json"
    raw = read_json(path, "story onsets and durations in TRs")
    try:
        return {str(t): {str(p): (int(v["onset"]), int(v["duration"])) for p, v in parts.items()}
                for t, parts in raw.items()}
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        raise DataError(f"{path} must be {{task: {{story: {{\"onset\": TRs, \"duration\": TRs}}}}}} "
                        f"({type(err).__name__}: {err}); re-download it") from None


def scan_exclude(root: Path) -> set:
    """Scan-name prefixes to drop (``code/scan_exclude.json``; absent → none)."""
    path = root / "code" / "scan_exclude.json"
    if not path.is_file():
        return set()
    raw = read_json(path, "scans to exclude")
    try:
        return {str(p) for subs in raw.values() for names in subs.values() for p in names}
    except (AttributeError, TypeError) as err:
        raise DataError(f"{path} must be {{task: {{sub: [scan names]}}}} ({err}); re-download it") from None


def participants(root: Path) -> dict:
    """``{subject: {task: condition or None}}`` from ``participants.tsv`` (one value per task,
    comma-separated; ``n/a`` → None)."""
    path = root / "participants.tsv"
    out = {}
    for row in read_tsv(path):
        sub = (row.get("participant_id") or "").strip()
        if not sub:
            continue
        tasks = [t.strip() for t in (row.get("task") or "").split(",") if t.strip()]
        raw = (row.get("condition") or "").strip()
        conds = [c.strip() for c in raw.split(",")] if raw else []
        if conds and len(conds) != len(tasks):
            raise DataError(f"{path}: {sub} lists {len(tasks)} tasks but {len(conds)} conditions; "
                            "each column needs one comma-separated value per task")
        out[sub] = {t: (None if i >= len(conds) or conds[i] in ("", "n/a") else conds[i])
                    for i, t in enumerate(tasks)}
    return out


def scans_conditions(root: Path, subject: str) -> dict:
    """``{scan name: condition or None}`` from ``sub-XXX/sub-XXX_scans.tsv`` (absent → {})."""
    path = root / subject / f"{subject}_scans.tsv"
    if not path.is_file():
        return {}
    out = {}
    for row in read_tsv(path):
        m = SCAN_NAME.match(Path(row.get("filename") or "").name)
        if m:
            cond = (row.get("condition") or "").strip()
            out[m.group(0)] = None if cond in ("", "n/a") else cond
    return out


def sidecar_tr(root: Path, subject: str, scan: str, task: str) -> Optional[float]:
    """``RepetitionTime`` (s) of a scan: its raw BOLD sidecar, else the task-level one at the root
    (BIDS inheritance), else None."""
    for path in (root / subject / "func" / f"{scan}_bold.json", root / f"task-{task}_bold.json"):
        if path.is_file():
            raw = read_json(path, "BOLD sidecar")
            tr = raw.get("RepetitionTime") if isinstance(raw, dict) else None
            if isinstance(tr, bool) or not isinstance(tr, (int, float)) or not tr > 0:
                raise DataError(f"{path} has no positive \"RepetitionTime\" (got {tr!r}); re-download it")
            return float(tr)
    return None


def scan_events(root: Path, subject: str, scan: str, task: str) -> Optional[list]:
    """``[(onset_s, duration_s, trial_type)]`` of a scan's ``_events.tsv`` (else the task-level
    file at the root; None when neither exists), sorted by onset."""
    for path in (root / subject / "func" / f"{scan}_events.tsv", root / f"task-{task}_events.tsv"):
        if path.is_file():
            try:
                ev = [(float(r["onset"]), float(r["duration"]), (r.get("trial_type") or "").strip())
                      for r in read_tsv(path)]
            except (KeyError, TypeError, ValueError) as err:
                raise DataError(f"{path} needs numeric 'onset' and 'duration' columns ({err}); "
                                "re-download it") from None
            return sorted(ev)
    return None


def gentle(path: Path) -> tuple:
    """Word and phone :class:`Events` (seconds, WAV time) of a Gentle ``align.json``.

    Words with ``case != "success"`` or no ``start``/``end`` (not found in the audio) are skipped;
    labels are the transcript words lower-cased. Phones follow each word from its ``start`` by
    their ``duration``; the position suffix (``_B`` …) is stripped and the phone cleaned like a
    TextGrid phone (upper-case ARPAbet, stress digits and silences dropped; Gentle's ``oov``
    dropped).

    Raises
    ------
    DataError
        The file is missing, not Gentle JSON, or has no aligned word at all.
    """
    raw = read_json(path, "Gentle word alignment")
    words = raw.get("words") if isinstance(raw, dict) else None
    if not isinstance(words, list):
        raise DataError(f"{path} is not a Gentle alignment (no \"words\" list); re-run Gentle or "
                        "re-download it")
    wl, wa, wb, pl, pa, pb = [], [], [], [], [], []
    for w in words:
        if not isinstance(w, dict) or w.get("case") != "success" or w.get("start") is None \
                or w.get("end") is None:
            continue
        try:
            a, b = float(w["start"]), float(w["end"])
        except (TypeError, ValueError):
            continue
        label = str(w.get("word", "")).strip().lower()
        if label:
            wl.append(label), wa.append(a), wb.append(b)
        t = a
        for ph in w.get("phones") or []:
            try:
                dur = float(ph["duration"])
                base = str(ph["phone"]).split("_")[0]
            except (KeyError, TypeError, ValueError):
                continue
            lab = None if base.lower() in GENTLE_NON_PHONES else clean_phone(base)
            if lab is not None:
                pl.append(lab), pa.append(t), pb.append(t + dur)
            t += dur
    if not wl:
        raise DataError(f"{path} has no aligned word (every word is not-found-in-audio or "
                        "untimed); re-run Gentle on the story or remove its folder")
    return _events(wl, wa, wb), _events(pl, pa, pb)


def _events(labels, on, off) -> Events:
    order = np.lexsort((np.asarray(off, dtype=np.float64), np.asarray(on, dtype=np.float64)))
    return Events(labels=[labels[i] for i in order],
                  onsets=np.asarray(on, dtype=np.float64)[order],
                  offsets=np.asarray(off, dtype=np.float64)[order])
