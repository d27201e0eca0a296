"""The demo group: several simulated participants on fsaverage5, built on first use."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from core.data import timing
from core.data.base import SurfaceSpace
from core.data.demo_group.build import build_group
from core.data.demo_group.config import GROUP_VERSION, MESH, GroupConfig
from core.data.ds003020 import Ds003020Dataset
from core.errors import DataError
from core.progress import ProgressFn
from core.settings import get_settings
from core.store import key_hash


class DemoGroupDataset(Ds003020Dataset):
    """Simulated participants ``P01 …`` hearing the demo's stories, on fsaverage5 vertices.

    Read like any ds003020 folder (voxel report, skipped stories, read errors); adds the
    fsaverage5 :class:`~core.data.base.SurfaceSpace` (no pycortex mapping), the standard ROI
    discs and each participant's ground truth. Participants differ in planted regions,
    weights, noise and the number of test-story presentations (``n_repeats`` may be 1).

    Attributes
    ----------
    meta : dict — ``group.json`` (config, seed, code version, subjects, n_repeats, …).
    """

    DEFAULT_SCANNER_TR = timing.TR_SECONDS  #: simulated at exactly 2.0 s

    def __init__(self, root: Path, spec: str = "demo-group"):
        path = Path(root) / "group.json"
        if not path.is_file():
            raise DataError(f"{path} is missing: {root} is not a built demo group; delete the folder "
                            "and open demo-group again to rebuild it")
        super().__init__(root, spec=spec)
        self.meta = json.loads(path.read_text())
        self._vertices: Optional[np.ndarray] = None
        self._truth: dict = {}

    def _columns(self) -> np.ndarray:
        if self._vertices is None:
            path = self.root / "surface.npz"
            try:
                with np.load(path) as z:
                    self._vertices = z["vertices"].astype(np.int64)
            except (OSError, KeyError, ValueError) as err:
                raise DataError(f"cannot read {path} ({err}); delete {self.root} to rebuild the demo "
                                "group") from None
        return self._vertices

    def surface(self, subject: str):
        """None: the group lives on fsaverage5 (see :meth:`surface_space`), not on pycortex."""
        self._subject(subject)
        return None

    def surface_space(self, subject: str) -> SurfaceSpace:
        """``SurfaceSpace("fsaverage5", vertices (n_voxels,) int64, 10242)`` (same for everyone)."""
        self._subject(subject)
        return SurfaceSpace(mesh=MESH, vertices=self._columns().copy(), n_per_hemi=int(self.meta["n_per_hemi"]))

    def rois(self, subject: str) -> dict:
        """``{name: (n_voxels,) bool}``: the standard fsaverage5 discs of
        :func:`core.data.fsaverage.standard_rois` (AC, Broca, sPMv, AG, LTC) at the subject's
        columns, plus ``"cortex"`` (all columns). The same for every participant: their planted
        regions are jittered around these."""
        from core.data.fsaverage import standard_rois

        cols = self._columns()
        n_vox = self.n_voxels(subject)
        if len(cols) != n_vox:
            raise DataError(f"{self.root / 'surface.npz'} lists {len(cols)} vertices but {subject}'s "
                            f"responses have {n_vox}; delete {self.root} to rebuild the demo group")
        masks = {k: m[cols] for k, m in standard_rois().items()}
        masks["cortex"] = np.ones(n_vox, dtype=bool)
        return masks

    def ground_truth(self, subject: Optional[str] = None) -> Optional[dict]:
        """Participant ``subject``'s planted truth (``ground_truth/<subject>.npz``), arrays over its
        columns: ``voxel_type`` ``(n_voxels,)`` codes into ``type_names`` = ["none", "acoustic",
        "semantic", "mixed"], ``w_acoustic`` ``(n_acoustic, n_voxels)``, ``w_semantic``
        ``(n_semantic, n_voxels)``, ``semantic_share``, ``signal_std``, ``signal_std_test``,
        ``noise_std`` (per presentation), ``true_cc_max`` (ceiling of the mean of its
        ``n_repeats`` presentations), ``true_cc_max_single`` (one presentation),
        ``cc1_target``, ``planted_roi`` (index into ``plan_roi_names``, -1 none), ``vertices``,
        ``disc_centres`` / ``disc_radii`` (mm) / ``disc_rois`` of its jittered discs.

        ``subject=None`` gives None: participants differ, so there is no one group truth."""
        if subject is None:
            return None
        self._subject(subject)
        if subject not in self._truth:
            path = self.root / "ground_truth" / f"{subject}.npz"
            try:
                with np.load(path) as z:
                    self._truth[subject] = {k: z[k] for k in z.files}
            except (OSError, ValueError) as err:
                raise DataError(f"cannot read {path} ({err}); delete {self.root} to rebuild the demo "
                                "group") from None
        return {k: v.copy() for k, v in self._truth[subject].items()}

    def group_responses(self, subject: str, story: Optional[str] = None) -> Optional[Iterator]:
        """The other participants' responses to ``story`` (default the test story; their mean of
        repeats), one ``(n_trs, n_voxels)`` float32 array at a time — for the leave-one-subject-out
        ISC ceiling. Everyone shares the same columns. None when there is no other participant."""
        self._subject(subject)
        story = self._story(self.test_story if story is None else story)
        others = [s for s in self.subjects if s != subject]
        if not others:
            return None
        return (self.responses(o, story) for o in others)

    def drivers(self, story: str) -> dict:
        """The true drivers shared by all participants (the demo's ``drivers.npz``):
        ``{"acoustic": (n_trs, n_acoustic), "semantic": (n_trs, n_semantic)}`` float32."""
        from core.data.demo import open_demo

        story = self._story(story)
        demo = open_demo(GroupConfig.from_dict(self.meta["config"]).demo)
        return demo.drivers(story)

    def fingerprint(self, progress: ProgressFn = None) -> str:
        """The layout's content fingerprint plus the group's config and code version."""
        return key_hash(super().fingerprint(progress), self.meta.get("code_version"), self.meta.get("config"))


def group_root_for(config: GroupConfig) -> Path:
    """``get_settings().demo_group_root`` for the default config, else a sibling
    ``demo-group-<config key>``."""
    root = get_settings().demo_group_root
    return root if config.is_default else root.with_name(f"{root.name}-{config.key()}")


def needs_build(root: Path, config: GroupConfig) -> bool:
    """True when ``root`` holds no demo group built from ``config`` by this code version."""
    path = Path(root) / "group.json"
    if not path.is_file():
        return True
    try:
        meta = json.loads(path.read_text())
    except ValueError:
        return True
    return meta.get("code_version") != GROUP_VERSION or meta.get("config") != config.to_dict()


def open_group(config: Optional[GroupConfig] = None, progress: ProgressFn = None,
               root: Optional[Path] = None) -> DemoGroupDataset:
    """Open the demo group, building it (and the demo it reuses) when absent or outdated.

    Parameters
    ----------
    config : :class:`GroupConfig` (default ``GroupConfig()``: 6 participants, 19,004 vertices).
    progress : optional ``(fraction, message)`` callback, used while building.
    root : folder to use instead of :func:`group_root_for` ``(config)``.
    """
    from core.data.demo import open_demo
    from core.data.demo.dataset import _build_lock

    config = config or GroupConfig()
    root = Path(root) if root is not None else group_root_for(config)
    if needs_build(root, config):
        demo = open_demo(config.demo, progress=progress)  # its own lock; outside ours
        with _build_lock(root):
            if needs_build(root, config):
                build_group(root, config, demo=demo, progress=progress)
    return DemoGroupDataset(root)


__all__ = ["DemoGroupDataset", "open_group", "group_root_for", "needs_build"]
