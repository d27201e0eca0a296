"""Content-addressed artifact cache with atomic writes and versioned keys.

A cached artifact's key hashes everything that determines it (dataset fingerprint, model weights
hash, parameters, a code-version tag); bump the tag when a computation's meaning changes.
Nothing half-written is ever visible: write to a temp name in the same folder, then rename.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np

from core.settings import get_settings


def key_hash(*parts) -> str:
    """Stable 16-hex-digit hash of JSON-serialisable ``parts`` (dict keys sorted)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:16]


def file_hash(path: Path, chunk: int = 1 << 20) -> str:
    """sha1 (16 hex digits) of a file's bytes."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()[:16]


def artifact_path(kind: str, key: str, suffix: str = "") -> Path:
    """``<cache_root>/<kind>/<key><suffix>``; the folder is created."""
    folder = get_settings().cache_root / kind
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{key}{suffix}"


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temp file path beside ``final``; rename onto ``final`` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp" + final.suffix, dir=final.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temp folder beside ``final``; it replaces ``final`` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Atomically write ``arrays`` to ``path`` (.npz, uncompressed)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def save_json(path: Path, obj) -> None:
    """Atomically write ``obj`` as indented JSON."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default))


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def cached_arrays(kind: str, key: str, compute: Callable[[], Mapping[str, np.ndarray]]) -> dict:
    """Load ``<cache>/<kind>/<key>.npz`` or compute, save atomically and return it."""
    path = artifact_path(kind, key, ".npz")
    if path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    arrays = dict(compute())
    save_npz(path, arrays)
    return arrays
