"""Import pycortex safely: its config goes under the cache, never into the user's home.

``import cortex`` writes ``$XDG_CONFIG_HOME/pycortex/options.cfg``; we point XDG_CONFIG_HOME at the
cache before the first import. The filestore stays pycortex's default (the venv's
``share/pycortex/db``, which holds subject S1) unless a dataset brings its own ``pycortex-db``.
"""

from __future__ import annotations

import contextlib
import io
import os
from functools import lru_cache
from pathlib import Path

from core.settings import get_settings


@lru_cache(maxsize=None)
def get_cortex():
    """Return the imported ``cortex`` module (configured once per process)."""
    cfg_home = get_settings().pycortex_config_home
    cfg_home.mkdir(parents=True, exist_ok=True)
    os.environ["XDG_CONFIG_HOME"] = str(cfg_home)
    with contextlib.redirect_stdout(io.StringIO()):  # pycortex prints notes (e.g. no inkscape) on import
        import cortex  # noqa: WPS433 (deliberately late import)

    return cortex


def cortex_db(filestore: Path | None = None):
    """A pycortex ``Database`` for ``filestore`` (None → pycortex's default, which has S1).

    Always a private instance, never pycortex's global ``cortex.db``: the flatmap renderer re-points
    that global while drawing another filestore (``core.viz.flatmap.pycortex_filestore``).
    """
    cortex = get_cortex()
    if filestore is None:
        filestore = cortex.database.default_filestore
    return _db_for(str(Path(filestore).resolve()))


@lru_cache(maxsize=8)
def _db_for(filestore: str):
    cortex = get_cortex()
    return cortex.database.Database(filestore)
