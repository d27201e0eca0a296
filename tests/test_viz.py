"""core.viz: flatmaps on pycortex's S1 (the demo mapping), WebGL export, altair charts.

The flatmap tests need pycortex's S1 flatmap cache (built once into the venv's filestore by the
``s1`` fixture: ~15–50 s the very first time on a machine, then ~1 s per process).
"""

import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core.cortex_env import get_cortex
from core.data.base import SurfaceMapping
from core.errors import ConfigError
from core.viz import charts
from core.viz.flatmap import (DIVERGING_CMAP, FIG_WIDTH_IN, SEQUENTIAL_CMAP, apply_threshold,
                              color_scale, flatmap_figure, flatmap_image, flatmap_png,
                              n_mapping_voxels, prepare_flatmap, pycortex_filestore)
from core.viz.webgl import export_webgl, webgl_colormaps

S1 = SurfaceMapping("S1", "fullhead", "thin", None)
N_S1_THIN = 37226  # voxels in pycortex S1's fullhead "thin" mask (the demo dataset's voxel count)
INFERNO_MAX = np.array([252, 255, 164])  # inferno(1.0) in 8-bit RGB


@pytest.fixture(scope="module")
def s1():
    """S1's flatmap geometry (builds pycortex's cache the first time on a machine)."""
    return prepare_flatmap(S1)


def _rgb(png: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG"
    return np.asarray(img.convert("RGB")).astype(int)


def _map_box(fig):
    """Pixel rows/cols (top-left origin) of the flatmap axes in the saved PNG."""
    ext = fig.axes[0].get_window_extent()
    height = int(round(fig.get_figheight() * fig.dpi))
    return (int(round(height - ext.y1)), int(round(height - ext.y0)),
            int(round(ext.x0)), int(round(ext.x1)))


# -- values & errors (fast: no flatmap geometry) --------------------------------------------------
def test_mapping_voxel_count_and_wrong_length():
    assert n_mapping_voxels(S1) == N_S1_THIN
    with pytest.raises(ConfigError, match=r"100 values.*37226 voxels"):
        flatmap_png(np.zeros(100), S1)
    with pytest.raises(ConfigError, match="37226 voxels"):
        flatmap_image(np.zeros((2, N_S1_THIN)), S1)


def test_bad_mapping_and_filestore_errors(tmp_path):
    cortex = get_cortex()
    before = cortex.db.filestore
    with pytest.raises(ConfigError, match="no mask S1/fullhead/nothere"):
        n_mapping_voxels(SurfaceMapping("S1", "fullhead", "nothere", None))
    with pytest.raises(ConfigError, match="does not exist"):
        n_mapping_voxels(SurfaceMapping("S1", "fullhead", "thin", tmp_path / "missing"))
    with pytest.raises(ConfigError, match="no mask UTS01"):
        n_mapping_voxels(SurfaceMapping("UTS01", "UTS01_auto", "thick", tmp_path))
    assert cortex.db.filestore == before


def test_filestore_swap_is_restored_even_on_error(tmp_path):
    cortex = get_cortex()
    db = cortex.db
    before = db.filestore
    assert "S1" in db.subjects
    (tmp_path / "XX").mkdir()
    with pycortex_filestore(tmp_path) as swapped:
        assert swapped is db and cortex.database.db.filestore == str(tmp_path.resolve())
        assert list(db.subjects) == ["XX"]
    assert db.filestore == before and "S1" in db.subjects
    with pytest.raises(RuntimeError, match="boom"):
        with pycortex_filestore(tmp_path):
            raise RuntimeError("boom")
    assert db.filestore == before and "S1" in db.subjects


def test_color_scale_rules():
    rng = np.random.default_rng(0)
    signed = rng.standard_normal(10_000).astype(np.float32)
    cmap, lo, hi = color_scale(signed)
    assert cmap == DIVERGING_CMAP
    assert lo == -hi and hi == pytest.approx(np.percentile(np.abs(signed), 99))
    positive = np.abs(signed)
    cmap, lo, hi = color_scale(positive)
    assert cmap == SEQUENTIAL_CMAP
    assert (lo, hi) == pytest.approx(tuple(np.percentile(positive, [1, 99])))
    assert color_scale(positive, vmin=0, vmax=0.5, cmap="viridis") == ("viridis", 0.0, 0.5)
    assert color_scale(np.full(5, 2.0))[1:3] == (1.5, 2.5)
    assert color_scale(np.full(5, np.nan))[1:3] == (0.0, 1.0)
    with pytest.raises(ConfigError, match="vmin=1 >= vmax=0"):
        color_scale(positive, vmin=1, vmax=0)


def test_apply_threshold_voxelwise():
    vals = np.array([-0.6, -0.2, 0.0, 0.3, 0.7, np.nan], dtype=np.float32)
    np.testing.assert_array_equal(apply_threshold(vals, 0.5, two_sided=True),
                                  np.float32([-0.6, np.nan, np.nan, np.nan, 0.7, np.nan]))
    np.testing.assert_array_equal(apply_threshold(vals, 0.25),
                                  np.float32([np.nan, np.nan, np.nan, 0.3, 0.7, np.nan]))
    assert apply_threshold(vals, None, two_sided=True) is vals


# -- flatmaps ------------------------------------------------------------------------------------
def test_flatmap_image_matches_pycortex(s1):
    cortex = get_cortex()
    rng = np.random.default_rng(1)
    vals = rng.standard_normal(N_S1_THIN).astype(np.float32)
    vals[rng.random(N_S1_THIN) < 0.1] = np.nan
    ours = flatmap_image(vals, S1)
    mask = cortex.db.get_mask("S1", "fullhead", "thin")
    ref, _ = cortex.quickflat.make_flatmap_image(cortex.Volume(vals, "S1", "fullhead", mask=mask))
    assert ours.shape == ref.shape == s1.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6, equal_nan=True)
    assert 0.3 < np.isfinite(ours).mean() < 0.9


def test_threshold_hides_pixels(s1):
    vals = np.linspace(0, 1, N_S1_THIN, dtype=np.float32)
    full = flatmap_image(vals, S1)
    cut = flatmap_image(vals, S1, threshold=0.5)
    shown = np.isfinite(cut)
    assert shown.sum() < 0.8 * np.isfinite(full).sum() and shown.sum() > 0
    assert np.nanmin(cut) >= 0.5
    assert not np.isfinite(flatmap_image(vals, S1, threshold=2.0)).any()
    signed = vals * 2 - 1
    one = flatmap_image(signed, S1, threshold=0.5)
    both = flatmap_image(signed, S1, threshold=0.5, two_sided=True)
    assert np.nanmin(one) >= 0.5 and np.nanmin(both) <= -0.5 and np.nanmax(both) >= 0.5
    assert np.isfinite(both).sum() > 1.5 * np.isfinite(one).sum()


def test_flatmap_png_colours_the_cortex(s1):
    ones = np.ones(N_S1_THIN, dtype=np.float32)
    kw = dict(vmin=0.0, vmax=1.0, cmap="inferno", with_rois=False, dpi=100, title="constant")
    fig = flatmap_figure(ones, S1, colorbar_label="r", **kw)
    r0, r1, c0, c1 = _map_box(fig)
    assert len(fig.axes) == 2 and fig.axes[1].get_xlabel() == "r"
    png = flatmap_png(ones, S1, colorbar_label="r", **kw)
    rgb = _rgb(png)
    assert rgb.shape[1] == int(FIG_WIDTH_IN * 100)
    box = rgb[r0:r1, c0:c1]
    lit = np.abs(box - INFERNO_MAX).sum(-1) < 30
    cortex = np.isfinite(flatmap_image(ones, S1))
    expected = np.asarray(Image.fromarray(cortex).resize((box.shape[1], box.shape[0]), Image.NEAREST))
    iou = (lit & expected).sum() / (lit | expected).sum()
    assert iou > 0.9, iou
    assert (box[~expected & ~lit] > 250).all(-1).mean() > 0.95  # off-cortex stays white
    # everything hidden by the threshold: no data colour, curvature grey instead
    hidden = _rgb(flatmap_png(ones * 0.1, S1, threshold=0.5, **kw))[r0:r1, c0:c1]
    assert (np.abs(hidden - INFERNO_MAX).sum(-1) < 30).sum() == 0
    grey = hidden[expected]
    assert np.all(grey[:, 0] == grey[:, 2]) and 80 < grey[:, 0].mean() < 200


def test_roi_outlines_drawn_on_their_paths(s1):
    zeros = np.zeros(N_S1_THIN, dtype=np.float32)
    kw = dict(vmin=0.0, vmax=1.0, cmap="inferno", dpi=100)
    fig = flatmap_figure(zeros, S1, with_rois=True, **kw)
    plain = _rgb(flatmap_png(zeros, S1, with_rois=False, **kw))
    outlined = _rgb(flatmap_png(zeros, S1, with_rois=True, **kw))
    only_ac = _rgb(flatmap_png(zeros, S1, with_rois=True, roi_names=["AC"], **kw))
    white = lambda img: (img > 200).all(-1)  # noqa: E731
    dark = (plain < 60).all(-1)  # data-coloured cortex (inferno(0) is near black)
    assert (white(outlined) & dark).sum() > 2000
    height = plain.shape[0]
    names = [name for name, _, _ in s1.rois]
    assert {"AC", "Broca", "sPMv", "V1"} <= set(names)

    def near_white(img, name):
        paths = next(p for n, p, _ in s1.rois if n == name)
        pts = np.vstack([poly for path in paths for poly in path.to_polygons(closed_only=False)])
        xy = fig.axes[0].transData.transform(pts)
        rows = np.clip(np.round(height - xy[:, 1]).astype(int), 2, height - 3)
        cols = np.clip(np.round(xy[:, 0]).astype(int), 2, img.shape[1] - 3)
        hits = [white(img[r - 2:r + 3, c - 2:c + 3]).any() & dark[r, c] for r, c in zip(rows, cols)]
        on_cortex = [dark[r, c] for r, c in zip(rows, cols)]
        return np.sum(hits) / max(np.sum(on_cortex), 1)

    assert near_white(outlined, "AC") > 0.9 and near_white(outlined, "V1") > 0.9
    assert near_white(only_ac, "AC") > 0.9 and near_white(only_ac, "V1") < 0.2
    assert near_white(plain, "AC") == 0


def test_flatmap_png_warm_render_has_the_figure_size(s1):
    vals = np.random.default_rng(2).standard_normal(N_S1_THIN).astype(np.float32)
    flatmap_png(vals, S1, title="warm-up")  # speed: bench/app_render.py
    png = flatmap_png(vals, S1, title="random", colorbar_label="r", threshold=0.5)
    assert Image.open(io.BytesIO(png)).size[0] == int(FIG_WIDTH_IN * 150)


def test_concurrent_renders_while_filestore_swaps(s1, tmp_path):
    """Streamlit renders from several threads; a swap elsewhere must not leak into them."""
    from concurrent.futures import ThreadPoolExecutor

    vals = np.random.default_rng(7).standard_normal(N_S1_THIN).astype(np.float32)
    (tmp_path / "XX").mkdir()
    before = get_cortex().db.filestore

    def swapper():
        for _ in range(20):
            with pycortex_filestore(tmp_path) as db:
                assert list(db.subjects) == ["XX"]

    with ThreadPoolExecutor(4) as pool:
        swaps = pool.submit(swapper)
        pngs = list(pool.map(lambda _: flatmap_png(vals, S1, dpi=60), range(3)))
        swaps.result()
    assert len(set(pngs)) == 1 and get_cortex().db.filestore == before


def test_bad_figure_arguments(s1):
    with pytest.raises(ConfigError, match="unknown colormap 'nope'"):
        flatmap_figure(np.zeros(N_S1_THIN), S1, cmap="nope")
    with pytest.raises(ConfigError, match="dpi=0"):
        flatmap_png(np.zeros(N_S1_THIN), S1, dpi=0)


@pytest.mark.slow
def test_cold_cache_in_second_filestore_matches_default(s1, tmp_path):
    """A copy of S1 in another filestore (no cache): cold build, same image, db restored."""
    cortex = get_cortex()
    src = Path(cortex.database.default_filestore) / "S1"
    shutil.copytree(src, tmp_path / "S1", ignore=shutil.ignore_patterns("cache"))
    other = SurfaceMapping("S1", "fullhead", "thin", tmp_path)
    before = cortex.db.filestore
    steps = []
    geom = prepare_flatmap(other, progress=lambda f, m: steps.append(f))
    assert steps[0] == 0.0 and steps[-1] == 1.0
    assert (tmp_path / "S1" / "cache" / "flatpixel_fullhead_1024_nearest_l32.npz").exists()
    assert cortex.db.filestore == before
    assert geom is not s1 and geom.shape == s1.shape
    vals = np.random.default_rng(3).standard_normal(N_S1_THIN).astype(np.float32)
    np.testing.assert_array_equal(flatmap_image(vals, other), flatmap_image(vals, S1))
    assert [r[0] for r in geom.rois] == [r[0] for r in s1.rois]


# -- WebGL ---------------------------------------------------------------------------------------
def test_webgl_rejects_bad_input(tmp_path):
    assert {"inferno", "RdBu_r"} <= set(webgl_colormaps())
    with pytest.raises(ConfigError, match="not available to the WebGL viewer"):
        export_webgl(np.zeros(N_S1_THIN), S1, tmp_path / "v", cmap="not_a_cmap")
    with pytest.raises(ConfigError, match="37226 voxels"):
        export_webgl(np.zeros(5), S1, tmp_path / "v")
    assert not (tmp_path / "v").exists()


@pytest.mark.slow
def test_webgl_export_writes_viewer(tmp_path):
    vals = np.random.default_rng(4).standard_normal(N_S1_THIN).astype(np.float32)
    out = tmp_path / "viewer"
    steps = []
    assert export_webgl(vals, S1, out, title="Random map", name="rand",
                        progress=lambda f, m: steps.append(f)) == out
    html = (out / "index.html").read_text()
    assert "Random map" in html and "rand" in html
    assert list((out / "data").glob("*.png")) and list(out.glob("*.ctm")) and list(out.glob("*.json"))
    assert steps[-1] == 1.0
    (out / "stale.txt").write_text("old")
    export_webgl(vals, S1, out, threshold=1.0)
    assert not (out / "stale.txt").exists() and (out / "index.html").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["viewer"]  # no temp folders left


@pytest.mark.slow
@pytest.mark.browser
def test_webgl_viewer_renders_offline_in_chromium(tmp_path):
    """Serve the export over HTTP; headless chromium draws the coloured brain, fetching nothing else."""
    import functools
    import http.server
    import threading

    from playwright.sync_api import sync_playwright

    vals = np.random.default_rng(6).standard_normal(N_S1_THIN).astype(np.float32)
    out = export_webgl(vals, S1, tmp_path / "viewer", title="Viewer test")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(out)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--use-angle=swiftshader", "--enable-unsafe-swiftshader"])
            page = browser.new_page(viewport={"width": 1000, "height": 700})
            urls = []
            page.on("request", lambda req: urls.append(req.url))
            page.goto(f"{origin}/index.html")
            page.wait_for_load_state("networkidle")
            page.wait_for_timeout(3000)
            shot = np.asarray(Image.open(io.BytesIO(page.locator("canvas").first.screenshot())).convert("RGB"))
            title = page.title()
            browser.close()
    finally:
        server.shutdown()
    assert title == "Viewer test"
    assert [u for u in urls if not u.startswith((origin, "blob:", "data:"))] == []
    red = (shot[..., 0] > 150) & (shot[..., 2] < 100)
    blue = (shot[..., 2] > 150) & (shot[..., 0] < 100)
    assert red.sum() > 500 and blue.sum() > 500


# -- charts --------------------------------------------------------------------------------------
def _only_dataset(spec: dict) -> list:
    (rows,) = spec["datasets"].values()
    return rows


def test_roi_bar_chart_grouped_with_error_bars():
    table = pd.DataFrame({"roi": ["AC", "Broca", "AC", "Broca"], "group": ["pre", "pre", "tuned", "tuned"],
                          "value": [0.1, 0.2, 0.3, 0.4], "lo": [0.05, 0.15, 0.25, 0.35],
                          "hi": [0.15, 0.25, 0.35, 0.45]})
    spec = charts.roi_bar_chart(table, metric_label="mean r").to_dict()
    bars, rules = spec["layer"]
    assert bars["mark"]["type"] == "bar" and rules["mark"]["type"] == "rule"
    enc = bars["encoding"]
    assert (enc["x"]["field"], enc["y"]["field"], enc["color"]["field"], enc["xOffset"]["field"]) == \
        ("roi", "value", "group", "group")
    assert enc["y"]["title"] == "mean r" and enc["x"]["sort"] == ["AC", "Broca"]
    assert (rules["encoding"]["y"]["field"], rules["encoding"]["y2"]["field"]) == ("lo", "hi")
    assert len(_only_dataset(spec)) == 4


def test_roi_bar_chart_plain_and_bad_tables():
    spec = charts.roi_bar_chart(pd.DataFrame({"roi": ["AC", "V1"], "value": [0.2, 0.1]})).to_dict()
    assert spec["mark"]["type"] == "bar" and "color" not in spec["encoding"]
    with pytest.raises(ConfigError, match="repeated"):
        charts.roi_bar_chart(pd.DataFrame({"roi": ["AC"] * 3, "value": [0.1, 0.2, 0.3]}))
    with pytest.raises(ConfigError, match=r"lacks column\(s\) \['value'\]"):
        charts.roi_bar_chart(pd.DataFrame({"roi": ["AC"], "r": [0.1]}))
    with pytest.raises(ConfigError, match="both 'lo' and 'hi'"):
        charts.roi_bar_chart(pd.DataFrame({"roi": ["AC"], "value": [0.1], "lo": [0.0]}))
    with pytest.raises(ConfigError, match="DataFrame"):
        charts.roi_bar_chart({"roi": ["AC"], "value": [0.1]})


def test_layer_curve_encodings():
    layers = np.tile(np.arange(4), 4)
    table = pd.DataFrame({"layer": layers, "roi": np.repeat(["AC", "AC", "Broca", "Broca"], 4),
                          "group": np.tile(np.repeat(["pre", "tuned"], 4), 2),
                          "value": np.linspace(0, 0.3, 16)})
    table["lo"], table["hi"] = table["value"] - 0.01, table["value"] + 0.01
    spec = charts.layer_curve(table).to_dict()
    band, line = spec["layer"]
    assert band["mark"]["type"] == "area" and line["mark"] == {"type": "line", "point": True}
    enc = line["encoding"]
    assert (enc["x"]["field"], enc["y"]["field"], enc["color"]["field"], enc["strokeDash"]["field"]) == \
        ("layer", "value", "roi", "group")
    assert len(_only_dataset(spec)) == 16
    simple = charts.layer_curve(table[table.group == "pre"].drop(columns=["group", "lo", "hi"])).to_dict()
    assert simple["mark"]["type"] == "line" and "strokeDash" not in simple["encoding"]
    with pytest.raises(ConfigError, match="repeated"):
        charts.layer_curve(table.drop(columns="group"))


def test_histogram_is_binned():
    vals = np.random.default_rng(5).standard_normal(N_S1_THIN)
    vals[:100] = np.nan
    spec = charts.histogram(vals, 40, label="r").to_dict()
    rows = _only_dataset(spec)
    assert len(rows) == 40 and sum(r["count"] for r in rows) == N_S1_THIN - 100
    enc = spec["encoding"]
    assert (enc["x"]["field"], enc["x"]["bin"], enc["x2"]["field"], enc["y"]["field"]) == \
        ("start", "binned", "end", "count")
    table = charts.histogram_table(np.arange(1000), bins=10)
    assert table["count"].tolist() == [100] * 10
    assert table["start"].iloc[0] == 0 and table["end"].iloc[-1] == 999
    assert charts.histogram_table([np.nan], bins=3)["count"].sum() == 0
    with pytest.raises(ConfigError, match="bins=0"):
        charts.histogram(vals, 0)
