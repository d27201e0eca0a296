"""Content digests of a dataset's files, memoised by ``stat`` — for dataset fingerprints.

A digest is computed once per file version and remembered (in memory and in
``<cache>/file-digests/<root key>.json``) against the file's (size, mtime_ns, ctime_ns, inode);
later calls only ``stat``. ctime cannot be set back (``os.utime`` changes it), so an in-place edit
with its mtime restored is still re-hashed. Annexed files (datalad / git-annex symlinks to a
content-keyed object) use the annex key as their digest without reading the file. Shared by every
reader whose fingerprint must follow file content (ds003020, the demo).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Optional

from core.errors import DataError
from core.progress import ProgressFn, report
from core.store import artifact_path, file_hash, key_hash, save_json

#: a git-annex / datalad object name: the key holds a hash of the content
ANNEX_KEY = re.compile(r"^(?:SHA(?:1|256|384|512)|MD5|BLAKE2[A-Z0-9]*|SHA3_\d+)E?-s\d+--[0-9a-f]{32,128}")


def content_digest(path: Path) -> str:
    """The annex key of an annexed file, else sha1 (16 hex) of its bytes; a read error → DataError."""
    path = Path(path)
    if path.is_symlink():
        m = ANNEX_KEY.match(os.path.basename(os.readlink(path)))
        if m:
            return "annex:" + m.group(0)
    try:
        return file_hash(path)
    except OSError as err:
        raise DataError(f"cannot read {path} ({err}); re-download it") from None


class FileDigests:
    """Memoised content digests of the files under ``root`` (see the module docstring)."""

    def __init__(self, root: Path, tag: str = "ds003020"):
        self.root = Path(root)
        self._memo_path = artifact_path("file-digests", key_hash(tag, str(self.root)), ".json")
        self._memo: Optional[dict] = None  # relative path → [size, mtime_ns, ctime_ns, ino, digest]

    def _load(self) -> dict:
        if self._memo is None:
            try:
                self._memo = dict(json.loads(self._memo_path.read_text())) if self._memo_path.is_file() else {}
            except (ValueError, TypeError):
                self._memo = {}  # a damaged memo is only a cache: rebuild it
        return self._memo

    def digest(self, paths: list, progress: ProgressFn = None) -> list:
        """``[(relative posix path, size in bytes, content digest)]`` for ``paths`` (files under
        ``root``), in order; only new or changed files are read (``progress`` reports it)."""
        memo = self._load()
        todo, out = [], []
        for p in paths:
            st = p.stat()
            rel = p.relative_to(self.root).as_posix()
            sig = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
            known = memo.get(rel)
            if not (isinstance(known, list) and known[:4] == sig):
                todo.append((p, rel, sig))
            out.append(rel)
        total = sum(sig[0] for _, _, sig in todo) or 1
        done = 0
        for p, rel, sig in todo:
            report(progress, done / total, f"hashing {rel}")
            memo[rel] = sig + [content_digest(p)]
            done += sig[0]
        if todo:
            report(progress, 1.0, "hashed")
            save_json(self._memo_path, memo)
        return [(rel, memo[rel][0], memo[rel][4]) for rel in out]
