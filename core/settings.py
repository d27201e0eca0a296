"""The one place that reads environment variables and resolves paths.

``BTS_CACHE_DIR``: cache root (default ``<repo>/cache``). Everything generated lives below it:
the demo dataset, feature and encoding caches, the pycortex config, job run folders.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_ENV = "BTS_CACHE_DIR"


@dataclass(frozen=True)
class Settings:
    cache_root: Path

    @property
    def demo_root(self) -> Path:
        """Folder of the generated demo dataset (ds003020 layout + ground_truth.npz)."""
        return self.cache_root / "demo"

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
def _settings_for(cache_root: str) -> Settings:
    root = Path(cache_root).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return Settings(cache_root=root)


def get_settings() -> Settings:
    """Current settings; re-reads ``BTS_CACHE_DIR`` on each call (tests monkeypatch it)."""
    return _settings_for(os.environ.get(CACHE_ENV, str(REPO_ROOT / "cache")))
