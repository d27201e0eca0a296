"""Analyses on encoding results and features (numerics on arrays and typed results; composed by
``core/pipelines``): ``compare`` (per-voxel Δ, region means, share improved, Wilcoxon)."""

from core.analysis.compare import best_layer, compare_maps, compare_results, paired_stats

__all__ = ["best_layer", "compare_maps", "compare_results", "paired_stats"]
