"""The simulated demo brain: layout, determinism, timings, ground truth, ROIs (core.data.demo)."""

import json

import h5py
import numpy as np
import pytest
import soundfile as sf

from core.data import timing
from core.data.base import SurfaceMapping, VoxelReport, scan_voxels
from core.data.cortex_rois import roi_masks
from core.data.demo import DemoConfig, TYPE_NAMES, open_demo, simulate, synth, text
from core.data.demo.dataset import DemoDataset, demo_is_built, demo_root_for, needs_build
from core.errors import ConfigError, DataError
from core.settings import get_settings

N_VOX = 37226  # pycortex S1, transform "fullhead", mask "thin"
S1_THIN = SurfaceMapping("S1", "fullhead", "thin", None)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "tiny"
    return open_demo(DemoConfig.tiny(), root=root)


def _schoppe_cc_max(reps):
    """Schoppe et al. 2016 noise ceiling of the mean of ``reps`` ``(N, T, V)`` (reference)."""
    n = reps.shape[0]
    sp = (reps.sum(0).var(0, ddof=1) - reps.var(1, ddof=1).sum(0)) / (n * (n - 1))
    return np.sqrt(np.clip(sp, 0, None) / reps.mean(0).var(0, ddof=1))


# -- layout --------------------------------------------------------------------------------------

def test_layout_written_exactly(tiny):
    root, meta = tiny.root, tiny.meta
    stories = list(meta["stories"])
    assert len(stories) == 5 and sorted(stories) == tiny.stories
    respdict = json.loads((root / "derivative" / "respdict.json").read_text())
    assert respdict == {s: meta["stories"][s]["n_trs_run"] for s in stories}
    split = json.loads((root / "derivative" / "split.json").read_text())
    assert split == {"test": stories[-1], "val": stories[-2]}
    assert tiny.test_story == stories[-1] and tiny.val_story == stories[-2]
    for s in stories:
        info = sf.info(str(root / "stimuli" / f"{s}.wav"))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert info.frames / 16000 == pytest.approx(meta["stories"][s]["duration_s"], abs=1e-3)
        # R is derived from the duration exactly as ds003020's audio ≈ 2R - 20 s
        assert respdict[s] == timing.run_trs_for_duration(info.frames / 16000)
        assert (root / "derivative" / "TextGrids" / f"{s}.TextGrid").is_file()
        with h5py.File(root / "derivative" / "preprocessed_data" / "S1" / f"{s}.hf5") as f:
            assert f["data"].shape == (respdict[s] - 20, N_VOX)
            if s == tiny.test_story:
                reps = f["individual_repeats"][()]
                assert reps.shape == (3, respdict[s] - 20, N_VOX)
                np.testing.assert_allclose(f["data"][()], reps.mean(0), atol=1e-6)
            else:
                assert "individual_repeats" not in f
    assert set(np.load(root / "ground_truth.npz").files) >= {
        "voxel_type", "type_names", "w_acoustic", "w_semantic", "signal_std", "noise_std", "true_cc_max"}
    assert meta["code_version"] and meta["seed"] == 0 and meta["config"] == DemoConfig.tiny().to_dict()
    assert meta["build_seconds"] > 0 and meta["subject"] == "S1"


def test_dataset_api(tiny):
    d = tiny.describe()
    assert d["subjects"] == ["S1"] and d["n_voxels"] == {"S1": N_VOX} and d["n_repeats"] == {"S1": 3}
    assert d["tr"] == d["scanner_tr"] == tiny.scanner_tr == 2.0  # simulated at exactly 2.0 s
    assert tiny.skipped == {} and tiny.skipped_for("S1") == []
    rep = tiny.voxel_report("S1")  # the one dropping rule of core.data.base.scan_voxels
    ref = scan_voxels(N_VOX, [tiny.responses("S1", s) for s in tiny.stories], list(tiny.repeats("S1")))
    for name in VoxelReport.FIELDS:
        np.testing.assert_array_equal(getattr(rep, name), getattr(ref, name))
    assert rep.valid.sum() == N_VOX - len(rep.dropped) > 0.9 * N_VOX
    train = [s for s in tiny.stories if s not in (tiny.test_story, tiny.val_story)]
    assert tiny.split("S1") == {"train": train, "val": [tiny.val_story], "test": [tiny.test_story]}
    assert tiny.surface("S1") == S1_THIN
    rois = tiny.rois("S1")
    assert {"AC", "Broca", "sPMv", "V1", "cortex"} <= set(rois) and rois["cortex"].all()
    assert all(m.shape == (N_VOX,) and m.dtype == bool for m in rois.values())
    audio = tiny.audio(tiny.test_story)
    assert audio.dtype == np.float32 and 0.05 < np.abs(audio).max() <= 1.0
    with pytest.raises(DataError):
        tiny.surface("UTS01")
    assert tiny.spec == "demo"


def test_open_reuses_and_rebuild_rules(tiny, tmp_path):
    again = open_demo(DemoConfig.tiny(), root=tiny.root)
    assert again.meta["build_seconds"] == tiny.meta["build_seconds"]  # read back, not rebuilt
    assert not needs_build(tiny.root, DemoConfig.tiny())
    assert needs_build(tiny.root, DemoConfig.tiny(seed=1))  # another config → rebuild
    assert needs_build(tmp_path, DemoConfig.tiny())  # nothing there
    assert demo_root_for(DemoConfig()) == get_settings().demo_root
    assert demo_root_for(DemoConfig.tiny()) != get_settings().demo_root
    assert demo_root_for(DemoConfig.tiny()) != demo_root_for(DemoConfig.tiny(seed=1))
    assert not demo_is_built(DemoConfig.tiny(seed=99))
    other = DemoDataset(tiny.root)  # the fingerprint tells configs apart (file sizes cannot)
    other.meta = {**other.meta, "config": DemoConfig.tiny(seed=1).to_dict()}
    assert other.fingerprint() != tiny.fingerprint()
    with pytest.raises(DataError, match="demo.json"):  # a ds003020 folder that is no demo
        (tmp_path / "stimuli").mkdir()
        (tmp_path / "derivative").mkdir()
        DemoDataset(tmp_path)


def test_config_rejects_bad_values():
    for bad in (dict(n_stories=2), dict(n_repeats=1), dict(story_seconds=(10.0, 5.0)),
                dict(cc_max_range=(0.5, 1.0)), dict(plan=(("AC", "visual", 0.5),)),
                dict(plan=(("AC", "acoustic", 0.0),))):
        with pytest.raises(ConfigError):
            DemoConfig(**bad)


# -- determinism ---------------------------------------------------------------------------------

def test_same_seed_same_dataset(tiny, tmp_path):
    other = open_demo(DemoConfig.tiny(), root=tmp_path / "again")
    for s in tiny.stories:
        np.testing.assert_array_equal(tiny.audio(s), other.audio(s))
        np.testing.assert_array_equal(tiny.responses("S1", s), other.responses("S1", s))
    np.testing.assert_array_equal(tiny.repeats("S1"), other.repeats("S1"))
    assert tiny.fingerprint() == other.fingerprint()
    a, b = tiny.ground_truth(), other.ground_truth()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_other_seed_other_text():
    words = [w for _, ws in zip(range(20), text.story_sentences(np.random.default_rng(0))) for w in ws[1]]
    again = [w for _, ws in zip(range(20), text.story_sentences(np.random.default_rng(0))) for w in ws[1]]
    other = [w for _, ws in zip(range(20), text.story_sentences(np.random.default_rng(1))) for w in ws[1]]
    assert words == again and words != other


# -- speech and timings --------------------------------------------------------------------------

def test_events_inside_audio_ordered_arpabet(tiny):
    for s in tiny.stories:
        dur = len(tiny.audio(s)) / 16000
        words, phones = tiny.words(s), tiny.phones(s)
        assert len(words) == tiny.meta["stories"][s]["n_words"]
        assert len(phones) == tiny.meta["stories"][s]["n_phones"]
        for ev in (words, phones):
            assert np.all(ev.onsets >= 0) and np.all(ev.offsets <= dur + 1e-6)
            assert np.all(ev.offsets > ev.onsets)
            assert np.all(ev.onsets[1:] >= ev.offsets[:-1] - 1e-6)  # ordered, no overlap
        assert set(phones.labels) <= synth.ARPABET
        assert all(w == w.lower() and w.isalpha() for w in words.labels)
        assert set(words.labels) <= set(text.vocabulary())
        # every phone lies inside a word
        k = np.searchsorted(words.onsets, phones.mids, side="right") - 1
        assert np.all(k >= 0) and np.all(phones.mids < words.offsets[k])
    assert tiny.meta["dropped_phonemes"] == {}


def test_word_times_match_audible_speech():
    words = "the old fisherman sailed the boat near the stormy island".split()
    u = synth.speak_sentence(words)
    assert [w for _, _, w in u.words] == words
    x = u.audio.astype(np.float64) / 32768
    rate = synth.ESPEAK_RATE

    def rms(a, b):
        return np.sqrt(np.mean(x[int(a * rate):int(b * rate)] ** 2))

    speech = rms(u.words[0][0], u.words[-1][1])
    tail = rms(u.words[-1][1] + 0.05, u.duration)  # the sentence-final pause
    assert u.duration - u.words[-1][1] > 0.1 and tail < 0.05 * speech
    # each word's interval carries sound
    assert min(rms(a, b) for a, b, _ in u.words) > 0.1 * speech


def test_arpabet_table():
    for name, arpa in synth.ESPEAK_TO_ARPABET.items():
        assert set(arpa.split()) <= synth.ARPABET, name
    assert synth.to_arpabet("'aI") == ["AY"] and synth.to_arpabet(",A@") == ["AA", "R"]
    assert synth.to_arpabet("_:") == [] and synth.to_arpabet(";") == []
    with pytest.raises(KeyError):
        synth.to_arpabet("Q@@")


def test_merged_word_pair_is_refused():
    with pytest.raises(DataError, match="word events"):  # espeak speaks "in the" as one word
        synth.speak_sentence("she slept in the barn".split())


def test_templates_avoid_merged_pairs():
    for tpl in text.TEMPLATES:
        toks = tpl.split()
        for a, b in zip(toks, toks[1:]):
            assert (a, b) not in {("in", "the"), ("with", "the"), ("on", "the"), ("of", "the"),
                                  ("there", "were")}, tpl


# -- simulation pieces ---------------------------------------------------------------------------

def test_spm_hrf_shape():
    dt = 0.1
    h = simulate.spm_hrf(dt)
    assert h.sum() == pytest.approx(1.0)
    assert 4.5 <= np.argmax(h) * dt <= 5.5  # peak near 5 s
    assert 13.0 <= np.argmin(h) * dt <= 17.0 and h.min() < 0  # undershoot near 15 s


def test_context_means_and_centring():
    rng = np.random.default_rng(0)
    v = rng.standard_normal((30, 3))
    ref = np.stack([v[max(0, j - 7):j + 1].mean(0) for j in range(30)])
    np.testing.assert_allclose(simulate.context_means(v, 8), ref, atol=1e-12)
    grids = [simulate.StoryGrid(40, 38.3, 0.1), simulate.StoryGrid(45, 51.0, 0.1)]
    xs = simulate.centre_within_audio(grids, [rng.standard_normal((g.n, 2)) + 5 for g in grids])
    for g, x in zip(grids, xs):
        np.testing.assert_allclose(x[g.in_audio].mean(0), 0, atol=1e-12)
        assert np.all(x[~g.in_audio] == 0)
    pooled = np.vstack([x[g.in_audio] for g, x in zip(grids, xs)])
    np.testing.assert_allclose(pooled.std(0), 1.0)


def test_grid_matches_tr_convention():
    g = simulate.StoryGrid(50, 79.0, 0.1)
    np.testing.assert_allclose(g.t[g.stamp_idx], timing.tr_stamps(50), atol=1e-9)
    # a constant driver through the unit-sum HRF reads back as that constant once settled
    x = np.full((g.n, 1), 2.0)
    rows = g.response_rows(x, simulate.spm_hrf(0.1))
    assert rows.shape == (50 - 20, 1)
    np.testing.assert_allclose(rows[5:], 2.0, rtol=1e-3)
    # TR k is acquired over [2k - 10, 2k - 8) s: the TR mean of the time axis is its midpoint
    tm = g.tr_means(g.t[:, None])[:, 0]
    np.testing.assert_allclose(tm, timing.response_stamps(50) - 0.05, atol=1e-9)


def test_plant_rejects_unknown_roi():
    zyx = np.array([[0, 0, 0], [0, 0, 1]])
    with pytest.raises(DataError, match="Wernicke"):
        simulate.plant({"AC": np.array([True, False])}, (("Wernicke", "semantic", 0.5),), zyx,
                       (1, 1, 2), 1.0, TYPE_NAMES, np.random.default_rng(0))


def test_cc_max_closed_form_is_schoppe_limit():
    rng = np.random.default_rng(0)
    n_rep, t, v = 5, 20000, 100
    var_s, var_n = rng.uniform(0.5, 2.0, v), rng.uniform(0.5, 4.0, v)
    s = rng.standard_normal((t, v)) * np.sqrt(var_s)
    reps = s[None] + rng.standard_normal((n_rep, t, v)) * np.sqrt(var_n)
    closed = simulate.true_cc_max(s.var(0, ddof=1), var_n, n_rep)
    est = _schoppe_cc_max(reps)
    assert closed.min() < 0.7 and closed.max() > 0.9  # a real range of ceilings
    np.testing.assert_allclose(est, closed, atol=0.02)
    assert abs(np.mean(est - closed)) < 0.003  # no bias
    # and it is the correlation of the mean of the repeats with the signal
    r = [np.corrcoef(reps.mean(0)[:, i], s[:, i])[0, 1] for i in range(v)]
    np.testing.assert_allclose(r, closed, atol=0.025)


# -- ground truth --------------------------------------------------------------------------------

def test_ground_truth_contract(tiny):
    gt = tiny.ground_truth()
    assert [str(x) for x in gt["type_names"]] == ["none", "acoustic", "semantic", "mixed"]
    vt = gt["voxel_type"]
    assert vt.shape == (N_VOX,) and set(np.unique(vt)) == {0, 1, 2, 3}
    assert gt["w_acoustic"].shape == (4, N_VOX) and gt["w_semantic"].shape == (16, N_VOX)
    wa, ws = np.abs(gt["w_acoustic"]).sum(0), np.abs(gt["w_semantic"]).sum(0)
    assert np.all(wa[vt == 0] == 0) and np.all(ws[vt == 0] == 0)
    assert np.all(wa[vt == 1] > 0) and np.all(ws[vt == 1] == 0)
    assert np.all(wa[vt == 2] == 0) and np.all(ws[vt == 2] > 0)
    assert np.all(wa[vt == 3] > 0) and np.all(ws[vt == 3] > 0)
    cc = gt["true_cc_max"]
    assert np.all(cc[vt == 0] == 0)
    lo, hi = DemoConfig.tiny().cc_max_range
    assert lo <= cc[vt > 0].min() and cc[vt > 0].max() <= hi and np.ptp(cc[vt > 0]) > 0.5 * (hi - lo)
    np.testing.assert_allclose(cc, simulate.true_cc_max(gt["signal_std_test"] ** 2, gt["noise_std"] ** 2,
                                                        int(gt["n_repeats"])))
    assert {k: int((vt == i).sum()) for i, k in enumerate(TYPE_NAMES)} == tiny.meta["n_planted"]


def test_planted_types_sit_in_their_rois(tiny):
    gt, rois = tiny.ground_truth(), tiny.rois("S1")
    vt = gt["voxel_type"]
    plan = DemoConfig.tiny().plan
    for code, kind in enumerate(TYPE_NAMES[1:], 1):
        allowed = np.any([rois[r] for r, k, _ in plan if k == kind], axis=0)
        assert np.all(allowed[vt == code]), kind
    # the first rule of each ROI plants its exact fraction
    assert (vt[rois["AC"]] == 1).sum() == round(0.5 * rois["AC"].sum())
    assert not np.any(vt[rois["V1"] & ~np.any([rois[r] for r, _, _ in plan], axis=0)])


def test_responses_are_signal_plus_noise(tiny):
    gt = tiny.ground_truth()
    vt = gt["voxel_type"]
    for s in tiny.stories:
        d = tiny.drivers(s)
        signal = d["acoustic"] @ gt["w_acoustic"] + d["semantic"] @ gt["w_semantic"]
        if s == tiny.test_story:
            resid = tiny.repeats("S1") - signal[None]
            # the planted signal variance over the test story is the one in the closed form
            np.testing.assert_allclose(signal[:, vt > 0].std(0, ddof=1), gt["signal_std_test"][vt > 0],
                                       rtol=1e-4)
        else:
            resid = (tiny.responses("S1", s) - signal)[None]
        z = resid / gt["noise_std"]  # standard normal if the noise is as stated
        assert abs(z.mean()) < 0.01 and z.std() == pytest.approx(1.0, abs=0.01)
    # noise is independent between repeats
    d = tiny.drivers(tiny.test_story)
    reps = tiny.repeats("S1") - (d["acoustic"] @ gt["w_acoustic"] + d["semantic"] @ gt["w_semantic"])[None]
    assert abs(np.corrcoef(reps[0].ravel(), reps[1].ravel())[0, 1]) < 0.01


def test_driver_correlation_stored(tiny):
    stored = tiny.meta["driver_correlation"]["hrf"]
    xa = np.vstack([tiny.drivers(s)["acoustic"] for s in tiny.meta["stories"]])
    xs = np.vstack([tiny.drivers(s)["semantic"] for s in tiny.meta["stories"]])
    r = np.corrcoef(np.hstack([xs, xa]), rowvar=False)[:16, 16:]
    assert stored["max_abs"] == pytest.approx(np.abs(r).max(), abs=1e-4)
    assert stored["mean_abs"] == pytest.approx(np.abs(r).mean(), abs=1e-4)
    assert 0 < stored["mean_abs"] < stored["max_abs"] < 1


# -- ROI masks -----------------------------------------------------------------------------------

def test_roi_masks_api():
    masks = roi_masks(S1_THIN, names=["AC", "Broca"])
    assert set(masks) == {"AC", "Broca", "cortex"}
    assert masks["AC"].sum() > 500 and masks["Broca"].sum() > 50 and masks["cortex"].all()
    with pytest.raises(DataError, match="Wernicke"):
        roi_masks(S1_THIN, names=["Wernicke"])


def _linked_filestore(root, with_overlay=True):
    """A pycortex filestore at ``root`` whose S1 links to the default database's files."""
    from core.cortex_env import get_cortex

    src = get_cortex().database.default_filestore
    subj = root / "S1"
    subj.mkdir(parents=True)
    for item in ("anatomicals", "surfaces", "surface-info", "transforms", "overlays.svg"):
        if item != "overlays.svg" or with_overlay:
            (subj / item).symlink_to(f"{src}/S1/{item}")
    return root


def test_roi_masks_from_another_filestore(tmp_path):
    mapping = SurfaceMapping("S1", "fullhead", "thin", _linked_filestore(tmp_path / "db"))
    theirs = roi_masks(mapping, names=["Broca"])
    np.testing.assert_array_equal(theirs["Broca"], roi_masks(S1_THIN, names=["Broca"])["Broca"])
    bare = SurfaceMapping("S1", "fullhead", "thin", _linked_filestore(tmp_path / "bare", with_overlay=False))
    with pytest.raises(DataError, match="overlays.svg"):
        roi_masks(bare)


@pytest.mark.slow
def test_roi_masks_match_pycortex_reference():
    """Same voxels as pycortex's own get_roi_masks on the default database (allow_overlap)."""
    import contextlib
    import io

    from core.cortex_env import get_cortex

    cortex = get_cortex()
    mine = roi_masks(S1_THIN)
    with contextlib.redirect_stdout(io.StringIO()):
        ref = cortex.utils.get_roi_masks("S1", "fullhead", roi_list=["AC", "Broca", "sPMv", "IPS"],
                                         gm_sampler="thin", allow_overlap=True)
    thin = cortex.db.get_mask("S1", "fullhead", "thin")
    for name, vol in ref.items():
        np.testing.assert_array_equal(vol[thin], mine[name])


# -- the default demo ----------------------------------------------------------------------------

@pytest.mark.slow
def test_default_demo_builds(tmp_path):
    ds = open_demo(DemoConfig(), root=tmp_path / "demo")  # build time: meta["build_seconds"] (README)
    meta = ds.meta
    assert len(ds.stories) >= 12 and ds.n_repeats("S1") >= 5
    durations = [v["duration_s"] for s, v in meta["stories"].items() if s != ds.test_story]
    assert min(durations) >= 120 and max(durations) <= 180
    corr = meta["driver_correlation"]["hrf"]
    assert corr["max_abs"] < 0.3
    assert all(meta["n_planted"][k] > 100 for k in TYPE_NAMES[1:])
    # the Schoppe estimate from the repeats tracks the planted ceilings
    gt = ds.ground_truth()
    planted = gt["voxel_type"] > 0
    est = _schoppe_cc_max(ds.repeats("S1")[:, :, planted])
    assert np.corrcoef(est, gt["true_cc_max"][planted])[0, 1] > 0.85
