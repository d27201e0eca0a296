"""Analyses on encoding results and features: numerics on arrays and typed results, composed by
``core/pipelines`` (one module per command).

- ``compare`` — per-voxel Δ, region means, share improved, Wilcoxon signed-rank (the paper's test).
- ``lowlevel_impact`` — residualise features on low-level spaces (CV ridge), percent drop (Evaluation 2).
- ``partition`` — banded-ridge variance partitioning, semantic-vs-acoustic preference map.
- ``stats`` — block-permutation significance of test r, Benjamini–Hochberg FDR, Wilcoxon across subjects.
- ``preference`` — semantic-vs-phonetic preference per layer with bootstrap CIs (Evaluation 4).
- ``probes`` — linear probes on time-averaged layer states with a shuffled-label control (Evaluation 3).
"""

from core.analysis.compare import best_layer, compare_maps, compare_results, paired_stats

__all__ = ["best_layer", "compare_maps", "compare_results", "paired_stats"]
