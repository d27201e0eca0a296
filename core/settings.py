"""The one place that reads environment variables and resolves paths.

``BTS_CACHE_DIR``: cache root (default ``<repo>/cache``). Everything generated lives below it:
the demo dataset, feature and encoding caches, the pycortex config, job run folders.

``BTS_ALLOWED_ROOTS``: folders the app may open when a user types a path (dataset folders, probe
datasets), separated by ``os.pathsep``; default: the user's home and the cache root. The CLI is not
confined (its user owns the shell); the app is, since anyone who reaches its port can type a path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_ENV = "BTS_CACHE_DIR"
ALLOWED_ENV = "BTS_ALLOWED_ROOTS"


@dataclass(frozen=True)
class Settings:
    cache_root: Path
    allowed_roots: tuple = ()  #: resolved folders the app may open typed paths under

    @property
    def demo_root(self) -> Path:
        """Folder of the generated demo dataset (ds003020 layout + ground_truth.npz)."""
        return self.cache_root / "demo"

    @property
    def demo_group_root(self) -> Path:
        """Folder of the generated demo group (participants on fsaverage5 + per-participant truth)."""
        return self.cache_root / "demo-group"

    @property
    def pycortex_config_home(self) -> Path:
        """XDG_CONFIG_HOME given to pycortex so it never writes into the user's home."""
        return self.cache_root / "pycortex-config"

    @property
    def models_root(self) -> Path:
        """Converted / cached model weights (e.g. the bundled Whisper as an HF dir)."""
        return self.cache_root / "models"

    @property
    def runs_root(self) -> Path:
        """Background job run folders."""
        return self.cache_root / "runs"

    @property
    def device(self) -> str:
        """``"cuda"`` when a GPU is visible to torch, else ``"cpu"``."""
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


@lru_cache(maxsize=None)
def _settings_for(cache_root: str, allowed: str = "") -> Settings:
    root = Path(cache_root).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    roots = [Path(p).expanduser().resolve() for p in allowed.split(os.pathsep) if p.strip()] if allowed \
        else [Path.home().resolve(), root]
    return Settings(cache_root=root, allowed_roots=tuple(roots))


def get_settings() -> Settings:
    """Current settings; re-reads ``BTS_CACHE_DIR`` / ``BTS_ALLOWED_ROOTS`` on each call (tests
    monkeypatch them)."""
    return _settings_for(os.environ.get(CACHE_ENV, str(REPO_ROOT / "cache")), os.environ.get(ALLOWED_ENV, ""))
