"""fsaverage5 geometry from the meshes nilearn ships (offline): coordinates, geodesic discs, ROIs.

Vertex indices follow the project's :class:`~core.data.base.SurfaceSpace` convention: left
hemisphere ``0 … 10241``, right hemisphere ``10242 … 20483`` of the concatenated mesh. Distances
are millimetres on the fsaverage5 **pial** surface (fsaverage's coordinates are MNI305 space, so
standard MNI coordinates land close to the right gyrus; the pial mesh is the one those coordinates
are matched on, which keeps nearest-vertex and distance on one surface).

Geodesic distance is the shortest path along mesh edges (Dijkstra over the edge graph, edge
weight = Euclidean edge length). It overestimates the true surface geodesic by a few percent (the
path zig-zags along edges); at fsaverage5's ~3.5 mm vertex spacing that is well below one vertex
for the 5–20 mm discs used here. Hand-written on ``scipy.sparse.csgraph.dijkstra`` because no
well-kept offline library computes geodesics on nilearn meshes (``nilearn`` has none; ``gdist``
and ``potpourri3d`` are extra compiled packages).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from core.errors import ConfigError, DataError

N_PER_HEMI = 10242  #: vertices per hemisphere of fsaverage5 (icosahedron order 5)
N_PER_HEMI_FS6 = 40962  #: vertices per hemisphere of fsaverage6 (icosahedron order 6)
N_VERTICES = 2 * N_PER_HEMI  #: concatenated left + right
HEMIS = ("left", "right")
MESH_KINDS = {"pial": "pial", "white": "white_matter", "inflated": "inflated", "sphere": "sphere",
              "flat": "flat"}  #: our names → nilearn's ``load_fsaverage`` keys

#: Standard ROI discs: name → [(hemi, (x, y, z) mm, radius mm), …]. Coordinates are MNI
#: (≈ MNI305/fsaverage) peak coordinates from the literature, rounded; each disc is centred on
#: the pial vertex nearest the coordinate and spans ``radius`` mm geodesically.
#: - AC: Heschl's gyrus / primary auditory cortex, centre of TE1.0 (Morosan et al. 2001,
#:   NeuroImage 13:684; ≈ ±45, -20, 8); 15 mm takes in the adjacent planum temporale / STG,
#:   like Huth et al.'s localizer "AC".
#: - Broca: left inferior frontal gyrus, pars triangularis/opercularis (Hagoort 2005 review;
#:   Fedorenko et al. 2010 language localizer IFG peak ≈ -48, 20, 12); right homologue included,
#:   as Huth et al. (2016) find the semantic network bilateral.
#: - sPMv: ventral premotor speech area (Huth et al. 2016 localizer sPMv ≈ ±56, 0, 32).
#: - AG: angular gyrus (Seghier 2013, Neuroscientist 19:43; ≈ ±48, -64, 32).
#: - LTC: lateral temporal cortex, posterior superior temporal sulcus / middle temporal gyrus
#:   (Binder et al. 2009 semantic meta-analysis MTG peak ≈ -56, -40, 0; right mirrored).
STANDARD_ROI_CENTRES = {
    "AC": [("left", (-45.0, -20.0, 8.0), 15.0), ("right", (46.0, -18.0, 8.0), 15.0)],
    "Broca": [("left", (-48.0, 20.0, 12.0), 14.0), ("right", (50.0, 20.0, 12.0), 14.0)],
    "sPMv": [("left", (-56.0, 0.0, 32.0), 10.0), ("right", (56.0, 2.0, 32.0), 10.0)],
    "AG": [("left", (-48.0, -64.0, 32.0), 14.0), ("right", (48.0, -62.0, 32.0), 14.0)],
    "LTC": [("left", (-56.0, -40.0, 0.0), 14.0), ("right", (56.0, -36.0, 0.0), 14.0)],
}


def _check_hemi(hemi: str) -> int:
    if hemi not in HEMIS:
        raise ConfigError(f"hemisphere {hemi!r} is not one of {HEMIS}")
    return HEMIS.index(hemi)


@lru_cache(maxsize=None)
def load_mesh(kind: str = "pial"):
    """nilearn's fsaverage5 ``PolyMesh`` of ``kind`` (``"pial"``, ``"white"``, ``"inflated"``,
    ``"sphere"``, ``"flat"``), shipped inside the nilearn package (no download)."""
    if kind not in MESH_KINDS:
        raise ConfigError(f"fsaverage5 mesh kind {kind!r} is not one of {sorted(MESH_KINDS)}")
    from nilearn.datasets import load_fsaverage

    return load_fsaverage("fsaverage5")[MESH_KINDS[kind]]


@lru_cache(maxsize=None)
def _coords(kind: str) -> tuple:
    mesh = load_mesh(kind)
    out = []
    for h in HEMIS:
        c = np.asarray(mesh.parts[h].coordinates, dtype=np.float64).copy()
        c.setflags(write=False)
        out.append(c)
    return tuple(out)


def mesh_coords(kind: str = "pial") -> tuple:
    """Vertex coordinates ``(left, right)``, each ``(10242, 3)`` float64 mm (read-only)."""
    return _coords(kind)


@lru_cache(maxsize=None)
def mesh_faces() -> tuple:
    """Triangles ``(left, right)``, each ``(20480, 3)`` int64 vertex indices within the hemisphere
    (every fsaverage5 mesh kind shares them)."""
    mesh = load_mesh("pial")
    out = []
    for h in HEMIS:
        f = np.asarray(mesh.parts[h].faces, dtype=np.int64).copy()
        f.setflags(write=False)
        out.append(f)
    return tuple(out)


@lru_cache(maxsize=None)
def edge_graph(hemi: str, kind: str = "pial"):
    """Sparse symmetric ``(10242, 10242)`` CSR graph of mesh edges weighted by length (mm)."""
    from scipy import sparse

    i = _check_hemi(hemi)
    faces, xyz = mesh_faces()[i], mesh_coords(kind)[i]
    a = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    b = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    pairs = np.unique(lo * N_PER_HEMI + hi)
    lo, hi = pairs // N_PER_HEMI, pairs % N_PER_HEMI
    w = np.linalg.norm(xyz[lo] - xyz[hi], axis=1)
    g = sparse.coo_matrix((np.r_[w, w], (np.r_[lo, hi], np.r_[hi, lo])), shape=(N_PER_HEMI,) * 2)
    return g.tocsr()


def geodesic_distances(center_vertex: int, hemi: str, limit: float = np.inf) -> np.ndarray:
    """Edge-path geodesic distance (mm, pial surface) from ``center_vertex`` to every vertex of
    ``hemi``: ``(10242,)`` float64, ``inf`` beyond ``limit`` mm (or unreachable)."""
    from scipy.sparse.csgraph import dijkstra

    _check_hemi(hemi)
    v = int(center_vertex)
    if not 0 <= v < N_PER_HEMI:
        raise ConfigError(f"vertex {center_vertex} is outside 0…{N_PER_HEMI - 1} of a fsaverage5 "
                          "hemisphere (use the index within the hemisphere)")
    return dijkstra(edge_graph(hemi), directed=False, indices=v, limit=float(limit))


def geodesic_disc(center_vertex: int, radius_mm: float, hemi: str) -> np.ndarray:
    """Vertices of ``hemi`` within ``radius_mm`` (geodesic, pial edge paths) of ``center_vertex``.

    Parameters
    ----------
    center_vertex : index within the hemisphere, ``0 … 10241``.
    radius_mm : disc radius in mm (> 0).
    hemi : ``"left"`` or ``"right"``.

    Returns
    -------
    ``(10242,)`` bool mask over the hemisphere's vertices (the centre always included).
    """
    if not float(radius_mm) > 0:
        raise ConfigError(f"geodesic disc radius {radius_mm} mm must be > 0")
    return geodesic_distances(center_vertex, hemi, limit=radius_mm) <= float(radius_mm)


def nearest_vertex(xyz, hemi: str, kind: str = "pial") -> int:
    """Index within ``hemi`` of the ``kind`` mesh vertex nearest to ``xyz`` (mm)."""
    c = mesh_coords(kind)[_check_hemi(hemi)]
    return int(np.argmin(np.linalg.norm(c - np.asarray(xyz, dtype=np.float64)[None], axis=1)))


@lru_cache(maxsize=None)
def _cortex() -> np.ndarray:
    flat = mesh_coords("flat")
    m = np.concatenate([np.abs(f[:, 2]) < 1e-6 for f in flat])
    m.setflags(write=False)
    return m


def cortex_mask() -> np.ndarray:
    """``(20484,)`` bool: vertices off the medial wall, i.e. those nilearn's flat fsaverage5 mesh
    lays in its plane (z = 0). The flat patch cuts the medial wall away and leaves those ~740
    vertices per hemisphere off-plane, so this is the medial-wall cut of that shipped flatmap
    (no annotation is needed)."""
    return _cortex().copy()


@lru_cache(maxsize=None)
def _standard_rois() -> dict:
    out = {}
    for name, discs in STANDARD_ROI_CENTRES.items():
        mask = np.zeros(N_VERTICES, dtype=bool)
        for hemi, xyz, radius in discs:
            off = _check_hemi(hemi) * N_PER_HEMI
            mask[off:off + N_PER_HEMI] |= geodesic_disc(nearest_vertex(xyz, hemi), radius, hemi)
        mask &= _cortex()
        mask.setflags(write=False)
        out[name] = mask
    return out


def standard_rois() -> dict:
    """Standard ROIs on fsaverage5: ``{name: (20484,) bool}`` over concatenated left + right.

    Geodesic discs (:func:`geodesic_disc`) around :data:`STANDARD_ROI_CENTRES`: ``"AC"``,
    ``"Broca"``, ``"sPMv"``, ``"AG"``, ``"LTC"``, restricted to :func:`cortex_mask`; every ROI has
    a disc in each hemisphere, and the discs of different ROIs do not overlap (centres ≥ 20 mm
    apart). Computed once per process (~1 s), then copied out.
    """
    return {k: v.copy() for k, v in _standard_rois().items()}


def standard_centres() -> dict:
    """``{name: [(hemi, vertex index within the hemisphere, radius mm), …]}`` of the standard ROIs
    (the nearest pial vertex of each coordinate in :data:`STANDARD_ROI_CENTRES`)."""
    return {name: [(h, nearest_vertex(xyz, h), r) for h, xyz, r in discs]
            for name, discs in STANDARD_ROI_CENTRES.items()}


def reduce_fsaverage6(data_hemi, axis: int | None = None) -> np.ndarray:
    """One hemisphere's fsaverage6 data → fsaverage5 by keeping its first 10,242 vertices.

    FreeSurfer's icosahedral subdivision keeps the lower-order vertices first, so fsaverage6
    vertex ``i < 10242`` *is* fsaverage5 vertex ``i`` (same position). This is point sampling,
    not averaging: the dropped fsaverage6 vertices' values are discarded, not pooled.

    Parameters
    ----------
    data_hemi : array with one axis of 40,962 (fsaverage6) or 10,242 (already fsaverage5)
        vertices, e.g. ``(n_vertices,)``, nilearn's ``(n_vertices, n_trs)`` or ``(n_trs,
        n_vertices)``.
    axis : the vertex axis; None finds the one axis of length 40,962 or 10,242.

    Returns
    -------
    The array with that axis cut to 10,242 (fsaverage5 input is returned unchanged).

    Raises
    ------
    DataError
        No axis (or more than one) has 10,242 or 40,962 vertices.
    """
    x = np.asarray(data_hemi)
    ok = (N_PER_HEMI, N_PER_HEMI_FS6)
    if axis is None:
        hits = [a for a, n in enumerate(x.shape) if n in ok]
        if len(hits) != 1:
            raise DataError(f"hemisphere data of shape {x.shape} has no single vertex axis of "
                            f"{N_PER_HEMI_FS6} (fsaverage6) or {N_PER_HEMI} (fsaverage5) vertices; "
                            "pass one hemisphere's surface data (or give axis=)")
        axis = hits[0]
    if not -x.ndim <= axis < x.ndim or x.shape[axis] not in ok:
        raise DataError(f"hemisphere data of shape {x.shape} has {x.shape[axis] if -x.ndim <= axis < x.ndim else 'no'} "
                        f"vertices on axis {axis}, neither {N_PER_HEMI_FS6} (fsaverage6) nor "
                        f"{N_PER_HEMI} (fsaverage5); resample it to fsaverage6 first")
    return np.take(x, np.arange(N_PER_HEMI), axis=axis) if x.shape[axis] == N_PER_HEMI_FS6 else x


__all__ = ["N_PER_HEMI", "N_PER_HEMI_FS6", "N_VERTICES", "HEMIS", "STANDARD_ROI_CENTRES", "load_mesh",
           "mesh_coords", "mesh_faces", "edge_graph", "geodesic_distances", "geodesic_disc",
           "nearest_vertex", "cortex_mask", "standard_rois", "standard_centres", "reduce_fsaverage6"]
