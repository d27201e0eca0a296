"""Altair chart builders for summaries (ROI bars, layer curves, histograms).

Charts carry summarised data only — one row per bar, point or bin — never per-voxel rows, so
they stay small in the browser. Inputs are pandas DataFrames with the columns documented per
function; a table with repeated keys (raw rows instead of a summary) is refused.
"""

from __future__ import annotations

from typing import Optional, Sequence

import altair as alt
import numpy as np
import pandas as pd

from core.errors import ConfigError

DEFAULT_BINS = 50  #: histogram bins when none are given


def _check_table(table: pd.DataFrame, required: Sequence[str], key: Sequence[str], what: str) -> pd.DataFrame:
    if not isinstance(table, pd.DataFrame):
        raise ConfigError(f"{what} needs a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise ConfigError(f"{what} table lacks column(s) {missing}; it has {list(table.columns)}")
    has_lo, has_hi = "lo" in table.columns, "hi" in table.columns
    if has_lo != has_hi:
        raise ConfigError(f"{what} error bars need both 'lo' and 'hi' columns, got only one")
    key = [k for k in key if k in table.columns]  # optional key columns count when present
    if table.duplicated(subset=key).any():
        raise ConfigError(f"{what} table has repeated {key} rows; pass one summarised row "
                          "per key (e.g. a groupby mean), not per-voxel rows")
    return table.reset_index(drop=True)


def _base(data: pd.DataFrame, title: Optional[str]) -> alt.Chart:
    return alt.Chart(data, title=title) if title else alt.Chart(data)


def roi_bar_chart(table: pd.DataFrame, *, metric_label: str = "mean cc_norm",
                  title: Optional[str] = None) -> alt.Chart:
    """Bars of a metric per ROI, optionally grouped side by side (models, feature spaces).

    Parameters
    ----------
    table : DataFrame, one row per (roi[, group]) with columns
        ``roi`` (str), ``value`` (float, the ROI mean); optional ``group`` (str: model or feature
        space; bars are coloured and offset by it), ``lo`` and ``hi`` (float, error-bar ends,
        e.g. mean ± SEM or a bootstrap CI), ``n_voxels`` (int, shown in the tooltip).
    metric_label : y-axis title. title : chart title.

    Returns
    -------
    alt.Chart (layered with error bars when ``lo``/``hi`` are given).
    """
    data = _check_table(table, ["roi", "value"], ["roi", "group"], "roi_bar_chart")
    grouped = "group" in data.columns
    roi_order = list(dict.fromkeys(data["roi"]))
    x = alt.X("roi:N", sort=roi_order, title="ROI")
    tooltip = [alt.Tooltip("roi:N"), alt.Tooltip("value:Q", format=".3f", title=metric_label)]
    tooltip += [alt.Tooltip(c) for c in ("group", "n_voxels", "lo", "hi") if c in data.columns]
    base = _base(data, title)
    enc = dict(x=x, y=alt.Y("value:Q", title=metric_label), tooltip=tooltip)
    if grouped:
        enc.update(color=alt.Color("group:N", title=None), xOffset=alt.XOffset("group:N"))
    chart = base.mark_bar().encode(**enc)
    if "lo" in data.columns:
        err = dict(x=x, y=alt.Y("lo:Q", title=metric_label), y2="hi:Q")
        if grouped:
            err["xOffset"] = alt.XOffset("group:N")
        chart = alt.layer(chart, base.mark_rule(color="black").encode(**err))
    return chart


def layer_curve(table: pd.DataFrame, *, metric_label: str = "mean cc_norm",
                title: Optional[str] = None) -> alt.Chart:
    """Metric across model layers, one line per ROI (and dash style per group).

    Parameters
    ----------
    table : DataFrame, one row per (layer, roi[, group]) with columns
        ``layer`` (int, layer index), ``roi`` (str), ``value`` (float); optional ``group``
        (str: e.g. pretrained / tuned; drawn as dash styles), ``lo``/``hi`` (float: a shaded
        band, e.g. ± SEM).
    metric_label : y-axis title. title : chart title.

    Returns
    -------
    alt.Chart (line with points; layered with a band when ``lo``/``hi`` are given).
    """
    data = _check_table(table, ["layer", "roi", "value"], ["layer", "roi", "group"], "layer_curve")
    grouped = "group" in data.columns
    key = ["layer", "roi", "group"] if grouped else ["layer", "roi"]
    base = _base(data, title)
    x = alt.X("layer:Q", title="layer", axis=alt.Axis(tickMinStep=1, format="d"))
    color = alt.Color("roi:N", title="ROI")
    tooltip = [alt.Tooltip(c) for c in key] + [alt.Tooltip("value:Q", format=".3f", title=metric_label)]
    enc = dict(x=x, y=alt.Y("value:Q", title=metric_label), color=color, tooltip=tooltip)
    if grouped:
        enc["strokeDash"] = alt.StrokeDash("group:N", title=None)
    chart = base.mark_line(point=True).encode(**enc)
    if "lo" in data.columns:
        band = dict(x=x, y=alt.Y("lo:Q", title=metric_label), y2="hi:Q", color=color)
        if grouped:
            band["detail"] = "group:N"
        chart = alt.layer(base.mark_area(opacity=0.2).encode(**band), chart)
    return chart


def histogram_table(values, bins: int = DEFAULT_BINS, value_range: Optional[tuple] = None) -> pd.DataFrame:
    """Bin ``values`` (any shape, NaN ignored) with numpy: columns ``start``, ``end``, ``count``.

    ``bins`` equal-width bins over ``value_range`` (default: finite min..max).
    """
    if int(bins) < 1:
        raise ConfigError(f"histogram bins={bins}; pass a positive number of bins")
    vals = np.asarray(values, dtype=np.float64).ravel()
    vals = vals[np.isfinite(vals)]
    if vals.size == 0 and value_range is None:
        value_range = (0.0, 1.0)
    counts, edges = np.histogram(vals, bins=int(bins), range=value_range)
    return pd.DataFrame({"start": edges[:-1], "end": edges[1:], "count": counts.astype(np.int64)})


def histogram(values, bins: int = DEFAULT_BINS, *, value_range: Optional[tuple] = None,
              label: str = "value", title: Optional[str] = None) -> alt.Chart:
    """Histogram of ``values`` binned in numpy (the chart holds ``bins`` rows, not the values).

    Parameters
    ----------
    values : array (e.g. ``(n_voxels,)`` per-voxel scores); NaN ignored.
    bins : number of equal-width bins. value_range : (lo, hi), default finite min..max.
    label : x-axis title. title : chart title.
    """
    data = histogram_table(values, bins, value_range)
    return _base(data, title).mark_bar(binSpacing=0).encode(
        x=alt.X("start:Q", title=label, bin="binned"),
        x2="end:Q",
        y=alt.Y("count:Q", title="voxels"),
        tooltip=[alt.Tooltip("start:Q", format=".3f"), alt.Tooltip("end:Q", format=".3f"),
                 alt.Tooltip("count:Q")],
    )


def words_per_tr_chart(timeline: pd.DataFrame) -> alt.Chart:
    """Bars of words per TR over audio time; TRs dropped by the ``[10:-5]`` trim in grey.

    ``timeline``: ``core.studio.words_per_tr`` output (one row per TR: ``tr, start_s, n_words,
    words, response_row``; ``response_row`` −1 = trimmed).
    """
    data = _check_table(timeline, ["tr", "start_s", "n_words", "words", "response_row"], ["tr"], "words per TR")
    data = data.assign(kept=data["response_row"] >= 0)
    return alt.Chart(data).mark_bar().encode(
        x=alt.X("start_s:Q", title="audio time (s)"), y=alt.Y("n_words:Q", title="words in TR"),
        color=alt.Color("kept:N", scale=alt.Scale(domain=[True, False], range=["#4c78a8", "#bbbbbb"]),
                        legend=None),
        tooltip=["tr", "start_s", "n_words", "words", "response_row"]).properties(height=180)


def response_chart(preview: pd.DataFrame) -> alt.Chart:
    """Lines of a few voxels' responses over audio time.

    ``preview``: ``core.studio.response_preview`` output (``time_s, voxel, response``; one row per
    TR and voxel — a handful of voxels, not a per-voxel table of the brain).
    """
    data = _check_table(preview, ["time_s", "voxel", "response"], ["time_s", "voxel"], "response preview")
    return alt.Chart(data).mark_line().encode(
        x=alt.X("time_s:Q", title="audio time (s)"), y=alt.Y("response:Q", title="response (z)"),
        color=alt.Color("voxel:N")).properties(height=220)


def _type_color(colors: dict) -> alt.Color:
    return alt.Color("type:N", scale=alt.Scale(domain=list(colors), range=list(colors.values())))


def planted_share_chart(counts: pd.DataFrame, colors: dict) -> alt.Chart:
    """Horizontal stacked bars: share of each ROI's voxels planted with each type (demo truth).

    ``counts``: ``core.studio.ground_truth_counts`` (``roi, type, n_voxels, share``); ``colors``:
    type → hex colour.
    """
    data = _check_table(counts, ["roi", "type", "n_voxels", "share"], ["roi", "type"], "planted share")
    return alt.Chart(data).mark_bar().encode(
        y=alt.Y("roi:N", title=None, sort="-x", axis=alt.Axis(labelOverlap=False)),
        x=alt.X("share:Q", title="share of the ROI's voxels", axis=alt.Axis(format="%")),
        color=_type_color(colors),
        tooltip=["roi", "type", "n_voxels", alt.Tooltip("share:Q", format=".0%")],
    ).properties(height=28 * data["roi"].nunique() + 20)


def type_score_chart(table: pd.DataFrame, colors: dict, metric_label: str = "mean cc_norm") -> alt.Chart:
    """Mean score per planted voxel type: a line per type across layers (several layers) or bars
    (one layer). ``table``: ``core.studio.scores_by_type`` (``layer, depth, type, value``)."""
    data = _check_table(table, ["layer", "type", "value"], ["layer", "type"], "score by type")
    tooltip = ["layer", "type", alt.Tooltip("value:Q", format=".3f")]
    if data["layer"].nunique() > 1:
        chart = alt.Chart(data).mark_line(point=True).encode(
            x=alt.X("layer:N", sort=list(dict.fromkeys(data["layer"])), title="layer"),
            y=alt.Y("value:Q", title=metric_label), color=_type_color(colors), tooltip=tooltip)
    else:
        chart = alt.Chart(data).mark_bar().encode(
            x=alt.X("type:N", sort=list(colors), title="planted voxel type"),
            y=alt.Y("value:Q", title=metric_label), color=_type_color(colors), tooltip=tooltip)
    return chart.properties(height=200)


def loss_chart(steps: pd.DataFrame, epochs: pd.DataFrame) -> alt.Chart:
    """Training loss per optimiser step (line) and per-epoch train / validation loss (points, right).

    ``steps``: ``step, loss, epoch``; ``epochs``: ``epoch, split, loss`` (``core.studio.runs.loss_curves``).
    """
    s = _check_table(steps, ["step", "loss"], ["step"], "loss per step")
    left = _base(s, "training loss per step").mark_line().encode(
        x=alt.X("step:Q", title="optimiser step"), y=alt.Y("loss:Q", title="loss", scale=alt.Scale(zero=False)),
        tooltip=["step", "epoch", alt.Tooltip("loss:Q", format=".4f")])
    if epochs is None or epochs.empty:
        return left
    e = _check_table(epochs, ["epoch", "split", "loss"], ["epoch", "split"], "loss per epoch")
    right = _base(e, "loss per epoch").mark_line(point=True).encode(
        x=alt.X("epoch:O", title="epoch"), y=alt.Y("loss:Q", title="loss", scale=alt.Scale(zero=False)),
        color=alt.Color("split:N", title=None), tooltip=["epoch", "split", alt.Tooltip("loss:Q", format=".4f")])
    return alt.hconcat(left, right)


def preference_chart(table: pd.DataFrame) -> alt.Chart:
    """Semantic-vs-phonetic preference per layer with its confidence interval (error bars), 0 line.

    ``table``: ``layer, depth, preference, ci_lo, ci_hi`` (``core.studio.analyses.preference_table``)."""
    data = _check_table(table, ["depth", "preference", "ci_lo", "ci_hi"], ["depth"], "preference per layer")
    base = alt.Chart(data).encode(x=alt.X("depth:Q", title="layer (depth)", axis=alt.Axis(tickMinStep=1)))
    line = base.mark_line(point=True).encode(
        y=alt.Y("preference:Q", title="preference (semantic r − phonetic r)"),
        tooltip=["layer", alt.Tooltip("preference:Q", format=".3f"), alt.Tooltip("ci_lo:Q", format=".3f"),
                 alt.Tooltip("ci_hi:Q", format=".3f")])
    bars = base.mark_errorbar().encode(y=alt.Y("ci_lo:Q"), y2="ci_hi:Q")
    zero = alt.Chart(pd.DataFrame({"y": [0.0]})).mark_rule(strokeDash=[4, 4], color="grey").encode(y="y:Q")
    return alt.layer(bars, line, zero)


def probe_chart(table: pd.DataFrame) -> alt.Chart:
    """Probe F1 per layer, with the shuffled-label control. ``table``: ``layer, depth, probe, f1``."""
    data = _check_table(table, ["depth", "probe", "f1"], ["depth", "probe"], "probe F1 per layer")
    return alt.Chart(data).mark_line(point=True).encode(
        x=alt.X("depth:Q", title="layer (depth)", axis=alt.Axis(tickMinStep=1)),
        y=alt.Y("f1:Q", title="F1 (micro)"), strokeDash=alt.StrokeDash("probe:N", title=None),
        tooltip=["layer", "probe", alt.Tooltip("f1:Q", format=".3f")])
