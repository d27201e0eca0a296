"""The charts of the tuning, compare and analyses pages: data they carry and refusal of raw rows."""

import pandas as pd
import pytest

from core.errors import ConfigError
from core.viz.charts import loss_chart, preference_chart, probe_chart


def _datasets(chart) -> list:
    return [rows for rows in chart.to_dict()["datasets"].values()]


def test_loss_chart_carries_steps_and_epochs():
    steps = pd.DataFrame({"step": [1, 2, 3], "loss": [1.0, 0.9, 0.8], "epoch": [0, 0, 1]})
    epochs = pd.DataFrame({"epoch": [1, 1], "split": ["train", "validation"], "loss": [0.95, 1.0]})
    spec = loss_chart(steps, epochs).to_dict()
    assert len(spec["hconcat"]) == 2
    data = _datasets(loss_chart(steps, epochs))
    assert [r["loss"] for r in data[0]] == [1.0, 0.9, 0.8] and {r["split"] for r in data[1]} == {"train", "validation"}
    assert "hconcat" not in loss_chart(steps, epochs.iloc[:0]).to_dict()  # no epoch yet: one panel
    with pytest.raises(ConfigError):
        loss_chart(pd.concat([steps, steps]), epochs)  # repeated steps: raw rows, not a curve


def test_preference_and_probe_charts():
    pref = pd.DataFrame({"layer": ["l0", "l1"], "depth": [0, 1], "preference": [-0.1, 0.2],
                         "ci_lo": [-0.2, 0.1], "ci_hi": [0.0, 0.3]})
    layers = preference_chart(pref).to_dict()["layer"]
    assert [l["mark"]["type"] if isinstance(l["mark"], dict) else l["mark"] for l in layers] == ["errorbar", "line", "rule"]
    probe = pd.DataFrame({"layer": ["l0", "l0"], "depth": [0, 0], "probe": ["labels", "shuffled labels"],
                          "f1": [0.8, 0.1]})
    assert sorted(r["f1"] for r in _datasets(probe_chart(probe))[0]) == [0.1, 0.8]
    with pytest.raises(ConfigError):
        preference_chart(pref.drop(columns="ci_lo"))
