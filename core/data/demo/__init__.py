"""The simulated demo brain (data spec ``demo``): espeak-ng stories + planted voxels on pycortex S1.

Built deterministically (seeded) on first use into ``get_settings().demo_root`` in the ds003020
layout, with ``ground_truth.npz`` (voxel types, true weights, noise ceilings) and ``demo.json``.
Modules: ``config`` (DemoConfig), ``text`` (story generator), ``synth`` (espeak-ng speech with
timings), ``simulate`` (drivers, HRF, voxels, noise), ``build`` (writes the folder), ``dataset``
(DemoDataset, open_demo).
"""

from core.data.demo.config import DEMO_VERSION, SUBJECT, TYPE_NAMES, DemoConfig

__all__ = ["DEMO_VERSION", "SUBJECT", "TYPE_NAMES", "DemoConfig", "DemoDataset", "build_demo",
           "demo_is_built", "demo_root_for", "open_demo"]


def __getattr__(name):  # lazy: importing the config must not pull in h5py/scipy/pycortex
    if name in ("DemoDataset", "open_demo", "demo_root_for", "demo_is_built"):
        from core.data.demo import dataset

        return getattr(dataset, name)
    if name == "build_demo":
        from core.data.demo.build import build_demo

        return build_demo
    raise AttributeError(name)
