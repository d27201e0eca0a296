"""Cortical flatmaps of per-voxel values (pycortex geometry, matplotlib drawing).

pycortex supplies the geometry: its cached pixel mapper (flatmap pixels × volume voxels, averaged
over 32 depths of the cortical sheet), the flatmap mask, the curvature image and the ROI outlines
of the subject's ``overlays.svg``. We compose these once per mapping (kept in memory), so a warm
render is one sparse mat-vec, a colormap lookup and one matplotlib draw.

ROI outlines are drawn by matplotlib from the SVG paths pycortex parses (``Shape.splines``), not
rasterised by pycortex's ``with_rois=True`` path, which shells out to Inkscape (a ~190 MB Debian
package, ~0.6 s per figure): pip-only installs get outlines and labels, vector-sharp at any dpi.

pycortex reads one global database (``cortex.db``); :func:`pycortex_filestore` points it at a
mapping's filestore for the duration of a call (under a lock) and restores it afterwards.
"""

from __future__ import annotations

import contextlib
import io
import threading
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from core.cortex_env import get_cortex
from core.data.base import SurfaceMapping
from core.errors import ConfigError
from core.progress import ProgressFn, report

FLAT_HEIGHT = 1024  #: flatmap pixel height; pycortex's default, whose cache is built once per subject
SEQUENTIAL_CMAP = "inferno"  #: colormap for maps without negative values
DIVERGING_CMAP = "RdBu_r"  #: colormap for signed maps (centred on 0), pycortex's default
LIMIT_PERCENTILE = 99.0  #: automatic colour limits clip the outer 1 % of voxels
FIG_WIDTH_IN = 10.0  #: figure width in inches (pixels = FIG_WIDTH_IN * dpi)

_DB_LOCK = threading.RLock()
_GEOM_LOCK = threading.Lock()


# -- pycortex database ---------------------------------------------------------------------------
@contextlib.contextmanager
def pycortex_filestore(filestore: Optional[Path]):
    """Point pycortex's global ``cortex.db`` at ``filestore`` (None → pycortex's default) for a block.

    pycortex modules hold the same ``db`` object (``from ..database import db``), so the object
    is re-pointed in place, its subject list and memo cache swapped too, and everything restored
    on exit (also on error). A re-entrant lock serialises callers across threads. pycortex's
    console chatter ("Generating a flatmap cache") is swallowed (``sys.stdout`` is redirected,
    process-wide, for the block): core never prints. Other code that calls pycortex functions
    reading the global ``db`` should enter this block too.
    """
    cortex = get_cortex()
    db = cortex.database.db
    target = str(Path(filestore).resolve()) if filestore is not None else cortex.database.default_filestore
    if not Path(target).is_dir():
        raise ConfigError(f"pycortex filestore {target} does not exist; point the dataset's "
                          "SurfaceMapping at a folder holding <subject>/surfaces, transforms, overlays.svg")
    with _DB_LOCK:
        state = db.__dict__
        saved = {k: state.get(k) for k in ("filestore", "_subjects", "auxfile", "_memocache")}
        swap = str(Path(saved["filestore"]).resolve()) != target
        if swap:
            state.update(filestore=target, _subjects=None, auxfile=None, _memocache={})
        try:
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield db
        finally:
            if swap:
                for key, value in saved.items():
                    if value is None and key == "_memocache":
                        state.pop(key, None)
                    else:
                        state[key] = value


def _mapping_key(mapping: SurfaceMapping) -> tuple:
    store = None if mapping.filestore is None else str(Path(mapping.filestore).resolve())
    return store, mapping.cortex_subject, mapping.xfm, mapping.mask


@lru_cache(maxsize=16)
def _voxel_mask(key: tuple) -> np.ndarray:
    """Boolean volume mask ``(nz, ny, nx)`` of the mapping's voxels (their column order)."""
    store, subject, xfm, mask = key
    with pycortex_filestore(None if store is None else Path(store)) as db:
        fname = Path(db.get_paths(subject)["masks"].format(xfmname=xfm, type=mask)) \
            if subject in db.subjects else None
        if fname is None or not fname.exists():
            raise ConfigError(f"pycortex filestore {db.filestore} has no mask {subject}/{xfm}/{mask} "
                              f"({fname}); fix the dataset's SurfaceMapping")
        return db.get_mask(subject, xfm, mask)


def n_mapping_voxels(mapping: SurfaceMapping) -> int:
    """Number of voxels (response columns) the mapping's mask selects."""
    return int(_voxel_mask(_mapping_key(mapping)).sum())


def check_values(values, mapping: SurfaceMapping) -> np.ndarray:
    """``values`` as float32 ``(n_voxels,)``; ConfigError naming both counts when they differ."""
    vals = np.asarray(values, dtype=np.float32)
    n = n_mapping_voxels(mapping)
    if vals.ndim != 1 or vals.shape[0] != n:
        raise ConfigError(f"map has {vals.size} values (shape {vals.shape}) but surface mapping "
                          f"{mapping.cortex_subject}/{mapping.xfm}/{mapping.mask} has {n} voxels; "
                          "pass one value per voxel of that subject")
    return vals


# -- geometry ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FlatGeometry:
    """Everything a render needs, composed once per mapping.

    shape : (H, W) of the flatmap image. pix : ``(n_pix,)`` flat indices of cortex pixels in the
    displayed (row-major, top row first) image. weights : sparse ``(n_pix, n_voxels)`` depth-
    averaging weights. curvature : ``(H, W)`` grey level in [0, 1], NaN off the cortex.
    svg_size : (width, height) of overlays.svg (the image's extent in SVG units). rois : tuples
    ``(name, paths, label_xy)`` with matplotlib Paths and label positions in SVG units.
    """

    shape: tuple
    pix: np.ndarray
    weights: object
    curvature: np.ndarray
    svg_size: tuple
    rois: tuple


_GEOMETRY: dict = {}  # mapping key → FlatGeometry (tens of MB each; oldest dropped past the cap)
_MAX_GEOMETRIES = 4
_BUILD_LOCKS: dict = {}  # mapping key → lock held while its geometry is built


def prepare_flatmap(mapping: SurfaceMapping, progress: ProgressFn = None) -> FlatGeometry:
    """Build (first call for a subject: pycortex writes ~60 MB of cache, tens of seconds) or fetch
    the mapping's flatmap geometry. Later calls in the process return the in-memory copy."""
    key = _mapping_key(mapping)
    with _GEOM_LOCK:
        if key in _GEOMETRY:
            return _GEOMETRY[key]
        build_lock = _BUILD_LOCKS.setdefault(key, threading.Lock())
    with build_lock:  # one build per mapping; renders of other mappings go on meanwhile
        with _GEOM_LOCK:
            if key in _GEOMETRY:
                return _GEOMETRY[key]
        vmask = _voxel_mask(key)
        report(progress, 0.0, f"flatmap geometry for {mapping.cortex_subject}/{mapping.xfm}")
        try:
            geom = _build_geometry(key, vmask, progress)
        except PermissionError as err:
            raise ConfigError(f"pycortex cannot write its flatmap cache ({err.filename}); make the "
                              f"filestore {key[0] or 'pycortex default'} writable once") from err
        with _GEOM_LOCK:
            _GEOMETRY[key] = geom
            while len(_GEOMETRY) > _MAX_GEOMETRIES:
                _GEOMETRY.pop(next(iter(_GEOMETRY)))
        report(progress, 1.0, "flatmap geometry ready")
        return geom


def _build_geometry(key: tuple, vmask: np.ndarray, progress: ProgressFn) -> FlatGeometry:
    store, subject, xfm, _ = key
    cortex = get_cortex()
    qf = cortex.quickflat.utils

    def step(frac: float, msg: str, fn):
        report(progress, frac, msg)  # outside the swap, whose stdout redirect would eat it
        with pycortex_filestore(None if store is None else Path(store)) as db:
            return fn(db)

    flatmask, _ = step(0.05, "flatmap mask", lambda db: qf.get_flatmask(subject, height=FLAT_HEIGHT))
    pixmap = step(0.1, "pixel mapper (pycortex caches it after the first time)",  # 32 depths
                  lambda db: qf.get_flatcache(subject, xfm, height=FLAT_HEIGHT))
    curv, _ = step(0.6, "curvature", lambda db: qf.make_flatmap_image(db.get_surfinfo(subject),
                                                                       height=FLAT_HEIGHT))
    overlay = step(0.9, "ROI outlines", lambda db: db.get_overlay(subject, overlays_available=("rois",)))
    width, height = flatmask.shape  # pycortex stores the mask (W, H), bottom row first
    col, hrow = np.nonzero(flatmask)
    pix = (height - 1 - hrow) * width + col
    weights = pixmap.tocsc()[:, np.flatnonzero(vmask.ravel())].tocsr().astype(np.float32)
    return FlatGeometry(shape=(height, width), pix=pix, weights=weights,
                        curvature=_curvature_grey(curv, cortex.options.config),
                        svg_size=tuple(float(s) for s in overlay.svgshape),
                        rois=_roi_shapes(overlay))


def _curvature_grey(curv: np.ndarray, config) -> np.ndarray:
    """pycortex's flatmap curvature shading (binary sulci/gyri at its configured contrast)."""
    lims = 0.5  # pycortex quickflat: curvature normalised within ±0.5
    norm = (np.clip(curv, -lims, lims) + lims) / (2 * lims)
    if config.get("curvature", "threshold").lower() in ("true", "t", "1", "y", "yes"):
        norm = np.where(np.isnan(curv), np.nan, (np.nan_to_num(norm) > 0.5).astype(np.float32))
    grey = (norm - 0.5) * float(config.get("curvature", "contrast")) \
        + float(config.get("curvature", "brightness"))
    return grey.astype(np.float32)


def _roi_shapes(overlay) -> tuple:
    rois = []
    layer = overlay.rois
    for name, shape in layer.shapes.items():
        paths = tuple(shape.splines)
        if not paths or not shape.visible:
            continue
        labels = tuple((float(e.get("x")), float(e.get("y"))) for e in layer.labels.elements[name]
                       if hasattr(e, "get"))
        rois.append((name, paths, labels))
    return tuple(rois)


# -- values → image ------------------------------------------------------------------------------
def color_scale(values: np.ndarray, vmin=None, vmax=None, cmap=None) -> tuple:
    """Resolve ``(cmap, vmin, vmax)`` for a map.

    Signed maps (finite values on both sides of 0) get :data:`DIVERGING_CMAP` and limits
    symmetric about 0 at the 99th percentile of ``|v|``; others get :data:`SEQUENTIAL_CMAP` and the
    1st–99th percentiles (a constant map: its value ± 0.5; no finite value: 0–1). Explicit
    ``vmin``/``vmax``/``cmap`` win.
    """
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        lo, hi, has_neg = 0.0, 1.0, False
    else:
        has_neg = bool(finite.min() < 0 < finite.max())
        if has_neg:
            hi = float(np.percentile(np.abs(finite), LIMIT_PERCENTILE))
            lo = -hi
        else:
            lo, hi = (float(x) for x in np.percentile(finite, [100 - LIMIT_PERCENTILE, LIMIT_PERCENTILE]))
    if not hi > lo:  # constant map: a unit-wide scale centred on its value
        lo, hi = lo - 0.5, hi + 0.5
    lo = lo if vmin is None else float(vmin)
    hi = hi if vmax is None else float(vmax)
    if not hi > lo:
        raise ConfigError(f"flatmap colour limits vmin={lo:g} >= vmax={hi:g}; pass vmin < vmax")
    return cmap or (DIVERGING_CMAP if has_neg else SEQUENTIAL_CMAP), lo, hi


def apply_threshold(values: np.ndarray, threshold: Optional[float], two_sided: bool = False) -> np.ndarray:
    """Copy of ``values`` with hidden voxels set to NaN: ``v < threshold``, or with ``two_sided``
    ``|v| < threshold`` (signed maps keeping both tails, e.g. preference maps). None → unchanged."""
    if threshold is None:
        return values
    keep = np.abs(values) >= threshold if two_sided else values >= threshold
    return np.where(keep, values, np.nan).astype(np.float32)


def flatmap_image(values, mapping: SurfaceMapping, *, threshold: Optional[float] = None,
                  two_sided: bool = False) -> np.ndarray:
    """Per-pixel flatmap of ``values``: ``(H, W)`` float32, NaN off the cortex and where hidden.

    Each pixel is the mean over the cortical depth of the voxels under it, NaN voxels ignored
    (pycortex's ``make_flatmap_image`` with ``nanmean=True``). ``threshold``/``two_sided`` as in
    :func:`apply_threshold`.
    """
    vals = check_values(values, mapping)
    geom = prepare_flatmap(mapping)
    return _project(geom, apply_threshold(vals, threshold, two_sided))


def _project(geom: FlatGeometry, vals: np.ndarray) -> np.ndarray:
    good = np.isfinite(vals)
    num = geom.weights @ np.where(good, vals, 0.0).astype(np.float32)
    den = geom.weights @ good.astype(np.float32)
    img = np.full(geom.shape[0] * geom.shape[1], np.nan, dtype=np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        img[geom.pix] = np.where(den > 0, num / den, np.nan)
    return img.reshape(geom.shape)


def _compose_rgba(geom: FlatGeometry, img: np.ndarray, cmap, norm) -> np.ndarray:
    """Data colours over curvature over white, as ``(H, W, 4)`` uint8."""
    grey = np.where(np.isnan(geom.curvature), 1.0, geom.curvature)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    shown = np.isfinite(img)
    rgb[shown] = cmap(norm(img[shown]))[:, :3]
    rgba = np.empty(geom.shape + (4,), dtype=np.uint8)
    rgba[..., :3] = np.round(rgb * 255)
    rgba[..., 3] = 255
    return rgba


# -- figures -------------------------------------------------------------------------------------
def flatmap_figure(values, mapping: SurfaceMapping, *, vmin: Optional[float] = None,
                   vmax: Optional[float] = None, cmap: Optional[str] = None,
                   threshold: Optional[float] = None, two_sided: bool = False,
                   title: Optional[str] = None,
                   with_rois: bool = True, roi_names: Optional[Sequence[str]] = None,
                   colorbar_label: str = "", dpi: int = 150):
    """Flatmap of per-voxel ``values`` as a matplotlib Figure (no pyplot state; thread-safe).

    Parameters
    ----------
    values : array ``(n_voxels,)`` — one value per voxel of ``mapping`` (NaN = not shown).
    mapping : SurfaceMapping — pycortex subject, transform, mask and filestore.
    vmin, vmax, cmap : colour scale; defaults from :func:`color_scale` (``inferno`` for
        non-negative maps, ``RdBu_r`` symmetric about 0 for signed ones).
    threshold : hide voxels whose value is below it (they show curvature); with ``two_sided``,
        those whose ``|v|`` is below it (signed maps, keeping both tails).
    title, colorbar_label : text above the map / under the colour bar.
    with_rois : draw ROI outlines and labels from the subject's overlays.svg; ``roi_names``
        restricts them to a subset (e.g. ``["AC", "Broca", "sPMv"]``).
    dpi : output resolution; the figure is :data:`FIG_WIDTH_IN` inches wide.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    if not 10 <= dpi <= 1200:
        raise ConfigError(f"flatmap dpi={dpi}; pass a resolution between 10 and 1200")
    vals = check_values(values, mapping)
    geom = prepare_flatmap(mapping)
    cmap_name, lo, hi = color_scale(vals, vmin, vmax, cmap)
    try:
        cmap_obj = colormaps[cmap_name]
    except KeyError as err:
        raise ConfigError(f"unknown colormap {cmap_name!r}; use a matplotlib colormap name") from err
    norm = Normalize(vmin=lo, vmax=hi, clip=True)
    img = _project(geom, apply_threshold(vals, threshold, two_sided))
    rgba = _compose_rgba(geom, img, cmap_obj, norm)

    svg_w, svg_h = geom.svg_size
    map_h = FIG_WIDTH_IN * svg_h / svg_w
    top, bottom = (0.45 if title else 0.1), 0.85
    fig_h = map_h + top + bottom
    fig = Figure(figsize=(FIG_WIDTH_IN, fig_h), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, bottom / fig_h, 1, map_h / fig_h))
    ax.imshow(rgba, extent=(0, svg_w, svg_h, 0), interpolation="antialiased")
    ax.set_xlim(0, svg_w)
    ax.set_ylim(svg_h, 0)
    ax.set_axis_off()
    if with_rois:
        _draw_rois(ax, geom.rois, roi_names)
    if title:
        fig.text(0.5, 1 - 0.5 * top / fig_h, title, ha="center", va="center", fontsize=13)
    cax = fig.add_axes((0.35, 0.42 / fig_h, 0.3, 0.14 / fig_h))
    cbar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap_obj), cax=cax, orientation="horizontal")
    cbar.set_label(colorbar_label, fontsize=10)
    cbar.ax.tick_params(labelsize=8)
    return fig


def _draw_rois(ax, rois: tuple, roi_names: Optional[Sequence[str]]) -> None:
    """White ROI outlines with a dark halo and labels (pycortex's overlay look), one collection."""
    from matplotlib import patheffects
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import PathPatch

    wanted = None if roi_names is None else set(roi_names)
    chosen = [r for r in rois if wanted is None or r[0] in wanted]
    halo = [patheffects.Stroke(linewidth=2.4, foreground="black", alpha=0.45), patheffects.Normal()]
    patches = [PathPatch(path) for _, paths, _ in chosen for path in paths]
    outlines = PatchCollection(patches, facecolor="none", edgecolor="white", linewidth=1.1,
                               path_effects=halo, gid="roi-outlines")
    ax.add_collection(outlines, autolim=False)
    text_fx = [patheffects.withStroke(linewidth=1.8, foreground="black")]
    for name, _, labels in chosen:
        for x, y in labels:
            ax.text(x, y, name, color="white", fontsize=6.5, fontweight="bold", fontstyle="italic",
                    ha="center", va="center", path_effects=text_fx, clip_on=True)


def flatmap_png(values, mapping: SurfaceMapping, **kwargs) -> bytes:
    """PNG bytes of :func:`flatmap_figure` (same keyword arguments)."""
    fig = flatmap_figure(values, mapping, **kwargs)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi, pil_kwargs={"compress_level": 1})
    return buf.getvalue()
