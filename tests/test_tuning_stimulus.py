"""The stimulus control (``tune --control stimulus``): the model's own self-supervised objective.

Checked on tiny random models against independent references: transformers' own
``Wav2Vec2ForPreTraining`` / ``WhisperForConditionalGeneration`` losses for the same inputs, masks
and negatives; a plain loop over word events for the Whisper labels; a plain loop of cosine logits
for HuBERT's masked prediction and transformers' (looping) Kaldi filter bank for the MFCC.
"""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
import torch

from core.errors import ConfigError
from core.tuning import stimulus_data as sd
from core.tuning.stimulus import StimulusModel, check_family
from tests.fakes import StoryGuard, events, make_dataset


@pytest.fixture(autouse=True)
def _fast_kmeans(monkeypatch):
    # HuBERT's k-means: fewer restarts / iterations on the tiny data (the settings are not under test)
    from sklearn.cluster import MiniBatchKMeans

    real = MiniBatchKMeans

    def quick(**kw):
        kw.update(n_init=1, max_iter=20, max_no_improvement=5)
        return real(**kw)

    monkeypatch.setattr("sklearn.cluster.MiniBatchKMeans", quick)


class _Guarded(StoryGuard):
    """Dataset wrapper: the test story and every response are off limits."""

    def responses(self, subject, story):
        raise AssertionError("the stimulus control read responses")


@pytest.fixture(scope="module")
def ds():
    d = make_dataset(n_stories=4, n_trs_run=24, n_voxels=4)  # train story0, story1; val story2; test story3
    w = d._stories["story0"].words  # no words in story0's first 16 s: its clips of rows 0–2 have none
    keep = [i for i in range(len(w)) if w.onsets[i] >= 16.0]
    d._stories["story0"].words = events([w.labels[i] for i in keep], w.onsets[keep], w.offsets[keep])
    return d


def _setup(ds, spec, delays=(0, 1, 2, 3, 4), **kw):
    guarded = _Guarded(ds)
    data = sd.stimulus_data(guarded, "S01", delays, 1.0)
    model = StimulusModel.from_spec(spec, device="cpu", seed=kw.pop("seed", 0), **kw)
    rep = model.prepare(data, guarded)
    assert ds.test_story not in guarded.read and guarded.read <= {"story0", "story1", "story2"}
    return data, model, rep


def _batch(split, idx):
    x, y = zip(*(split[j] for j in idx))
    return torch.stack(x), torch.stack(y)


# --------------------------------------------------------------------------- plumbing and refusals
def test_parse_and_refusals():
    from core.tuning.controls import CONTROL_FORMS, apply_control, parse_control

    assert parse_control("stimulus") == {"kind": "stimulus"} and "stimulus" in CONTROL_FORMS
    with pytest.raises(ConfigError, match="stimulus"):
        apply_control(None, "stimulus")
    with pytest.raises(ConfigError) as err:
        check_family("wavlm", "hf:microsoft/wavlm-base")
    msg = str(err.value)
    assert "\n" not in msg and "wavlm" in msg and "wav2vec2, whisper, hubert" in msg
    with pytest.raises(ConfigError, match="unknown control"):
        parse_control("stimulus-ish")


# --------------------------------------------------------------------------- Whisper
def test_whisper_labels_are_exactly_the_words_inside_each_clip(ds):
    data, model, rep = _setup(ds, "random:whisper-tiny")
    cfg = model.backbone.config
    first = max(cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id, cfg.decoder_start_token_id) + 1
    n_empty = 0
    for split in (data.train, data.val):
        for j in range(len(split)):
            s, row = split.index[j]
            st = split._stories[s]
            k = int(row) + 10  # response row → TR; the clip = snippets of TRs k-4 … k (contiguous here)
            assert all(st.bounds[i, 1] == st.bounds[i + 1, 0] for i in range(max(k - 4, 0), k))
            lo = max(st.bounds[max(k - 4, 0), 0], 0) / 16000
            hi = min(st.bounds[k, 1], len(st.audio)) / 16000
            w = ds.words(st.name)
            inside = [w.labels[i] for i in range(len(w)) if w.onsets[i] >= lo and w.offsets[i] <= hi]
            want = [first + zlib.crc32(x.encode()) % (cfg.vocab_size - first) for x in inside]
            want = want + [cfg.eos_token_id] if want else []
            got = [int(t) for t in split.target(j)[2:] if t != sd.IGNORE]
            assert split.target(j)[0] == sd.story_crc(st.name) and split.target(j)[1] == row
            assert got == want, (st.name, row)
            n_empty += not want
    assert n_empty == 3 and rep["train_labels"]["n_empty"] == n_empty  # the silent stretch


def _whisper_reference(model):
    from transformers import WhisperForConditionalGeneration

    ref = WhisperForConditionalGeneration(model.backbone.config)
    ref.model.encoder.load_state_dict(model.backbone.state_dict())
    ref.model.decoder.load_state_dict(model.extra["decoder"].state_dict())
    return ref.eval()


@pytest.mark.parametrize("mode", ["pad30", "window"])
def test_whisper_loss_equals_transformers(ds, mode):
    from transformers.modeling_outputs import BaseModelOutput

    from core.features.layers import whisper_hidden_states

    data, model, _ = _setup(ds, "random:whisper-tiny", whisper_input=mode)
    model.eval()
    idx = [j for j in range(len(data.train)) if (data.train.target(j)[2:] != sd.IGNORE).any()][:3]
    x, y = _batch(data.train, idx)
    ref = _whisper_reference(model)
    pad = "max_length" if mode == "pad30" else "longest"
    feats = model.preprocessor(list(x.numpy()), sampling_rate=16000, return_tensors="pt", padding=pad).input_features
    labels = y[:, 2:]
    with torch.no_grad():
        ours = model(x, y)
        if mode == "pad30":
            want = ref(input_features=feats, labels=labels).loss
        else:
            enc = whisper_hidden_states(ref.model.encoder, feats, [len(ref.model.encoder.layers)])
            want = ref(encoder_outputs=BaseModelOutput(last_hidden_state=enc[len(ref.model.encoder.layers)]),
                       labels=labels).loss
    assert torch.isfinite(ours)
    torch.testing.assert_close(ours, want, rtol=1e-5, atol=1e-6)


def test_whisper_clip_without_words_is_ignored(ds):
    data, model, _ = _setup(ds, "random:whisper-tiny")
    empty = [j for j in range(len(data.train)) if not (data.train.target(j)[2:] != sd.IGNORE).any()]
    full = [j for j in range(len(data.train)) if (data.train.target(j)[2:] != sd.IGNORE).any()]
    model.eval()
    x, y = _batch(data.train, empty[:2])
    loss = model(x, y)
    assert float(loss.detach()) == 0.0
    loss.backward()  # no crash, graph kept
    with torch.no_grad():
        xa, ya = _batch(data.train, [full[0], empty[0]])
        xb, yb = _batch(data.train, [full[0]])
        torch.testing.assert_close(model(xa, ya), model(xb, yb), rtol=1e-5, atol=1e-6)  # masked out


# --------------------------------------------------------------------------- wav2vec2
def test_wav2vec2_loss_equals_transformers_and_masks_are_seeded(ds):
    from transformers import Wav2Vec2ForPreTraining
    from transformers.models.wav2vec2.modeling_wav2vec2 import (_compute_mask_indices,
                                                                _sample_negative_indices)

    data, model, rep = _setup(ds, "random:wav2vec2-tiny")
    assert set(rep["init"]) == {"quantizer", "project_q", "project_hid"}
    x, y = _batch(data.train, [0, 5])
    model.eval()
    T = int(model.backbone._get_feat_extract_output_lengths(x.shape[1]))
    mask, neg = model.masks(y, T)
    for b, (crc, row) in enumerate(y[:, :2].tolist()):  # transformers' helpers under the sample's seed
        np.random.seed(sd.sample_seed(0, -1, crc, row))
        m = _compute_mask_indices((1, T), 0.65, 10, min_masks=2)
        n = _sample_negative_indices((1, T), model.backbone.config.num_negatives, m)
        np.testing.assert_array_equal(mask[b].numpy(), m[0])
        np.testing.assert_array_equal(neg[b].numpy(), n[0] + b * T)
    assert 0.3 < float(mask.float().mean()) < 0.7
    model.train()
    model.set_epoch(1)
    assert not torch.equal(model.masks(y, T)[0], mask)  # a new epoch draws new masks
    model.eval()
    assert torch.equal(model.masks(y, T)[0], mask)  # validation masks never change

    ref = Wav2Vec2ForPreTraining(model.backbone.config)
    ref.wav2vec2.load_state_dict(model.backbone.state_dict())
    for name in ("quantizer", "project_q", "project_hid"):
        getattr(ref, name).load_state_dict(model.extra[name].state_dict())
    ref.eval()
    inputs = model.preprocessor(list(x.numpy()), sampling_rate=16000, return_tensors="pt").input_values
    with torch.no_grad():
        want = ref(inputs, mask_time_indices=mask, sampled_negative_indices=neg).loss / mask.sum()
        ours = model(x, y)
    assert torch.isfinite(ours)
    torch.testing.assert_close(ours, want, rtol=1e-4, atol=1e-5)


def test_pretraining_modules_come_from_the_checkpoint_when_it_has_them(tmp_path):
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2ForPreTraining

    from core.models.random_models import random_config

    torch.manual_seed(7)
    full = Wav2Vec2ForPreTraining(random_config("wav2vec2", True))  # as facebook/wav2vec2-base is saved
    full.save_pretrained(tmp_path)
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(tmp_path)
    model = StimulusModel.from_spec(f"hf:{tmp_path}", device="cpu", seed=0)
    assert all(v.startswith("loaded from") for v in model.init_report.values())
    for name in ("quantizer", "project_q", "project_hid"):
        for k, v in getattr(full, name).state_dict().items():
            torch.testing.assert_close(model.extra[name].state_dict()[k], v)
    fresh = StimulusModel.from_spec("random:wav2vec2-tiny", device="cpu", seed=0)
    assert all(v.startswith("initialised") for v in fresh.init_report.values())


@pytest.mark.slow
def test_bundled_whisper_uses_its_tokenizer_and_decoder(ds):
    from transformers import AutoTokenizer

    from core.models.bundled import bundled_dir

    data, model, rep = _setup(ds, "bundled:whisper-tiny.en")
    assert rep["init"]["decoder"].startswith("loaded from") and rep["tokenizer"] == "WhisperLabels"
    tok = AutoTokenizer.from_pretrained(str(bundled_dir("whisper-tiny.en")))
    st = data.train._stories[1]
    row = data.train.target(len(data.train._stories[0].targets))  # story1, row 0
    ids = [int(t) for t in row[2:] if t != sd.IGNORE]
    words = sd.clip_words(ds.words(st.name), sd.clip_intervals(st.bounds, 0, data.train.delays, len(st.audio)))
    assert tok.decode(ids) == "<|notimestamps|> " + " ".join(words) + "<|endoftext|>"
    model.eval()
    with torch.no_grad():
        assert np.isfinite(float(model(*_batch(data.train, [0, 1]))))


# --------------------------------------------------------------------------- HuBERT
def test_mfcc_equals_transformers_kaldi_filter_bank(ds):
    from scipy.fft import dct
    from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

    wave = ds.audio("story0")[:16000 * 3].astype(np.float64)
    mel = mel_filter_bank(num_frequency_bins=257, num_mel_filters=23, min_frequency=20.0, max_frequency=8000,
                          sampling_rate=16000, norm=None, mel_scale="kaldi", triangularize_in_mel_space=True)
    fb = spectrogram(wave, window_function(400, "povey", periodic=False), frame_length=400, hop_length=160,
                     fft_length=512, power=2.0, center=False, preemphasis=0.97, mel_filters=mel, log_mel="log",
                     mel_floor=np.finfo(np.float32).eps, remove_dc_offset=True, dtype=np.float64).T
    c = dct(fb, type=2, norm="ortho", axis=1)[:, :13] * (1 + 11 * np.sin(np.pi * np.arange(13) / 22))
    got = sd.mfcc(wave)
    assert got.shape == (1 + (len(wave) - 400) // 160, 39)
    np.testing.assert_allclose(got[:, :13], c, atol=1e-4)
    def deltas(a):  # torchaudio.functional.compute_deltas (win 5, edges replicated), as a plain loop
        T = len(a)
        return np.array([sum(n * (a[min(t + n, T - 1)] - a[max(t - n, 0)]) for n in (1, 2)) / 10.0
                         for t in range(T)])

    d = deltas(got[:, :13].astype(np.float64))
    np.testing.assert_allclose(got[:, 13:26], d, atol=1e-4)
    np.testing.assert_allclose(got[:, 26:], deltas(d), atol=1e-4)


def test_hubert_labels_and_loss_equal_plain_references(ds):
    data, model, rep = _setup(ds, "random:hubert-tiny")
    assert rep["kmeans"]["fit_on"] == ["story0", "story1"]
    x, y = _batch(data.val, [0, 2])
    T = int(model.backbone._get_feat_extract_output_lengths(x.shape[1]))
    for b in range(2):  # labels: model frame t ← MFCC frame 2t of the clip
        want = model.kmeans.predict(sd.mfcc(x[b].numpy())[::2][:T])
        np.testing.assert_array_equal(y[b, 2:].numpy(), want)
    model.eval()
    mask, _ = model.masks(y, T)
    with torch.no_grad():
        ours = model(x, y)
        h = model.backbone(x, mask_time_indices=mask).last_hidden_state  # HuBERT: no normalisation
        z = model.extra["final_proj"](h).numpy()
        e = model.extra["label_embs"].weight.numpy()
    total, n = 0.0, 0
    for b in range(2):
        for t in range(T):
            if not mask[b, t]:
                continue
            cos = (e @ z[b, t]) / np.linalg.norm(e, axis=1) / np.linalg.norm(z[b, t])  # one per cluster
            logits = cos / 0.1
            total += -(logits[y[b, 2 + t]] - np.log(np.exp(logits - logits.max()).sum()) - logits.max())
            n += 1
    assert np.isfinite(float(ours)) and abs(float(ours) - total / n) < 1e-4


# --------------------------------------------------------------------------- over-fit and trainer
@pytest.mark.parametrize("spec", ["random:wav2vec2-tiny", "random:whisper-tiny",
                                  pytest.param("random:hubert-tiny", marks=pytest.mark.slow)])
def test_loss_decreases_on_a_fixed_batch(ds, spec):
    data, model, _ = _setup(ds, spec)
    model.eval()  # fixed masks, no dropout: a deterministic over-fit check
    idx = [j for j in range(len(data.train)) if "whisper" not in spec
           or (data.train.target(j)[2:] != sd.IGNORE).any()][:2]
    x, y = _batch(data.train, idx)
    x = x[:, -16000:]  # the clips' last second (speed); HuBERT: its frames are frames 450… of the clip
    if "hubert" in spec:
        y = torch.cat([y[:, :2], y[:, 2 + 450:]], 1)
    backbone, extra = model.parameter_groups()
    assert extra and not any(p is q for p in backbone for q in extra)
    assert all(not p.requires_grad for n, p in model.backbone.named_parameters()
               if n.startswith(("feature_extractor.", "conv1.", "conv2.", "embed_positions.")))
    opt = torch.optim.Adam(backbone + extra, lr=5e-3)
    losses = []
    for _ in range(8):
        loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(np.isfinite(losses)) and losses[-1] < 0.9 * losses[0], losses


@pytest.mark.parametrize("spec", ["random:whisper-tiny",
                                  pytest.param("random:wav2vec2-tiny", marks=pytest.mark.slow)])
def test_train_resume_equals_uninterrupted(tmp_path, ds, spec):
    from core.tuning import TuneParams
    from core.tuning.trainer import train

    p = TuneParams(epochs=2, batch_size=4, micro_batch=2, schedule="constant", patience=0, seed=1,
                   backbone_lr=1e-3, head_lr=1e-3)
    data, a, _ = _setup(ds, spec, delays=(0,), seed=1)  # 2 s clips (speed)
    torch.manual_seed(0)  # dropout / LayerDrop / Gumbel noise draw from torch's global RNG
    whole = train(tmp_path / "a", a, data, p)
    assert whole["n_trainable"] > 0 and np.isfinite(whole["best_val"])
    _, b, _ = _setup(ds, spec, delays=(0,), seed=1)
    torch.manual_seed(0)
    train(tmp_path / "b", b, data, p, stop_after=1)
    _, c, _ = _setup(ds, spec, delays=(0,), seed=1)
    res = train(tmp_path / "b", c, data, p, resume=True)
    assert res["resumed_from"] == 0 and res["steps"] == whole["steps"]
    assert abs(res["best_val"] - whole["best_val"]) < 1e-5
    for (n, pa), (_, pc) in zip(a.named_parameters(), c.named_parameters()):
        torch.testing.assert_close(pa, pc, atol=1e-5, rtol=0, msg=n)


@pytest.mark.slow
def test_lora_trains_adapters_and_objective_only(tmp_path, ds):
    from core.tuning import TuneParams
    from core.tuning.trainer import train

    data, model, _ = _setup(ds, "random:wav2vec2-tiny", delays=(0,))
    p = TuneParams(epochs=1, batch_size=4, micro_batch=2, schedule="constant", patience=0, lora=True)
    out = train(tmp_path, model, data, p)
    trainable = [n for n, q in model.named_parameters() if q.requires_grad]
    assert any("lora_" in n for n in trainable) and any(n.startswith("extra.quantizer") for n in trainable)
    assert all("lora_" in n or n.startswith("extra.") for n in trainable) and np.isfinite(out["best_val"])


# --------------------------------------------------------------------------- pipeline / CLI
@pytest.fixture(scope="module")
def ds_root(tmp_path_factory):
    from tests.ds_fixture import make_ds003020_fixture

    root = tmp_path_factory.mktemp("ds003020") / "ds"
    make_ds003020_fixture(root, n_stories=4, duration_range=(40.0, 44.0))
    return root


@pytest.mark.parametrize("spec", ["random:whisper-tiny",  # wav2vec2 / HuBERT: minutes of CPU on 10 s clips
                                  pytest.param("random:wav2vec2-tiny", marks=pytest.mark.slow),
                                  pytest.param("random:hubert-tiny", marks=pytest.mark.slow)])
def test_cli_tune_stimulus_end_to_end(tmp_path, ds_root, capsys, spec):
    from transformers import AutoModel

    from core.cli import main
    from core.jobs import read_metrics
    from core.models import load_model

    out = tmp_path / "run"
    code = main(["-q", "tune", "--data", f"ds003020:{ds_root}", "--subject", "UTS01", "--model", spec,
                 "--out", str(out), "--epochs", "1", "--micro-batch", "4", "--control", "stimulus"])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    s = json.loads(cap.out)
    assert s["control"] == "stimulus" and s["n_voxels"] == 0 and s["n_targets"] == 0
    assert s["control_report"]["objective"] and np.isfinite(s["best_val"])
    assert json.loads((out / "status.json").read_text())["state"] == "done"
    assert {"step", "epoch"} <= {r["kind"] for r in read_metrics(out)}
    export = out / "export"
    assert not (export / "head.safetensors").exists()
    info = json.loads((export / "tuning.json").read_text())
    assert info["objective"] == s["control_report"]["objective"] and info["n_voxels"] == 0
    card = (export / "README.md").read_text()
    assert "Stimulus-tuned" in card and "initialised" in card
    loaded = AutoModel.from_pretrained(export)
    assert loaded.config.model_type == spec.split(":")[1].split("-")[0]
    assert not any(k.startswith(("quantizer", "project_")) for k in loaded.state_dict())
    sm = load_model(f"ckpt:{out}")  # what `encode --model ckpt:DIR` loads
    assert sm.family == loaded.config.model_type


def test_cli_tune_stimulus_unsupported_family(tmp_path, capsys, monkeypatch):
    from core.cli import main
    from core.models import registry
    from core.pipelines.tune import tune

    with pytest.raises(ConfigError, match="head_init='ridge'.*stimulus"):  # no voxel head to initialise
        tune("demo", "S1", "random:wav2vec2-tiny", tmp_path / "r", {"head_init": "ridge"}, control="stimulus")
    assert not (tmp_path / "r").exists()

    real = registry.model_info

    def fake(spec):
        info = real("random:wav2vec2-tiny")
        return type(info)(spec=spec, family="wavlm", n_layers=info.n_layers, weights_hash="x",
                          preprocessing=info.preprocessing)

    monkeypatch.setattr("core.models.model_info", fake)
    code = main(["-q", "tune", "--data", "demo", "--subject", "S1", "--model", "random:wav2vec2-tiny",
                 "--out", str(tmp_path / "x"), "--control", "stimulus"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error:") and "wavlm" in err[-1]
