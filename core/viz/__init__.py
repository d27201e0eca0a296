"""Figure builders for the app and CLI: cortical flatmaps (PNG / matplotlib), a static WebGL
viewer, and altair charts of summaries. They return figures, bytes or folders; never streamlit."""

from core.viz.charts import histogram, histogram_table, layer_curve, roi_bar_chart
from core.viz.flatmap import (color_scale, flatmap_figure, flatmap_image, flatmap_png,
                              n_mapping_voxels, prepare_flatmap, pycortex_filestore)
from core.viz.webgl import export_webgl, webgl_colormaps

__all__ = [
    "color_scale", "export_webgl", "flatmap_figure", "flatmap_image", "flatmap_png", "histogram",
    "histogram_table", "layer_curve", "n_mapping_voxels", "prepare_flatmap", "pycortex_filestore",
    "roi_bar_chart", "webgl_colormaps",
]
