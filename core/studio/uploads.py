"""Uploaded probe datasets: a zip of ``.wav`` clips + ``labels.csv`` (+ ``classes.txt``), checked and
unpacked safely into the cache.

Safety: size-capped (:data:`MAX_UPLOAD_BYTES` compressed, :data:`MAX_UNPACKED_BYTES` unpacked),
extension-checked (the upload must be ``.zip``; members only ``.wav``, ``.csv``, ``.txt``), no member
may escape the target folder (absolute paths, ``..``, links are refused), and nothing is ever
unpickled or executed: the folder is then read as a ``folder:`` probe task (wav + CSV only).
Unpacked into ``<cache>/uploads/<sha256 of the bytes>/`` atomically (the same upload twice is one
folder).
"""

from __future__ import annotations

import hashlib
import io
import stat
import zipfile
from pathlib import Path, PurePosixPath

from core.errors import ConfigError

MAX_UPLOAD_BYTES = 200 * 1024 ** 2  #: largest accepted zip (bytes)
MAX_UNPACKED_BYTES = 1024 ** 3  #: largest total unpacked size (bytes; guards against zip bombs)
MEMBER_SUFFIXES = (".wav", ".csv", ".txt")


def unpack_probe_zip(name: str, data: bytes) -> Path:
    """Check and unpack an uploaded probe dataset; return the folder (holding ``labels.csv``).

    Raises ConfigError (one line naming the upload and the problem) for a file that is not a zip, too
    large, with a member outside the folder or of another type, or without ``labels.csv``.
    """
    from core.settings import get_settings
    from core.store import atomic_dir

    if not str(name).lower().endswith(".zip"):
        raise ConfigError(f"upload {name!r} is not a .zip; zip the folder of .wav clips with labels.csv")
    if len(data) > MAX_UPLOAD_BYTES:
        raise ConfigError(f"upload {name!r} is {len(data) / 1e6:.0f} MB; the limit is "
                          f"{MAX_UPLOAD_BYTES / 1e6:.0f} MB (type the folder's path instead)")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = [i for i in zf.infolist() if not i.is_dir()]
    except zipfile.BadZipFile as err:
        raise ConfigError(f"upload {name!r} is not a readable zip ({err})") from None
    members, total = [], 0
    for info in infos:
        path = PurePosixPath(info.filename)
        mode = info.external_attr >> 16
        if path.is_absolute() or ".." in path.parts or info.filename.startswith(("/", "\\")) or "\\" in info.filename:
            raise ConfigError(f"upload {name!r}: member {info.filename!r} points outside the folder; refused")
        if stat.S_ISLNK(mode):
            raise ConfigError(f"upload {name!r}: member {info.filename!r} is a link; refused")
        if path.suffix.lower() not in MEMBER_SUFFIXES:
            raise ConfigError(f"upload {name!r}: member {info.filename!r} is not one of "
                              f"{', '.join(MEMBER_SUFFIXES)}; a probe dataset holds only clips and label files")
        total += info.file_size
        members.append((info, path))
    if total > MAX_UNPACKED_BYTES:
        raise ConfigError(f"upload {name!r} unpacks to {total / 1e6:.0f} MB; the limit is {MAX_UNPACKED_BYTES / 1e6:.0f} MB")
    labels = [p for _, p in members if p.name == "labels.csv"]
    if len(labels) != 1:
        raise ConfigError(f"upload {name!r} must hold exactly one labels.csv (found {len(labels)})")
    base = labels[0].parent  # the task folder inside the zip (it may be zipped with its parent folder)
    out = get_settings().cache_root / "uploads" / hashlib.sha256(data).hexdigest()[:32]
    if not (out / "labels.csv").exists():
        with atomic_dir(out, replace=False) as tmp:
            for info, path in members:
                try:
                    rel = path.relative_to(base)
                except ValueError:
                    continue  # outside the task folder (e.g. a README beside it): not part of the task
                target = tmp.joinpath(*rel.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as dst:
                    dst.write(src.read(MAX_UNPACKED_BYTES + 1))
    return out
