"""The app's facade over the engine: every call a page makes, with no streamlit in it.

Pages (``pages/``) only draw what these functions return. Each number they show comes from a
cached engine computation that a CLI command reproduces (:func:`cli_encode_command`,
:func:`cli_describe_command`): encodings are ``core.pipelines.encode.cached_encode`` folders, launched
as background jobs (``core.jobs``), never computed in the page's process.
"""

from core.studio.explore import (TYPE_COLORS, best_layer, ceiling_flatmap, ground_truth_counts,
                                 ground_truth_flatmap, noise_ceiling, response_preview,
                                 scores_by_type, story_table, top_voxels, transcript, voxel_counts,
                                 words_per_tr)
from core.studio.results import (DIFF_CMAP, METRICS, SCORE_CMAP, color_range, difference_png, export_viewer,
                                 flatmap_available, group_table, layer_names, layer_roi_table, layer_table, map_png, mesh_rois,
                                 result_badge, roi_chart_table, roi_table, score_flatmap, scores, summary, surface_view, top_rois,
                                 viewer_zip, voxel_table, webgl_available)
from core.studio.sources import (DEMO_GROUP_SPEC, DEMO_SPEC, PROTOCOLS, allowed_path, cached_result, cli_describe_command, cli_encode_command,
                                 data_spec, dataset_job, delay_seconds, demo_ready, encode_dir,
                                 encode_job, encode_layers, encode_note, find_checkpoints, group_ready,
                                 is_model_spec, launch_dataset_build, launch_encode, open_dataset,
                                 resolve, source_catalog)
