"""The demo dataset: a ds003020-layout folder built on first use, with its planted ground truth."""

from __future__ import annotations

import contextlib
import fcntl
import json
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from core.data import timing
from core.data.base import SurfaceMapping
from core.data.demo.build import MAPPING, build_demo
from core.data.demo.config import DEMO_VERSION, SUBJECT, DemoConfig
from core.data.ds003020 import Ds003020Dataset
from core.errors import DataError
from core.progress import ProgressFn
from core.settings import get_settings
from core.store import key_hash


class DemoDataset(Ds003020Dataset):
    """The simulated demo brain (subject ``S1`` on pycortex S1's "fullhead"/"thin" voxels).

    Read like any ds003020 folder (the same voxel report, skipped-story records and read
    errors); adds the pycortex mapping, ROI masks and the ground truth. Its scanner TR is the
    simulated one, 2.0 s (``scanner_tr == tr``).

    Attributes
    ----------
    meta : dict — ``demo.json`` (config, seed, code version, stories, driver correlation, …).
    """

    DEFAULT_SCANNER_TR = timing.TR_SECONDS  #: the responses are simulated at exactly 2.0 s

    def __init__(self, root: Path, spec: str = "demo"):
        path = Path(root) / "demo.json"
        if not path.is_file():
            raise DataError(f"{path} is missing: {root} is not a built demo; delete the folder "
                            "and open the demo again to rebuild it")
        super().__init__(root, spec=spec)
        self.meta = json.loads(path.read_text())
        self._truth: Optional[dict] = None

    def surface(self, subject: str) -> SurfaceMapping:
        """pycortex subject S1, transform "fullhead", mask "thin" (default pycortex database)."""
        self._subject(subject)
        return MAPPING

    def rois(self, subject: str) -> dict:
        """``{name: (n_voxels,) bool}`` for every non-empty ROI of S1's overlay (AC, Broca, sPMv,
        IPS, V1, …) plus ``"cortex"`` (all voxels)."""
        from core.data.cortex_rois import roi_masks

        masks = roi_masks(self.surface(subject))
        n_vox = self.n_voxels(subject)
        bad = [k for k, m in masks.items() if m.shape != (n_vox,)]
        if bad:
            raise DataError(f"ROI masks {bad} do not match {n_vox} voxels of {self.root}; "
                            "delete the demo folder to rebuild it")
        return masks

    def ground_truth(self, subject: Optional[str] = None) -> dict:
        """Arrays of ``ground_truth.npz``: ``voxel_type`` ``(n_voxels,)`` codes into
        ``type_names`` = ["none", "acoustic", "semantic", "mixed"], ``w_acoustic``
        ``(n_acoustic, n_voxels)``, ``w_semantic`` ``(n_semantic, n_voxels)``,
        ``semantic_share``, ``signal_std`` (pooled over all response rows), ``signal_std_test``
        (test story, ddof=1), ``noise_std`` (per presentation), ``true_cc_max`` (mean of
        ``n_repeats`` repeats), ``planted_roi`` (index into ``plan_roi_names``, -1 = none),
        ``acoustic_names``, ``semantic_names``."""
        if self._truth is None:
            with np.load(self.root / "ground_truth.npz") as z:
                self._truth = {k: z[k] for k in z.files}
        return {k: v.copy() for k, v in self._truth.items()}

    def drivers(self, story: str) -> dict:
        """True drivers at the response rows of ``story`` (HRF-convolved, trimmed):
        ``{"acoustic": (R-20, n_acoustic), "semantic": (R-20, n_semantic)}`` float32. The
        noiseless signal is ``acoustic @ w_acoustic + semantic @ w_semantic``."""
        story = self._story(story)
        with np.load(self.root / "drivers.npz") as z:
            return {kind: z[f"{kind}__{story}"] for kind in ("acoustic", "semantic")}

    def fingerprint(self, progress: ProgressFn = None) -> str:
        """The layout's content fingerprint (:meth:`Ds003020Dataset.fingerprint`) plus the demo's
        config and code version."""
        return key_hash(super().fingerprint(progress), self.meta.get("code_version"),
                        self.meta.get("config"))


def demo_root_for(config: DemoConfig) -> Path:
    """``get_settings().demo_root`` for the default config, else a sibling ``demo-<config key>``."""
    root = get_settings().demo_root
    return root if config.is_default else root.with_name(f"{root.name}-{config.key()}")


def needs_build(root: Path, config: DemoConfig) -> bool:
    """True when ``root`` holds no demo built from ``config`` by this code version."""
    path = Path(root) / "demo.json"
    if not path.is_file():
        return True
    try:
        meta = json.loads(path.read_text())
    except ValueError:
        return True
    return meta.get("code_version") != DEMO_VERSION or meta.get("config") != config.to_dict()


def demo_is_built(config: Optional[DemoConfig] = None) -> bool:
    """Whether the demo of ``config`` (default ``DemoConfig()``) is built and current, so opening
    it is quick."""
    config = config or DemoConfig()
    return not needs_build(demo_root_for(config), config)


@contextlib.contextmanager
def _build_lock(root: Path) -> Iterator[None]:
    """Exclusive lock beside ``root`` so concurrent openers do not build twice."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def open_demo(config: Optional[DemoConfig] = None, progress: ProgressFn = None,
              root: Optional[Path] = None) -> DemoDataset:
    """Open the demo dataset, building it first when absent or built from another config/version.

    Parameters
    ----------
    config : :class:`DemoConfig` (default ``DemoConfig()``: 14 stories of 150–170 s, 5 repeats).
    progress : optional ``(fraction, message)`` callback, used while building.
    root : folder to use instead of :func:`demo_root_for` ``(config)``.
    """
    config = config or DemoConfig()
    root = Path(root) if root is not None else demo_root_for(config)
    with _build_lock(root):
        if needs_build(root, config):
            build_demo(root, config, progress=progress)
    return DemoDataset(root)


__all__ = ["DemoDataset", "open_demo", "demo_root_for", "demo_is_built", "needs_build", "SUBJECT"]
