"""The simulated demo group on fsaverage5 (core.data.demo_group).

Fast tests build the group from a small stand-in for the demo (a few stories with smooth random
drivers, written in the ds003020 layout) so they need no speech synthesis; the slow test opens the
real ``demo-group`` spec and recovers every participant's planted truth with ``python -m core
encode``.
"""

import json

import h5py
import numpy as np
import pytest

from core.data import fsaverage as fs
from core.data import layout
from core.data.base import SurfaceSpace
from core.data.demo import TYPE_NAMES
from core.data.demo_group import GroupConfig
from core.data.demo_group.build import build_group, columns
from core.data.demo_group.dataset import DemoGroupDataset, group_root_for, needs_build
from core.errors import ConfigError, DataError
from core.settings import get_settings


class FakeDemo:
    """What build_group reads from a built demo: stories in the ds003020 layout, their TR counts,
    split and true drivers ``(R - 20, 4)`` acoustic / ``(R - 20, 16)`` semantic (smooth noise)."""

    def __init__(self, root, runs=(40, 42, 44, 150), seed=0):
        rng = np.random.default_rng(seed)
        self.root = root
        self.stories = [f"story{i}" for i in range(len(runs))]
        self.test_story, self.val_story = self.stories[-1], self.stories[-2]
        self._runs = dict(zip(self.stories, runs))
        self._drivers = {}
        kernel = np.hanning(7) / np.hanning(7).sum()
        for s, r in self._runs.items():
            dur = 2.0 * r - 20.0
            layout.write_wav(layout.stimuli_dir(root) / f"{s}.wav", np.zeros(int(dur * 100)), 100)
            words = [(t, t + 0.4, "word") for t in np.arange(0.5, dur - 1.0, 1.0)]
            layout.write_textgrid(layout.textgrid_dir(root) / f"{s}.TextGrid", words, words, xmax=dur)
            x = rng.standard_normal((r - 20 + 6, 20))
            x = np.stack([np.convolve(x[:, j], kernel, mode="valid") for j in range(20)], axis=1)
            self._drivers[s] = {"acoustic": x[:, :4].astype(np.float32), "semantic": x[:, 4:].astype(np.float32)}
        self.meta = {"code_version": "fake-demo"}

    def n_trs_run(self, story):
        return self._runs[story]

    def drivers(self, story):
        return {k: v.copy() for k, v in self._drivers[story].items()}


CONFIG = GroupConfig(n_participants=3, repeats=(3, 1), vertex_step=2)


@pytest.fixture(scope="module")
def fake_demo(tmp_path_factory):
    return FakeDemo(tmp_path_factory.mktemp("fake-demo"))


@pytest.fixture(scope="module")
def group(tmp_path_factory, fake_demo):
    root = tmp_path_factory.mktemp("group") / "g"
    build_group(root, CONFIG, demo=fake_demo)
    return DemoGroupDataset(root)


def _schoppe_cc_max(reps):
    n = reps.shape[0]
    sp = (reps.sum(0).var(0, ddof=1) - reps.var(1, ddof=1).sum(0)) / (n * (n - 1))
    return np.sqrt(np.clip(sp, 0, None) / reps.mean(0).var(0, ddof=1))


def test_layout_subjects_and_repeats(group, fake_demo):
    d = group.describe()
    assert d["subjects"] == ["P01", "P02", "P03"] and d["test_story"] == "story3"
    assert d["n_repeats"] == {"P01": 3, "P02": 1, "P03": 3}
    n_vox = len(np.flatnonzero(fs.cortex_mask())[::2])
    assert d["n_voxels"] == {s: n_vox for s in d["subjects"]} and d["tr"] == 2.0
    assert d["n_trs"] == {s: r - 20 for s, r in fake_demo._runs.items()}
    for s in d["subjects"]:
        reps = group.repeats(s)
        assert reps.shape == (d["n_repeats"][s], 130, n_vox) and reps.dtype == np.float32
        np.testing.assert_allclose(group.responses(s, "story3"), reps.mean(0), atol=1e-6)
        assert group.voxel_report(s).dropped.size == 0
    # stimuli are the demo's files (linked, not re-synthesised)
    for s in fake_demo.stories:
        assert (group.root / "stimuli" / f"{s}.wav").read_bytes() == \
            (fake_demo.root / "stimuli" / f"{s}.wav").read_bytes()
    assert json.loads((group.root / "group.json").read_text())["n_repeats"] == d["n_repeats"]


def test_surface_space_and_rois(group):
    sp = group.surface_space("P02")
    assert isinstance(sp, SurfaceSpace) and sp.mesh == "fsaverage5" and sp.n_per_hemi == 10242
    np.testing.assert_array_equal(sp.vertices, columns(CONFIG))
    assert group.surface("P02") is None
    vals = np.arange(len(sp.vertices), dtype=float)
    mesh = sp.to_mesh(vals)
    assert np.isnan(mesh[~fs.cortex_mask()]).all() and np.array_equal(mesh[sp.vertices], vals)
    rois = group.rois("P01")
    assert set(rois) == {"AC", "Broca", "sPMv", "AG", "LTC", "cortex"} and rois["cortex"].all()
    std = fs.standard_rois()
    for k in std:
        np.testing.assert_array_equal(rois[k], std[k][sp.vertices])
    from core.data.roi_groups import group_masks

    g = group_masks(rois)
    assert g["auditory"]["members"] == ["AC"] and set(g["semantic"]["members"]) >= {"Broca", "sPMv"}


def test_ground_truth_types_and_jitter(group):
    assert group.ground_truth() is None  # participants differ: ask for one
    planted = {}
    for i, s in enumerate(group.subjects):
        gt = group.ground_truth(s)
        assert list(gt["type_names"]) == ["none", "acoustic", "semantic", "mixed"]
        vt = gt["voxel_type"]
        assert vt.shape == (group.n_voxels(s),) and set(np.unique(vt)) == {0, 1, 2, 3}
        ac = fs.standard_rois()["AC"]
        # acoustic vertices only around auditory cortex: within jitter + max radius of AC's centres
        for c, r, roi in zip(gt["disc_centres"], gt["disc_radii"], gt["disc_rois"]):
            hemi = fs.HEMIS[c // fs.N_PER_HEMI]
            std_v = dict((h, fs.nearest_vertex(x, h)) for h, x, _ in fs.STANDARD_ROI_CENTRES[roi])[hemi]
            assert fs.geodesic_distances(std_v, hemi)[c % fs.N_PER_HEMI] <= CONFIG.jitter_mm + 1e-9
            r0 = [rr for h, _, rr in fs.STANDARD_ROI_CENTRES[roi] if h == hemi][0]
            assert CONFIG.radius_scale[0] * r0 <= r <= CONFIG.radius_scale[1] * r0
        acoustic_v = gt["vertices"][vt == 1]
        assert len(acoustic_v) > 10
        near_ac = np.zeros(fs.N_VERTICES, bool)
        for c, r, roi in zip(gt["disc_centres"], gt["disc_radii"], gt["disc_rois"]):
            if roi == "AC":
                h = c // fs.N_PER_HEMI
                near_ac[h * fs.N_PER_HEMI:(h + 1) * fs.N_PER_HEMI] |= fs.geodesic_distances(
                    c % fs.N_PER_HEMI, fs.HEMIS[h]) <= r
        assert near_ac[acoustic_v].all() and ac[acoustic_v].mean() > 0.3
        assert int(gt["n_repeats"]) == CONFIG.n_repeats_of(i)
        # unit pooled variance of one presentation; ceilings in the configured range
        p = vt > 0
        np.testing.assert_allclose(gt["signal_std"][p] ** 2 + gt["noise_std"][p] ** 2, 1.0, rtol=1e-6)
        assert np.all((gt["true_cc_max_single"][p] > 0.4) & (gt["true_cc_max_single"][p] < 0.91))
        assert np.all(gt["true_cc_max"][p] >= gt["true_cc_max_single"][p] - 1e-12)
        assert not gt["w_acoustic"][:, vt == 0].any() and not gt["w_semantic"][:, vt == 1].any()
        planted[s] = p
    a, b = planted["P01"], planted["P02"]
    jaccard = (a & b).sum() / (a | b).sum()
    assert 0.3 < jaccard < 0.95  # shared locations, individual borders


def test_responses_follow_the_closed_form_ceilings(group, fake_demo):
    for s in ("P01", "P02"):
        gt = group.ground_truth(s)
        p = gt["voxel_type"] > 0
        d = fake_demo.drivers("story3")
        signal = d["acoustic"] @ gt["w_acoustic"][:, p] + d["semantic"] @ gt["w_semantic"][:, p]
        y = group.responses(s, "story3")[:, p]
        zs = (signal - signal.mean(0)) / signal.std(0)
        zy = (y - y.mean(0)) / y.std(0)
        emp = (zs * zy).mean(0)  # r(noiseless signal, test mean) → true cc_max of that mean
        assert abs(np.mean(emp - gt["true_cc_max"][p])) < 0.03
        assert np.corrcoef(emp, gt["true_cc_max"][p])[0, 1] > 0.6
    p1 = group.ground_truth("P01")["voxel_type"] > 0
    est = _schoppe_cc_max(group.repeats("P01")[:, :, p1].astype(np.float64))
    true = group.ground_truth("P01")["true_cc_max"][p1]
    assert abs(np.nanmean(est - true)) < 0.05
    # unplanted vertices are pure unit noise, independent between participants
    none = group.ground_truth("P01")["voxel_type"] == 0
    y1, y2 = group.responses("P02", "story0")[:, none], group.responses("P03", "story0")[:, none]
    assert abs(y1.std() - 1.0) < 0.05 and abs(np.corrcoef(y1.ravel(), y2.ravel())[0, 1]) < 0.02


def test_group_responses_for_isc(group):
    others = list(group.group_responses("P02"))
    assert len(others) == 2
    np.testing.assert_array_equal(others[0], group.responses("P01", "story3"))
    np.testing.assert_array_equal(others[1], group.responses("P03", "story3"))
    # shared weights: planted vertices of P01 correlate with the others' mean on the test story
    from core.encoding.ceiling import subject_isc

    r, k = subject_isc(group.responses("P01", "story3"), group.group_responses("P01"))
    vt = group.ground_truth("P01")["voxel_type"]
    assert (k == 2).all() and np.nanmean(r[vt > 0]) > 0.25 and abs(np.nanmean(r[vt == 0])) < 0.03


def test_two_builds_are_identical_and_seeds_differ(tmp_path, group, fake_demo):
    root = tmp_path / "again"
    build_group(root, CONFIG, demo=fake_demo)
    for s in group.subjects:
        for story in group.stories:
            with h5py.File(group.root / "derivative/preprocessed_data" / s / f"{story}.hf5") as a, \
                    h5py.File(root / "derivative/preprocessed_data" / s / f"{story}.hf5") as b:
                assert set(a) == set(b)
                for k in a:
                    np.testing.assert_array_equal(a[k][()], b[k][()])
        with np.load(group.root / "ground_truth" / f"{s}.npz") as a, np.load(root / "ground_truth" / f"{s}.npz") as b:
            assert a.files == b.files
            for k in a.files:
                np.testing.assert_array_equal(a[k], b[k])
    other = tmp_path / "seed1"
    build_group(other, CONFIG.with_(seed=1, n_participants=1), demo=fake_demo)
    g1 = DemoGroupDataset(other)
    assert not np.array_equal(g1.ground_truth("P01")["voxel_type"], group.ground_truth("P01")["voxel_type"])
    assert DemoGroupDataset(root).fingerprint() == group.fingerprint() != g1.fingerprint()


def test_config_roots_and_errors(tmp_path, monkeypatch):
    assert group_root_for(GroupConfig()) == get_settings().demo_group_root
    tiny = GroupConfig.tiny()
    assert group_root_for(tiny).name == f"demo-group-{tiny.key()}"
    assert GroupConfig.from_dict(json.loads(json.dumps(tiny.to_dict()))) == tiny
    assert needs_build(tmp_path, tiny)
    for bad in (dict(n_participants=0), dict(repeats=(2, 0)), dict(cc_range=(0.5, 1.2)),
                dict(plan=(("V1", "acoustic", 0.5),)), dict(plan=(("AC", "loud", 0.5),)),
                dict(vertex_step=0), dict(weight_similarity=1.5), dict(radius_scale=(0.0, 1.0))):
        with pytest.raises(ConfigError, match="invalid GroupConfig"):
            GroupConfig(**bad)
    with pytest.raises(DataError, match="group.json is missing"):
        DemoGroupDataset(tmp_path)


def test_spec_is_registered(monkeypatch, group):
    import core.data.demo_group as dg
    from core.data import VALID_SPECS, load_dataset

    assert "demo-group" in VALID_SPECS
    monkeypatch.setattr(dg, "open_group", lambda progress=None: group, raising=False)
    assert load_dataset("demo-group") is group
    with pytest.raises(DataError, match="unknown"):
        group.ground_truth("P09")


# -- the real spec, end to end ------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("subject", ["P01", "P02", "P03", "P04", "P05", "P06"])
def test_encoding_recovers_each_participants_planted_regions(subject, tmp_path, capsys):
    """Per participant: lowlevel:powspec separates acoustic + mixed from unplanted vertices, and
    semantic:minilm separates semantic + mixed from them (ROC AUC of per-vertex r > 0.9)."""
    from sklearn.metrics import roc_auc_score

    from core.cli import main
    from core.data import load_dataset

    ds = load_dataset("demo-group")
    gt = ds.ground_truth(subject)
    vt = gt["voxel_type"]
    aucs = {}
    for spec, positive in (("lowlevel:powspec", ("acoustic", "mixed")), ("semantic:minilm", ("semantic", "mixed"))):
        out = tmp_path / spec.replace(":", "_")
        assert main(["-q", "encode", "--data", "demo-group", "--subject", subject, "--features", spec,
                     "--out", str(out)]) == 0
        capsys.readouterr()
        layer = spec.split(":")[1]
        r = np.load(out / f"r_{layer}.npy")
        cc = np.nan_to_num(np.load(out / f"cc_norm_{layer}.npy"))  # NaN: ceiling undefined → 0
        pos = np.isin(vt, [TYPE_NAMES.index(t) for t in positive])
        keep = (pos | (vt == 0)) & np.isfinite(r)
        aucs[spec] = (roc_auc_score(pos[keep], r[keep]), roc_auc_score(pos[keep], cc[keep]))
    print(subject, int(gt["n_repeats"]), aucs)
    for spec, (auc_r, _) in aucs.items():
        assert auc_r > 0.9, (subject, spec, aucs)
