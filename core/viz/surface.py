"""Surface maps of per-vertex values on fsaverage5 (nilearn drawing; figures/bytes, no streamlit).

For surface datasets (``Dataset.surface_space(subject)`` → :class:`~core.data.base.SurfaceSpace`):
a response column ``i`` sits on mesh vertex ``space.vertices[i]``; vertices without a column
(medial wall, subsampled vertices) are NaN and show the sulcal-depth background.

- :func:`surface_map_png`: a static PNG, both hemispheres side by side, drawn by nilearn's
  ``plot_surf_stat_map`` (matplotlib engine, Agg backend) on the **flat** mesh nilearn ships
  (seen from above), the inflated or the pial mesh (lateral views); ROI outlines by
  ``plot_surf_contours``. matplotlib colours faces, not vertices: a face takes the mean of its
  vertices that have data (``avg_method="nanmean"``), so subsampled columns and one-vertex-wide
  rings stay visible (a region grows by at most one face at its border). Measured 0.35–0.65 s
  warm per two-hemisphere figure (0.2–0.3 s for one) on a shared 2-core machine.
- :func:`surface_view_html`: an interactive 3-D view (nilearn ``view_surf``), one
  self-contained HTML string. Engine ``"niivue"``: its JavaScript is inlined, so it needs no
  extra package (``"plotly"`` needs the ``plotly`` package) and no network; the only remote
  reference nilearn writes — a favicon ``<link>`` to raw.githubusercontent.com — is removed here.
"""

from __future__ import annotations

import io
import re
import warnings
from typing import Mapping, Optional

import numpy as np

from core.data.base import SurfaceSpace
from core.errors import ConfigError

VIEWS = {"flat": ("flat", "dorsal"), "inflated": ("inflated", "lateral"), "lateral": ("pial", "lateral")}
#: view name → (fsaverage5 mesh, nilearn camera view)
HEMI_CHOICES = ("both", "left", "right")
ROI_COLORS = ("black", "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d")
FIG_HEIGHT_IN = 3.6  #: inches per row; width = FIG_HEIGHT_IN * 1.4 per hemisphere (+ colour bar)
_FAVICON = re.compile(r'<link\s+rel="icon"[^>]*?/?>', re.S)


def _check_space(space: SurfaceSpace) -> None:
    if not isinstance(space, SurfaceSpace):
        raise ConfigError(f"surface maps need a SurfaceSpace (dataset.surface_space(subject)), got "
                          f"{type(space).__name__}; volume datasets use core.viz.flatmap")
    if space.mesh != "fsaverage5":
        raise ConfigError(f"surface mesh {space.mesh!r} is not drawable here; only 'fsaverage5' "
                          "(shipped inside nilearn) is")


def mesh_values(values, space: SurfaceSpace) -> np.ndarray:
    """Per-column ``values`` ``(n_voxels,)`` → per-vertex ``(20484,)`` float64, NaN where a vertex
    has no column (values that are already per-vertex, ``(20484,)``, pass through as float)."""
    _check_space(space)
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1 and v.shape[0] == space.n_vertices and len(space.vertices) != space.n_vertices:
        return v.copy()
    if v.ndim != 1 or v.shape[0] != len(space.vertices):
        raise ConfigError(f"surface map values of shape {v.shape} match neither the subject's "
                          f"{len(space.vertices)} columns nor the mesh's {space.n_vertices} vertices")
    return space.to_mesh(v)


def roi_labels(rois: Mapping[str, np.ndarray], space: SurfaceSpace) -> tuple:
    """``(labels (20484,) int, names)``: ROI masks (per column or per vertex; ``"cortex"`` is left
    out) as one label per vertex, 0 = no ROI, ``k`` = ``names[k - 1]`` (the first ROI wins where
    masks overlap)."""
    lab = np.zeros(space.n_vertices, dtype=np.int64)
    names = []
    for name, mask in rois.items():
        if name == "cortex":
            continue
        m = mesh_values(np.asarray(mask, dtype=np.float64), space)
        hit = (np.nan_to_num(m) > 0) & (lab == 0)
        if hit.any():
            names.append(str(name))
            lab[hit] = len(names)
    return lab, names


def _limits(vals: np.ndarray, vmin, vmax, cmap, symmetric: bool) -> tuple:
    from core.viz.flatmap import color_scale

    cmap, lo, hi = color_scale(vals, vmin=vmin, vmax=vmax, cmap=cmap)
    if symmetric:
        hi = max(abs(lo), abs(hi))
        lo = -hi
    return cmap, lo, hi


def surface_map_figure(values, space: SurfaceSpace, *, view: str = "flat", hemi: str = "both",
                       cmap: Optional[str] = None, vmin: Optional[float] = None,
                       vmax: Optional[float] = None, symmetric: bool = False,
                       rois: Optional[Mapping[str, np.ndarray]] = None, title: str = ""):
    """A matplotlib ``Figure`` (Agg canvas, not managed by pyplot, so nothing to close) of
    ``values`` on fsaverage5; arguments as :func:`surface_map_png`."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from nilearn import plotting

    from core.data import fsaverage as fs

    if view not in VIEWS:
        raise ConfigError(f"surface view {view!r} is not one of {sorted(VIEWS)}")
    if hemi not in HEMI_CHOICES:
        raise ConfigError(f"hemisphere {hemi!r} is not one of {HEMI_CHOICES}")
    vals = mesh_values(values, space)
    cmap, lo, hi = _limits(vals, vmin, vmax, cmap, symmetric)
    labels, names = roi_labels(rois, space) if rois else (None, [])
    mesh_kind, camera = VIEWS[view]
    mesh = fs.load_mesh(mesh_kind)
    sulc = _sulcal_depth()
    hemis = list(fs.HEMIS) if hemi == "both" else [hemi]
    fig = Figure(figsize=(FIG_HEIGHT_IN * (1.4 * len(hemis) + 0.3), FIG_HEIGHT_IN))
    FigureCanvasAgg(fig)  # Agg canvas, never registered with pyplot: no GUI, nothing left open
    n = fs.N_PER_HEMI
    for j, h in enumerate(hemis):
        i = fs.HEMIS.index(h)
        ax = fig.add_axes((j * 0.9 / len(hemis), 0.04, 0.9 / len(hemis), 0.88), projection="3d")
        sl = slice(i * n, (i + 1) * n)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nilearn's notes on NaN / threshold choices
            plotting.plot_surf_stat_map(mesh.parts[h], vals[sl], hemi=h, view=camera, axes=ax, figure=fig,
                                        bg_map=sulc[sl], colorbar=False, cmap=cmap, vmin=lo, vmax=hi, avg_method="nanmean",
                                        symmetric_cbar=False)
            if names:
                present = [k for k in range(1, len(names) + 1) if (labels[sl] == k).any()]
                if present:
                    plotting.plot_surf_contours(
                        mesh.parts[h], labels[sl], levels=present, axes=ax, figure=fig,
                        labels=[names[k - 1] for k in present],
                        colors=[ROI_COLORS[(k - 1) % len(ROI_COLORS)] for k in present], legend=False)
        ax.set_title(h, fontsize=9, y=0.95)
    if names:
        from matplotlib.patches import Patch

        fig.legend(handles=[Patch(facecolor="none", edgecolor=ROI_COLORS[k % len(ROI_COLORS)], label=nm)
                            for k, nm in enumerate(names)], loc="lower center", ncol=len(names),
                   fontsize=8, frameon=False)
    sm = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(lo, hi), cmap=cmap)
    cax = fig.add_axes((0.915, 0.22, 0.012, 0.55))
    fig.colorbar(sm, cax=cax)
    cax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def surface_map_png(values, space: SurfaceSpace, view: str = "flat", hemi: str = "both",
                    cmap: Optional[str] = None, vmin: Optional[float] = None, vmax: Optional[float] = None,
                    symmetric: bool = False, rois: Optional[Mapping[str, np.ndarray]] = None,
                    title: str = "", dpi: int = 100) -> bytes:
    """PNG of per-column ``values`` on the fsaverage5 cortex.

    Parameters
    ----------
    values : ``(n_voxels,)`` per response column (``space.vertices`` order) or ``(20484,)`` per
        vertex; NaN = no data (drawn as the sulcal-depth background).
    space : the subject's :class:`~core.data.base.SurfaceSpace` (mesh ``"fsaverage5"``).
    view : ``"flat"`` (nilearn's flat patch, medial wall cut away), ``"inflated"`` (inflated
        mesh, lateral view) or ``"lateral"`` (pial mesh, lateral view).
    hemi : ``"both"`` (left and right side by side), ``"left"`` or ``"right"``.
    cmap, vmin, vmax : colour map and limits; defaults as the pycortex flatmaps
        (:func:`core.viz.flatmap.color_scale`: diverging and symmetric for signed maps, else
        1st–99th percentiles).
    symmetric : force limits symmetric about 0 (``±max(|vmin|, |vmax|)``).
    rois : ``{name: (n_voxels,) or (20484,) bool}`` (e.g. ``dataset.rois(subject)``): outlined
        with a legend; ``"cortex"`` is skipped.
    title : figure title.
    dpi : pixels per inch; the image is ``FIG_HEIGHT_IN * dpi`` pixels high.

    Returns
    -------
    PNG bytes (RGBA). The figure is an Agg canvas outside pyplot: nothing stays open.
    """
    fig = surface_map_figure(values, space, view=view, hemi=hemi, cmap=cmap, vmin=vmin, vmax=vmax,
                             symmetric=symmetric, rois=rois, title=title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, pil_kwargs={"compress_level": 1})
    fig.clear()
    return buf.getvalue()


def surface_view_html(values, space: SurfaceSpace, *, mesh: str = "inflated", hemi: str = "both",
                      cmap: Optional[str] = None, vmin: Optional[float] = None, vmax: Optional[float] = None,
                      symmetric: bool = False, threshold: Optional[float] = None, title: str = "") -> str:
    """Interactive 3-D view of per-column ``values`` (nilearn ``view_surf``, engine ``"niivue"``).

    Parameters
    ----------
    values, space, cmap, vmin, vmax, symmetric : as :func:`surface_map_png`.
    mesh : ``"inflated"``, ``"pial"``, ``"white"`` or ``"sphere"``.
    hemi : ``"both"``, ``"left"`` or ``"right"``.
    threshold : hide ``|value| < threshold`` (None: show all).
    title : shown above the view.

    Returns
    -------
    A complete, self-contained HTML document (~3 MB; niivue's JavaScript inlined; no remote
    reference), for ``st.components.v1.html`` or a file.
    """
    from nilearn import plotting
    from nilearn.surface import SurfaceImage

    from core.data import fsaverage as fs

    if mesh not in ("inflated", "pial", "white", "sphere"):
        raise ConfigError(f"surface view mesh {mesh!r} is not one of inflated, pial, white, sphere")
    if hemi not in HEMI_CHOICES:
        raise ConfigError(f"hemisphere {hemi!r} is not one of {HEMI_CHOICES}")
    vals = mesh_values(values, space)
    cmap, lo, hi = _limits(vals, vmin, vmax, cmap, symmetric)
    n = fs.N_PER_HEMI
    # niivue draws no overlay at all once the map holds a NaN (checked in headless chromium): vertices
    # without data become 0, hidden below a threshold just above 0 (real exact zeros hide too).
    missing = ~np.isfinite(vals)
    if missing.any():
        vals = np.where(missing, 0.0, vals)
        threshold = threshold if threshold else NO_DATA_THRESHOLD
    img = SurfaceImage(fs.load_mesh(mesh), {"left": vals[:n], "right": vals[n:]})
    bg = _sulcal_depth()
    bg_img = SurfaceImage(fs.load_mesh(mesh), {"left": bg[:n], "right": bg[n:]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        view = plotting.view_surf(surf_map=img, bg_map=bg_img, hemi=hemi, threshold=threshold, cmap=cmap,
                                  vmin=lo, vmax=hi, symmetric_cmap=bool(symmetric or (lo < 0 < hi and lo == -hi)),
                                  title=title or None, engine="niivue")
    return _FAVICON.sub("", view.get_standalone())


NO_DATA_THRESHOLD = 1e-6  #: |value| below it is not drawn in the 3-D view (where NaN vertices went)


def _sulcal_depth() -> np.ndarray:
    """fsaverage5 sulcal depth ``(20484,)`` (shipped with nilearn), the maps' grey background."""
    global _SULC
    if _SULC is None:
        from nilearn.datasets import load_fsaverage_data

        d = load_fsaverage_data("fsaverage5", data_type="sulcal")
        _SULC = np.concatenate([np.asarray(d.data.parts[h], dtype=np.float64) for h in ("left", "right")])
    return _SULC


_SULC: Optional[np.ndarray] = None

__all__ = ["VIEWS", "mesh_values", "roi_labels", "surface_map_figure", "surface_map_png", "surface_view_html"]
