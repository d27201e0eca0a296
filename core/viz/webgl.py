"""Static, self-contained WebGL brain viewer of a per-voxel map (pycortex ``make_static``).

The folder holds ``index.html`` (viewer code and styles embedded: it works offline), the
subject's surfaces (``<subject>_[inflated]_mg2_9_v4.ctm/.json/.svg``) and ``data/*.png`` (the
map). Browsers block ``file://`` loads of those files, so serve the folder over HTTP (any static
server, e.g. ``python -m http.server -d <folder>``). The first export of a subject builds
pycortex's surface cache in the filestore (tens of seconds); later exports take well under a
second plus the copy of ~11 MB.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from core.cortex_env import get_cortex
from core.data.base import SurfaceMapping
from core.errors import ConfigError
from core.progress import ProgressFn, report
from core.store import atomic_dir
from core.viz.flatmap import apply_threshold, check_values, color_scale, pycortex_filestore


def webgl_colormaps() -> list:
    """Colormap names the WebGL viewer can use (pycortex ships them as PNG strips)."""
    cortex = get_cortex()
    folder = Path(cortex.options.config.get("webgl", "colormaps"))
    return sorted(p.stem for p in folder.glob("*.png"))


def export_webgl(values, mapping: SurfaceMapping, out_dir: Path, *, title: str = "Brain",
                 name: str = "map", vmin: Optional[float] = None, vmax: Optional[float] = None,
                 cmap: Optional[str] = None, threshold: Optional[float] = None,
                 two_sided: bool = False, progress: ProgressFn = None) -> Path:
    """Write a static WebGL viewer of ``values`` to ``out_dir`` (replaced atomically).

    Parameters
    ----------
    values : array ``(n_voxels,)`` — one value per voxel of ``mapping``; NaN = not shown.
    mapping : SurfaceMapping — pycortex subject, transform, mask, filestore.
    out_dir : folder to create (an existing one is replaced only once the new one is complete).
    title : browser tab title. name : the map's name in the viewer's data menu.
    vmin, vmax, cmap, threshold, two_sided : as in :func:`core.viz.flatmap.flatmap_figure` (same defaults);
        ``cmap`` must be one of :func:`webgl_colormaps`.

    Returns
    -------
    Path — ``out_dir``, holding ``index.html``, the surface files and ``data/``.
    """
    vals = check_values(values, mapping)
    cmap_name, lo, hi = color_scale(vals, vmin, vmax, cmap)
    if cmap_name not in webgl_colormaps():
        raise ConfigError(f"colormap {cmap_name!r} is not available to the WebGL viewer; use one of "
                          "core.viz.webgl.webgl_colormaps() (e.g. inferno, viridis, RdBu_r)")
    vals = apply_threshold(vals, threshold, two_sided)
    out_dir = Path(out_dir)
    cortex = get_cortex()
    report(progress, 0.0, "WebGL viewer: surfaces (cached after the first export)")
    with pycortex_filestore(mapping.filestore) as db:
        mask = db.get_mask(mapping.cortex_subject, mapping.xfm, mapping.mask)
        volume = cortex.Volume(np.asarray(vals, dtype=np.float32), mapping.cortex_subject,
                               mapping.xfm, mask=mask, vmin=lo, vmax=hi, cmap=cmap_name)
        try:
            with atomic_dir(out_dir) as tmp:
                cortex.webgl.make_static(str(tmp), {name: volume}, title=title, recache=False)
        except PermissionError as err:
            raise ConfigError(f"pycortex cannot write its surface cache ({err.filename}); make the "
                              f"filestore {db.filestore} writable once") from err
    report(progress, 1.0, f"WebGL viewer written to {out_dir}")
    return out_dir
