"""ROI masks on a subject's response voxels, from the pycortex subject's ``overlays.svg``.

Works without inkscape. The same recipe as pycortex's ``cortex.utils.get_roi_masks`` with
``gm_sampler`` = a transform mask and ``allow_overlap=True``, restricted to the mask's voxels and
usable with any filestore (pycortex's own function only reads the default database):

1. ROI vertices: the svg's ROI shapes tested against the flat surface
   (``svg.rois.get_mask``), kept where the flatmap has them, plus their fiducial-surface neighbours
   that the flatmap cut away (as ``cortex.utils.get_roi_verts`` does).
2. Each mask voxel (in the order ``cortex.Volume(vec, subject, xfm)`` expects: C order of the
   ``(z, y, x)`` mask) is mapped to millimetres by the transform and assigned its nearest
   fiducial-surface vertex; the voxel is in an ROI when that vertex is.

Results are cached on disk (``<cache>/roi-masks/``) keyed on the filestore, subject, transform,
mask and the overlays file's hash.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from core.data.base import SurfaceMapping
from core.errors import DataError
from core.store import cached_arrays, file_hash, key_hash

ROI_VERSION = "roi-masks-v1"  #: bump when the recipe changes
CORTEX = "cortex"  #: name of the all-voxels ROI


def _db(mapping: SurfaceMapping):
    from core.cortex_env import cortex_db

    return cortex_db(mapping.filestore)


def _subject_dir(mapping: SurfaceMapping) -> Path:
    return Path(_db(mapping).filestore) / mapping.cortex_subject


def mask_voxels(mapping: SurfaceMapping) -> np.ndarray:
    """``(z, y, x)`` indices of the transform mask's voxels, ``(n_voxels, 3)`` int64, in response
    column order (what ``cortex.Volume(vec, subject, xfm)`` assumes for a 1-D ``vec``)."""
    db = _db(mapping)
    try:
        mask = np.asarray(db.get_mask(mapping.cortex_subject, mapping.xfm, type=mapping.mask))
    except Exception as err:  # pycortex raises bare IOError / KeyError / ValueError variants
        raise DataError(f"pycortex cannot give mask {mapping.mask!r} of transform {mapping.xfm!r} "
                        f"for subject {mapping.cortex_subject!r} in {db.filestore} ({err}); "
                        "check the pycortex-db folder") from None
    return np.stack(np.nonzero(mask), axis=1).astype(np.int64)


def _roi_vertices(db, subject: str, names: Optional[Sequence[str]]) -> dict:
    """(ROI name → boolean ``(n_vertices,)`` over the merged lh+rh surface, fiducial points)."""
    from scipy import sparse

    svg = db.get_overlay(subject)
    available = list(svg.rois.shapes.keys())
    if names is None:
        names = available
    missing = [n for n in names if n not in available]
    if missing:
        raise DataError(f"ROI(s) {missing} are not in {Path(db.filestore) / subject / 'overlays.svg'}; "
                        f"it has: {', '.join(available)}")
    _, flat_polys = db.get_surf(subject, "flat", merge=True)
    pts, polys = db.get_surf(subject, "fiducial", merge=True)
    n = len(pts)
    good = np.zeros(n, dtype=bool)
    good[np.unique(flat_polys)] = True
    i = np.concatenate([polys[:, 0], polys[:, 1], polys[:, 2]])
    j = np.concatenate([polys[:, 1], polys[:, 2], polys[:, 0]])
    adj = sparse.coo_matrix((np.ones(len(i), dtype=np.float32), (i, j)), shape=(n, n)).tocsr()
    adj = adj + adj.T
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # empty svg layers warn "contains no splines"
        for name in names:
            verts = np.zeros(n, dtype=bool)
            verts[np.asarray(svg.rois.get_mask(name), dtype=np.int64)] = True
            verts &= good
            cut_neighbours = (adj @ verts.astype(np.float32)) > 0
            out[name] = verts | (cut_neighbours & ~good)
    return out, pts


def _compute(mapping: SurfaceMapping, names: Optional[Sequence[str]]) -> dict:
    from scipy.spatial import cKDTree

    db = _db(mapping)
    subject = mapping.cortex_subject
    verts, fiducial = _roi_vertices(db, subject, names)
    zyx = mask_voxels(mapping)
    xfm = db.get_xfm(subject, mapping.xfm)
    mm = xfm.inv(zyx[:, ::-1].astype(np.float64))  # pycortex transforms take (x, y, z) indices
    _, nearest = cKDTree(fiducial).query(mm)
    masks = {name: v[nearest] for name, v in verts.items()}
    if names is None:
        masks = {k: m for k, m in masks.items() if m.any()}
    masks[CORTEX] = np.ones(len(zyx), dtype=bool)
    return masks


def roi_masks(mapping: SurfaceMapping, names: Optional[Sequence[str]] = None) -> dict:
    """Boolean ROI masks over the response voxels of a pycortex-mapped subject.

    Parameters
    ----------
    mapping : the subject's :class:`SurfaceMapping` (pycortex subject, transform, mask name and
        filestore; ``filestore=None`` is pycortex's default database, which ships S1).
    names : ROI names to return (as spelled in ``overlays.svg``); None = every ROI of the
        overlay that contains at least one voxel.

    Returns
    -------
    dict name → ``(n_voxels,)`` bool, always with ``"cortex"`` (all voxels). ROIs may overlap.

    Raises
    ------
    DataError
        A requested ROI is not in the overlay, or pycortex cannot read the subject.
    """
    names = None if names is None else [str(n) for n in names if n != CORTEX]
    svg = _subject_dir(mapping) / "overlays.svg"
    if not svg.is_file():
        raise DataError(f"{svg} is missing: pycortex subject {mapping.cortex_subject!r} has no ROI "
                        "overlay; add overlays.svg or use a subject that has one")
    key = key_hash(ROI_VERSION, str(Path(_db(mapping).filestore).resolve()), mapping.cortex_subject,
                   mapping.xfm, mapping.mask, file_hash(svg), names)
    arrays = cached_arrays("roi-masks", key, lambda: _compute(mapping, names))
    return {k: np.asarray(v, dtype=bool) for k, v in arrays.items()}
