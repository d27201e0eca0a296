"""The demo brain's planted truth is recovered by the full CLI path (``python -m core encode``)."""

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from core.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo():
    from core.data import load_dataset

    return load_dataset("demo")


def _encode(tmp_path_factory, capsys, spec):
    out = tmp_path_factory.mktemp("enc")
    assert main(["-q", "encode", "--data", "demo", "--subject", "S1", "--features", spec,
                 "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    summary = json.loads((out / "summary.json").read_text())
    assert printed["features"] == summary["features"] == spec
    return out, summary


def _auc(r, voxel_type, positive, names):
    codes = {n: i for i, n in enumerate(names)}
    keep = np.isin(voxel_type, [codes[positive], codes["none"]]) & np.isfinite(r)
    return roc_auc_score(voxel_type[keep] == codes[positive], r[keep])


def test_describe_contract(demo, capsys):
    assert main(["-q", "datasets", "describe", "--data", "demo"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert set(d) >= {"root", "subjects", "stories", "test_story", "n_trs", "n_voxels", "tr", "n_repeats"}
    assert d["subjects"] == ["S1"] and d["tr"] == 2.0
    assert len(d["stories"]) >= 12 and d["n_repeats"]["S1"] >= 5
    assert d["n_voxels"]["S1"] == 37226


def test_powspec_finds_acoustic_voxels(demo, tmp_path_factory, capsys):
    out, summary = _encode(tmp_path_factory, capsys, "lowlevel:powspec")
    gt = demo.ground_truth()
    names = [str(n) for n in gt["type_names"]]
    assert names == ["none", "acoustic", "semantic", "mixed"]
    (layer,) = summary["layers"]
    r = np.load(out / f"r_{layer}.npy")
    assert r.shape == (37226,)
    assert _auc(r, gt["voxel_type"], "acoustic", names) > 0.9
    assert summary["layers"][layer]["roi"]["AC"]["mean_cc_norm"] > summary["layers"][layer]["roi"]["cortex"]["mean_cc_norm"]
    # the noise ceiling estimated from the repeats tracks the planted one
    cc_max = np.load(out / "cc_max.npy")
    ok = np.isfinite(cc_max) & (gt["voxel_type"] > 0)
    assert np.corrcoef(cc_max[ok], gt["true_cc_max"][ok])[0, 1] > 0.9


def test_minilm_finds_semantic_voxels(demo, tmp_path_factory, capsys):
    out, summary = _encode(tmp_path_factory, capsys, "semantic:minilm")
    gt = demo.ground_truth()
    names = [str(n) for n in gt["type_names"]]
    (layer,) = summary["layers"]
    r = np.load(out / f"r_{layer}.npy")
    assert _auc(r, gt["voxel_type"], "semantic", names) > 0.9
