"""Scan discovery and surface loading for the Narratives reader.

A scan is one BOLD run: ``sub-XXX_task-T[_run-N]``, present when both hemispheres' cleaned surface
files are under the chosen AFNI derivative (``…_space-fsaverage6_hemi-{L,R}_desc-clean.func.gii``;
fsaverage5 files are accepted too). Data are loaded with nilearn, reduced to fsaverage5 by vertex
prefix (:func:`core.data.fsaverage.reduce_fsaverage6`) and returned as ``(n_trs_scan, 20484)``
float32 (left then right hemisphere).
"""

from __future__ import annotations

import binascii
import hashlib
import re
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from threading import Lock
from typing import Optional

from xml.parsers.expat import ExpatError

import numpy as np
from nibabel.filebasedimages import ImageFileError

from core.errors import DataError

DERIVATIVES = ("afni-nosmooth", "afni-smooth")  #: preference order of ``derivative="auto"``
GIFTI = re.compile(r"^(sub-[A-Za-z0-9]+)_task-([A-Za-z0-9]+)(?:_run-(\d+))?_space-(fsaverage[56])"
                   r"_hemi-L_desc-clean\.func\.gii$")
#: what nibabel / nilearn raise on damaged or foreign files (XML, base64, zlib, shapes)
READ_ERRORS = (OSError, ValueError, TypeError, KeyError, IndexError, EOFError, ExpatError,
               zlib.error, binascii.Error, ImageFileError)
SCAN_CACHE_KIND = "narratives-fsaverage5"  #: cache folder of decoded scans
_CACHE_SIZE = 3  #: scans kept decoded in memory (a real pieman scan is ~30 MB at fsaverage5)
_cache: "OrderedDict[tuple, np.ndarray]" = OrderedDict()
_lock = Lock()


@dataclass(frozen=True)
class Scan:
    """One run: ``name`` ``sub-XXX_task-T[_run-N]``; ``left`` / ``right`` GIfTI paths."""

    subject: str
    task: str
    run: Optional[int]
    name: str
    left: Path
    right: Path


def choose_derivative(root: Path, derivative: str = "auto") -> Path:
    """The AFNI derivative folder: ``derivatives/afni-nosmooth`` (preferred by ``"auto"``: encoding
    models want unsmoothed data) or ``afni-smooth``; ``derivative`` may name one of them."""
    base = root / "derivatives"
    names = DERIVATIVES if derivative == "auto" else (derivative,)
    if derivative != "auto" and derivative not in DERIVATIVES:
        raise DataError(f"unknown Narratives derivative {derivative!r}; use one of {DERIVATIVES}")
    for name in names:
        if (base / name).is_dir():
            return base / name
    raise DataError(f"no surface data under {base} (expected {' or '.join(names)}/sub-XXX/func/"
                    "*_space-fsaverage6_hemi-L_desc-clean.func.gii); `datalad get` one of them")


def find_scans(derivative: Path) -> tuple:
    """``(scans, lacking)``: complete scans sorted by name, and ``{name: missing right-hemisphere
    path}`` for scans with only their left file (a partial download)."""
    scans, lacking = [], {}
    for left in sorted(derivative.glob("sub-*/func/*_hemi-L_desc-clean.func.gii")):
        m = GIFTI.match(left.name)
        if not m or not left.exists():
            continue
        right = left.with_name(left.name.replace("_hemi-L_", "_hemi-R_"))
        sub, task, run = m.group(1), m.group(2), m.group(3)
        name = f"{sub}_task-{task}" + (f"_run-{run}" if run else "")
        if not right.exists():
            lacking[name] = right
            continue
        scans.append(Scan(sub, task, int(run) if run else None, name, left, right))
    return scans, lacking


def _hemi(path: Path) -> np.ndarray:
    """One hemisphere → ``(n_trs, 10242)`` float32."""
    from nilearn.surface import load_surf_data

    from core.data.fsaverage import reduce_fsaverage6

    try:
        data = np.asarray(load_surf_data(str(path)))
    except READ_ERRORS as err:
        msg = " ".join(str(err).split())[:200]
        raise DataError(f"cannot read surface file {path} ({type(err).__name__}: {msg}); it is "
                        "corrupt or not fetched — re-download it") from None
    if data.ndim == 1:
        data = data[:, None]
    if data.ndim != 2 or data.shape[0] not in (10242, 40962):
        raise DataError(f"{path} has {data.shape[0] if data.ndim else 0} vertices per time point; "
                        "expected 40962 (fsaverage6) or 10242 (fsaverage5) — resample it to "
                        "fsaverage6 (fMRIPrep --output-spaces fsaverage6)")
    return np.ascontiguousarray(reduce_fsaverage6(data, axis=0).T, dtype=np.float32)


def decode_scan(scan: Scan) -> np.ndarray:
    """Both hemispheres of ``scan`` at fsaverage5 from its GIfTIs: ``(n_trs_scan, 20484)`` float32
    (NaN = no data, e.g. the medial wall)."""
    left, right = _hemi(scan.left), _hemi(scan.right)
    if left.shape[0] != right.shape[0]:
        raise DataError(f"{scan.left.name} has {left.shape[0]} time points but {scan.right.name} has "
                        f"{right.shape[0]}; re-download the scan's surface files")
    return np.concatenate([left, right], axis=1)


def load_scan(scan: Scan, key: Optional[str] = None) -> np.ndarray:
    """:func:`decode_scan`, read-only, through two caches: an in-process LRU of the last few scans
    and, when ``key`` (a hash of the GIfTIs' content) is given, ``<cache>/narratives-fsaverage5/
    <key>.npy`` memory-mapped (decoding a real GIfTI takes seconds; the ISC ceiling reads every
    participant's test story)."""
    from core.store import artifact_path, atomic_path

    mem = key or tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in (scan.left, scan.right))
    with _lock:
        if mem in _cache:
            _cache.move_to_end(mem)
            return _cache[mem]
    data = None
    if key is not None:
        path = artifact_path(SCAN_CACHE_KIND, key, ".npy")
        if path.exists():
            try:
                data = np.load(path, mmap_mode="r")
            except (OSError, ValueError):
                data = None  # a damaged cache entry: decode again and overwrite it
        if data is None:
            arr = decode_scan(scan)
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.save(f, arr)
            data = np.load(path, mmap_mode="r")
    else:
        data = decode_scan(scan)
        data.setflags(write=False)
    with _lock:
        _cache[mem] = data
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return data


def clear_cache() -> None:
    """Forget decoded scans (tests)."""
    with _lock:
        _cache.clear()


FINGERPRINT_VERSION = "narratives-fingerprint-v1"
#: metadata files hashed by their bytes (small)
SMALL_FILES = ("participants.tsv", "code/event_meta.json", "code/scan_exclude.json", "task-*_bold.json",
               "task-*_events.tsv", "sub-*/sub-*_scans.tsv", "sub-*/func/*_bold.json",
               "sub-*/func/*_events.tsv")


def fingerprint(root: Path, derivative: Path, digests, progress=None) -> str:
    """sha1 (16 hex) of a Narratives root: :data:`SMALL_FILES`' bytes, then relative path, size
    and content digest (``digests``: a :class:`core.data.digests.FileDigests`) of every
    ``stimuli/*_audio.wav``, ``stimuli/gentle/*/align.json`` and surface file of ``derivative``."""
    h = hashlib.sha1(f"{FINGERPRINT_VERSION}\n{derivative.name}\n".encode())
    for pat in SMALL_FILES:
        for p in sorted(root.glob(pat)):
            if p.is_file():
                h.update(f"{p.relative_to(root).as_posix()}\n".encode() + p.read_bytes())
    big = sorted(p for pat in ("stimuli/*_audio.wav", "stimuli/gentle/*/align.json")
                 for p in root.glob(pat) if p.is_file())
    big += sorted(p for p in derivative.glob("sub-*/func/*desc-clean.func.gii") if p.is_file())
    for rel, size, digest in digests.digest(big, progress):
        h.update(f"{rel}\t{size}\t{digest}\n".encode())
    return h.hexdigest()[:16]
