"""Content-addressed artifact cache with atomic writes and versioned keys.

A cached artifact's key hashes everything that determines it (dataset fingerprint, model weights
hash, parameters, a code-version tag); bump the tag when a computation's meaning changes.
Nothing half-written is ever visible: write to a temp name in the same folder, then rename.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
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
    """Yield a temp file path beside ``final``; rename onto ``final`` only if the block succeeds.

    ``os.replace`` of a file is atomic: readers see the old or the new file, and concurrent writers
    never raise (the last one wins). Use it for files whose content may change, and for
    content-addressed files alike (two writers of one key write the same bytes).
    """
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
def atomic_dir(final: Path, *, replace: bool = True) -> Iterator[Path]:
    """Yield a temp folder beside ``final``; publish it as ``final`` only if the block succeeds.

    Parameters
    ----------
    final : the folder to publish.
    replace : what to do when ``final`` already exists (non-empty) when the block ends.

        - ``False`` — *content-addressed* folders (a key names the content): the existing folder is
          kept and the new copy discarded. Concurrent writers of one key all return normally, and a
          reader never finds the folder missing or half-written.
        - ``True`` (default) — folders whose content may legitimately change (a user's ``--out``
          folder, a dataset rebuilt by a new code version): the new folder replaces the old one by
          an atomic exchange (Linux ``renameat2(RENAME_EXCHANGE)``: readers see the old or the new
          folder, never none), then the old one is removed. Where the exchange is unsupported,
          the old folder is renamed aside, the new one renamed in and the old one removed (a reader
          may find ``final`` missing for that instant); concurrent writers never raise, the last
          one wins.

    Never "delete, then rename": the folder a reader opens is never removed before its successor
    is in place (for ``replace=True``: except on the fallback path).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        if replace:
            _publish_replacing(tmp, final)
        else:
            _publish_keeping(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _publish_keeping(tmp: Path, final: Path) -> bool:
    """Rename ``tmp`` to ``final`` unless a non-empty ``final`` exists; True when ``tmp`` was published."""
    try:
        os.rename(tmp, final)  # replaces an empty folder; fails on a non-empty one
        return True
    except OSError as err:
        if err.errno in (errno.ENOTEMPTY, errno.EEXIST) and final.is_dir():
            return False  # a complete copy is already there: keep it (the caller discards tmp)
        raise


_RENAME_EXCHANGE = 2  #: renameat2 flag (linux/fs.h)
_AT_FDCWD = -100


@functools.lru_cache(maxsize=1)
def _renameat2():
    """libc's ``renameat2`` (glibc ≥ 2.28), or None."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    return fn


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap paths ``a`` and ``b`` (Linux ``renameat2``); False when unsupported here.

    Raises FileNotFoundError when ``b`` vanished meanwhile (a concurrent writer moved it aside).
    """
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err == errno.ENOENT:
        raise FileNotFoundError(err, os.strerror(err), str(b))
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # kernel or file system lacks it
        return False
    raise OSError(err, os.strerror(err), str(b))


def _publish_replacing(tmp: Path, final: Path) -> None:
    """Publish ``tmp`` as ``final``, replacing an existing folder (see :func:`atomic_dir`)."""
    old = []
    try:
        for _ in range(100):  # each turn either publishes or moves a concurrent writer's folder aside
            try:
                os.rename(tmp, final)  # final absent (or an empty folder)
                return
            except OSError as err:
                if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
            try:
                if _exchange(tmp, final):  # tmp now holds the previous folder
                    old.append(tmp)
                    return
            except FileNotFoundError:
                continue
            aside = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
            old.append(aside)
            try:
                os.rename(final, aside)  # onto the empty placeholder
            except FileNotFoundError:
                pass  # another writer moved it first: try again
        raise OSError(errno.EBUSY, f"could not publish {final}: too many concurrent writers")
    finally:
        for path in old:
            shutil.rmtree(path, ignore_errors=True)


def save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Atomically write ``arrays`` to ``path`` (.npz, uncompressed)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def check_result_dir(out_dir: Path, what: str) -> Path:
    """``out_dir`` as a Path if it is new, empty or an earlier result (holds ``summary.json``) —
    a folder the command may replace; ConfigError naming it otherwise (the user's files are safe)."""
    from core.errors import ConfigError

    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir())
                                                      and not (out_dir / "summary.json").exists())):
        raise ConfigError(f"output folder {out_dir} exists and is not {what} (no summary.json); it would be "
                          f"replaced — choose a new or empty --out")
    return out_dir


def publish_copy(src: Path, out_dir: Path) -> None:
    """Copy the files of the (cached) folder ``src`` to ``out_dir``, replacing it atomically."""
    with atomic_dir(Path(out_dir), replace=True) as tmp:
        for f in Path(src).iterdir():
            if f.is_file():
                shutil.copy2(f, tmp / f.name)


def load_json(path: Path, missing: str, error=None):
    """The JSON at ``path``; a missing file raises ``error`` (default DataError) with ``missing``,
    an unreadable one names the file and says it is damaged."""
    from core.errors import DataError

    error = error or DataError
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise error(missing) from None
    except (OSError, ValueError) as err:
        raise error(f"{path} is unreadable ({err}); it is damaged — make it again") from None


def save_json(path: Path, obj) -> None:
    """Atomically write ``obj`` as indented JSON."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=json_default))


def json_default(o):
    """``json.dumps`` ``default=`` for numpy scalars/arrays and paths (TypeError otherwise)."""
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
