"""The simulated demo group (data spec ``demo-group``): participants P01… on fsaverage5.

Reuses the built demo's stories and true drivers (``core.data.demo``); per participant, acoustic /
semantic / mixed regions are planted in geodesic discs jittered around the standard fsaverage5
ROIs (``core.data.fsaverage``), with independent weights and noise and 1 or more presentations
of the test story. Built deterministically (seeded) on first use into
``get_settings().demo_group_root``. Modules: ``config`` (GroupConfig), ``build`` (planting and
writing), ``dataset`` (DemoGroupDataset, open_group).
"""

from core.data.demo_group.config import DEFAULT_GROUP_PLAN, GROUP_VERSION, MESH, GroupConfig

__all__ = ["DEFAULT_GROUP_PLAN", "GROUP_VERSION", "MESH", "GroupConfig", "DemoGroupDataset", "build_group",
           "group_root_for", "open_group"]


def __getattr__(name):  # lazy: importing the config must not pull in h5py
    if name in ("DemoGroupDataset", "open_group", "group_root_for"):
        from core.data.demo_group import dataset

        return getattr(dataset, name)
    if name == "build_group":
        from core.data.demo_group.build import build_group

        return build_group
    raise AttributeError(name)
