"""fsaverage5 geometry from nilearn's shipped meshes (core.data.fsaverage)."""

import numpy as np
import pytest
from nilearn.datasets import load_fsaverage

from core.data import fsaverage as fs
from core.errors import ConfigError, DataError


def _edges(faces):
    """Unique undirected edges of a triangle list, independently of core.data.fsaverage."""
    e = np.vstack([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return np.unique(np.sort(e, axis=1), axis=0)


def _bellman_ford(xyz, edges, source, n_iter=400):
    """Reference shortest edge-path distances: vectorised Bellman-Ford relaxation to a fixed point."""
    w = np.linalg.norm(xyz[edges[:, 0]] - xyz[edges[:, 1]], axis=1)
    d = np.full(len(xyz), np.inf)
    d[source] = 0.0
    for _ in range(n_iter):
        new = d.copy()
        np.minimum.at(new, edges[:, 1], d[edges[:, 0]] + w)
        np.minimum.at(new, edges[:, 0], d[edges[:, 1]] + w)
        if np.array_equal(new, d):
            return d
        d = new
    raise AssertionError("Bellman-Ford did not converge")


def test_meshes_match_nilearn_and_are_read_only():
    ref = load_fsaverage("fsaverage5")
    for kind, key in fs.MESH_KINDS.items():
        left, right = fs.mesh_coords(kind)
        assert left.shape == right.shape == (fs.N_PER_HEMI, 3)
        np.testing.assert_array_equal(left, ref[key].parts["left"].coordinates)
        np.testing.assert_array_equal(right, ref[key].parts["right"].coordinates)
        with pytest.raises(ValueError):
            left[0, 0] = 1.0
    faces = fs.mesh_faces()
    assert faces[0].shape == (20480, 3) and faces[0].max() == fs.N_PER_HEMI - 1
    with pytest.raises(ConfigError, match="mesh kind 'midthickness'"):
        fs.mesh_coords("midthickness")


def test_geodesic_matches_brute_force_reference():
    xyz, faces = fs.mesh_coords("pial")[0], fs.mesh_faces()[0]
    edges = _edges(faces)
    for source in (0, 1172, 7777):
        ref = _bellman_ford(xyz, edges, source)
        got = fs.geodesic_distances(source, "left")
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)
        # a path is never shorter than the straight line; direct neighbours are one edge away
        assert np.all(got >= np.linalg.norm(xyz - xyz[source], axis=1) - 1e-6)
        nb = edges[(edges == source).any(axis=1)].ravel()
        nb = nb[nb != source]
        np.testing.assert_allclose(got[nb], np.linalg.norm(xyz[nb] - xyz[source], axis=1))
    # limited search: exact within the limit, inf beyond
    lim = fs.geodesic_distances(1172, "left", limit=10.0)
    full = fs.geodesic_distances(1172, "left")
    np.testing.assert_allclose(lim[full <= 10.0], full[full <= 10.0])
    assert np.isinf(lim[full > 10.0]).all()


def test_geodesic_disc_nested_and_errors():
    small, big = fs.geodesic_disc(524, 6.0, "right"), fs.geodesic_disc(524, 12.0, "right")
    assert small.shape == (fs.N_PER_HEMI,) and small.dtype == bool
    assert small[524] and small.sum() < big.sum() and not (small & ~big).any()
    # fsaverage5 pial spacing is ~3–4 mm: a 12 mm disc holds tens of vertices, not hundreds
    assert 15 <= big.sum() <= 200
    with pytest.raises(ConfigError, match="radius"):
        fs.geodesic_disc(0, 0.0, "left")
    with pytest.raises(ConfigError, match="vertex 10242"):
        fs.geodesic_disc(10242, 5.0, "left")
    with pytest.raises(ConfigError, match="hemisphere 'both'"):
        fs.geodesic_disc(0, 5.0, "both")


def test_cortex_mask_drops_the_medial_wall():
    m = fs.cortex_mask()
    assert m.shape == (fs.N_VERTICES,) and 18_500 < m.sum() < 19_500
    for i, side in enumerate((-1, 1)):
        x = fs.mesh_coords("pial")[i][:, 0]
        wall = ~m[i * fs.N_PER_HEMI:(i + 1) * fs.N_PER_HEMI]
        assert 600 < wall.sum() < 900
        # medial wall vertices sit near the midline, the rest far lateral on average
        assert np.abs(x[wall]).mean() < 12 and side * x[~wall].mean() > 25


def test_standard_rois_are_discs_at_the_stated_coordinates():
    rois = fs.standard_rois()
    assert set(rois) >= {"AC", "Broca", "AG", "LTC", "sPMv"}
    cortex = fs.cortex_mask()
    names = list(rois)
    for name, m in rois.items():
        assert m.shape == (fs.N_VERTICES,) and m.dtype == bool
        assert not (m & ~cortex).any()
        for hemi, xyz, radius in fs.STANDARD_ROI_CENTRES[name]:
            i = fs.HEMIS.index(hemi)
            part = m[i * fs.N_PER_HEMI:(i + 1) * fs.N_PER_HEMI]
            v = fs.nearest_vertex(xyz, hemi)
            assert part[v] and np.linalg.norm(fs.mesh_coords("pial")[i][v] - xyz) < 6.0
            d = fs.geodesic_distances(v, hemi)
            assert d[part].max() <= radius
            assert 10 <= part.sum() <= 150
    for a in range(len(names)):  # distinct regions
        for b in range(a + 1, len(names)):
            assert not (rois[names[a]] & rois[names[b]]).any()
    rois["AC"][:] = False  # callers get copies
    assert fs.standard_rois()["AC"].any()


def test_reduce_fsaverage6_keeps_the_fsaverage5_prefix():
    rng = np.random.default_rng(0)
    x6 = rng.standard_normal(fs.N_PER_HEMI_FS6)
    np.testing.assert_array_equal(fs.reduce_fsaverage6(x6), x6[:fs.N_PER_HEMI])
    xt = rng.standard_normal((fs.N_PER_HEMI_FS6, 7))  # nilearn's (vertices, T)
    np.testing.assert_array_equal(fs.reduce_fsaverage6(xt), xt[:fs.N_PER_HEMI])
    np.testing.assert_array_equal(fs.reduce_fsaverage6(xt.T), xt.T[:, :fs.N_PER_HEMI])
    x5 = rng.standard_normal((fs.N_PER_HEMI, 3))
    assert fs.reduce_fsaverage6(x5) is x5 or np.array_equal(fs.reduce_fsaverage6(x5), x5)
    for bad in (np.zeros(40000), np.zeros((10, 20000)), np.zeros((fs.N_PER_HEMI, fs.N_PER_HEMI_FS6))):
        with pytest.raises(DataError, match="40962"):
            fs.reduce_fsaverage6(bad)
    with pytest.raises(DataError, match="axis 1"):
        fs.reduce_fsaverage6(np.zeros((fs.N_PER_HEMI_FS6, 5)), axis=1)


def test_icosahedral_nesting_in_the_shipped_sphere():
    """What reduce_fsaverage6 relies on, shown on shipped data: fsaverage5's sphere is its first
    2,562 vertices (icosahedron order 4) plus one new vertex per order-4 edge, at the edge's
    midpoint pushed onto the sphere — subdivision appends vertices, never reorders them. A
    synthetic fsaverage6 made by the same rule reduces exactly to nilearn's fsaverage5."""
    sphere, faces = fs.mesh_coords("sphere")[0], fs.mesh_faces()[0]
    edges = _edges(faces)
    n4 = 2562
    # each new vertex has exactly two old neighbours, and sits at their (normalised) midpoint
    new_old = edges[(edges[:, 0] < n4) & (edges[:, 1] >= n4)]
    assert len(new_old) == 2 * (fs.N_PER_HEMI - n4)
    order = np.argsort(new_old[:, 1], kind="stable")
    pairs = new_old[order, 0].reshape(-1, 2)
    new = new_old[order, 1].reshape(-1, 2)[:, 0]
    mid = sphere[pairs].mean(axis=1)
    mid *= 100.0 / np.linalg.norm(mid, axis=1, keepdims=True)
    assert np.linalg.norm(mid - sphere[new], axis=1).max() < 0.05  # mm, on a 100 mm sphere
    # synthetic fsaverage6: fsaverage5's vertices, then one midpoint per fsaverage5 edge
    e5 = _edges(faces)
    m6 = sphere[e5].mean(axis=1)
    fs6 = np.vstack([sphere, m6 * 100.0 / np.linalg.norm(m6, axis=1, keepdims=True)])
    assert fs6.shape == (fs.N_PER_HEMI_FS6, 3)
    np.testing.assert_array_equal(fs.reduce_fsaverage6(fs6), load_fsaverage("fsaverage5")["sphere"]
                                  .parts["left"].coordinates)
