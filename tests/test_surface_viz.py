"""nilearn surface maps on fsaverage5 (core.viz.surface): PNG bytes and self-contained HTML."""

import io
import re

import numpy as np
import pytest
from PIL import Image

from core.data import fsaverage as fs
from core.data.base import SurfaceSpace
from core.errors import ConfigError
from core.viz.surface import FIG_HEIGHT_IN, mesh_values, roi_labels, surface_map_png, surface_view_html


@pytest.fixture(scope="module")
def space():
    """Every 3rd cortical vertex, like a subsampled surface dataset."""
    return SurfaceSpace(mesh="fsaverage5", vertices=np.flatnonzero(fs.cortex_mask())[::3], n_per_hemi=10242)


@pytest.fixture(scope="module")
def values(space):
    return np.random.default_rng(0).standard_normal(len(space.vertices)).astype(np.float32)


def _decode(png):
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(png))
    img.load()
    return img


def test_mesh_values_and_roi_labels(space, values):
    m = mesh_values(values, space)
    assert m.shape == (20484,) and np.isnan(m).sum() == 20484 - len(space.vertices)
    np.testing.assert_allclose(m[space.vertices], values)
    full = np.arange(20484.0)
    np.testing.assert_array_equal(mesh_values(full, space), full)  # per-vertex input passes through
    with pytest.raises(ConfigError, match="match neither"):
        mesh_values(values[:-1], space)
    rois = {k: v[space.vertices] for k, v in fs.standard_rois().items()}
    rois["cortex"] = np.ones(len(space.vertices), bool)
    lab, names = roi_labels(rois, space)
    assert names == ["AC", "Broca", "sPMv", "AG", "LTC"]
    for k, n in enumerate(names, 1):
        np.testing.assert_array_equal(np.flatnonzero(lab == k), space.vertices[rois[n]])
    with pytest.raises(ConfigError, match="SurfaceSpace"):
        mesh_values(values, object())
    with pytest.raises(ConfigError, match="fsaverage6"):
        mesh_values(values, SurfaceSpace("fsaverage6", space.vertices, 40962))


@pytest.mark.parametrize("view", ["flat", "inflated", "lateral"])
def test_png_views_decode_with_expected_size(space, values, view):
    rois = {k: v[space.vertices] for k, v in fs.standard_rois().items()}
    png = surface_map_png(values, space, view=view, rois=rois, title=f"r ({view})", dpi=80)
    img = _decode(png)
    want = (FIG_HEIGHT_IN * (1.4 * 2 + 0.3) * 80, FIG_HEIGHT_IN * 80)  # inches * dpi (floored)
    assert all(abs(got - w) <= 1 for got, w in zip(img.size, want))
    px = np.asarray(img.convert("RGB")).astype(int)
    # the map is drawn in colour (diverging: red and blue vertices), not a blank canvas
    red = (px[..., 0] > px[..., 2] + 60).sum()
    blue = (px[..., 2] > px[..., 0] + 60).sum()
    assert red > 500 and blue > 500


def test_single_hemisphere_limits(space, values):
    png = surface_map_png(np.abs(values), space, view="flat", hemi="left", vmin=0, vmax=2, cmap="inferno")
    img = _decode(png)
    assert all(abs(got - w) <= 1 for got, w in zip(img.size, (FIG_HEIGHT_IN * 1.7 * 100, FIG_HEIGHT_IN * 100)))
    # right-hemisphere-only data drawn on the left hemisphere shows no colour: only background
    right_only = np.where(space.vertices >= 10242, 5.0, np.nan)
    px = np.asarray(_decode(surface_map_png(right_only, space, view="inflated", hemi="left", vmin=0,
                                            vmax=1, cmap="autumn")).convert("RGB")).astype(int)
    px = px[:, : int(0.88 * px.shape[1])]  # the brain, not the colour bar
    assert ((px[..., 0] > 200) & (px[..., 1] < 120) & (px[..., 2] < 80)).sum() == 0
    for bad in (dict(view="top"), dict(hemi="middle"), dict(vmin=2.0, vmax=1.0)):
        with pytest.raises(ConfigError):
            surface_map_png(values, space, **bad)


def test_subsampled_columns_still_cover_the_cortex(space):
    """Faces take the mean of their vertices with data: every-3rd-vertex data paints most of the
    area that data on every cortical vertex paints."""
    full = SurfaceSpace("fsaverage5", np.flatnonzero(fs.cortex_mask()), 10242)

    def painted(sp):
        png = surface_map_png(np.ones(len(sp.vertices)), sp, view="flat", hemi="left", vmin=0, vmax=1,
                              cmap="autumn", dpi=60)
        px = np.asarray(_decode(png).convert("RGB")).astype(int)[:, :int(0.88 * 1.7 * FIG_HEIGHT_IN * 60)]
        return ((px[..., 0] > 200) & (px[..., 1] > 200) & (px[..., 2] < 80)).sum()  # yellow = 1.0

    assert painted(space) > 0.6 * painted(full) > 1000  # measured 75 %; a plain face mean: ~2 % of faces


def test_symmetric_and_constant_maps(space, values):
    # a constant map and an all-NaN map still render (unit-wide / default limits)
    _decode(surface_map_png(np.ones(len(space.vertices)), space, view="flat", hemi="right"))
    _decode(surface_map_png(np.full(len(space.vertices), np.nan), space, view="flat", hemi="right"))
    _decode(surface_map_png(values + 3.0, space, view="flat", hemi="right", symmetric=True))


def test_html_is_self_contained(space, values):
    html = surface_view_html(values, space, threshold=0.5, title="demo")
    assert html.lstrip().startswith("<!DOCTYPE html>") and len(html) > 500_000
    # no script, stylesheet, icon or module import fetched from the network
    assert not re.search(r"<script[^>]+src\s*=", html, re.I)
    assert not re.search(r"<link[^>]+href\s*=\s*[\"']https?:", html, re.I)
    assert not re.search(r"""import[^;'"]*from\s*['"]https?:""", html)
    assert not re.search(r"""(src|href)\s*=\s*['"]//""", html)
    with pytest.raises(ConfigError, match="mesh 'flat'"):
        surface_view_html(values, space, mesh="flat")


def test_html_holds_no_nan_for_vertices_without_data(space, values, monkeypatch):
    """niivue draws no overlay once its map holds a NaN (seen in chromium): vertices without a
    column (the space covers part of the mesh) are sent as 0 under a tiny threshold instead."""
    from nilearn import plotting

    assert len(space.vertices) < 20484
    seen = {}
    real = plotting.view_surf

    def spy(**kwargs):
        seen.update(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(plotting, "view_surf", spy)
    surface_view_html(values, space)
    parts = seen["surf_map"].data.parts
    sent = np.concatenate([np.asarray(parts["left"]), np.asarray(parts["right"])])
    assert np.isfinite(sent).all() and seen["threshold"] == pytest.approx(1e-6)
    np.testing.assert_allclose(sent[space.vertices], values, rtol=1e-6)
    off = np.setdiff1d(np.arange(sent.size), space.vertices)
    assert (sent[off] == 0).all()
