"""Voxelwise encoding: ridge with per-voxel bootstrap-CV alpha, noise ceiling, scores, ROI summaries.

``ridge``: :func:`bootstrap_ridge` (paper defaults), :func:`bootstrap_splits`, :func:`ridge_cv_scores`,
:func:`ridge_svd_weights`, :class:`BootstrapRidge`. ``ceiling``: :func:`noise_ceiling`,
:func:`cc_norm`. ``scores``: :func:`pearson_columns`, :func:`roi_summary`. ``params``:
:class:`EncodeParams` (the one source of defaults; ``project`` and ``released`` protocols). ``fit``:
:func:`fit_encoding` on arrays → ``result``: :class:`EncodingResult` (save/load in the ``encode``
file contract). The end-to-end ``encode`` over a Dataset is ``core.pipelines.encode``.
"""

from core.encoding.ceiling import cc_norm, noise_ceiling, signal_power
from core.encoding.ridge import (DEFAULT_ALPHAS, BootstrapRidge, RidgeFit, bootstrap_ridge,
                                 bootstrap_splits, ridge_cv_scores, ridge_svd_weights)
from core.encoding.scores import pearson_columns, roi_summary
from core.encoding.params import EncodeParams
from core.encoding.result import EncodingResult, LayerScores
from core.encoding.fit import fit_encoding, repeat_ceiling

__all__ = ["DEFAULT_ALPHAS", "BootstrapRidge", "RidgeFit", "bootstrap_ridge", "bootstrap_splits",
           "ridge_cv_scores", "ridge_svd_weights", "noise_ceiling", "cc_norm", "signal_power",
           "pearson_columns", "roi_summary", "EncodeParams", "EncodingResult",
           "LayerScores", "fit_encoding", "repeat_ceiling"]
