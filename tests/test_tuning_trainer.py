"""Brain-tuning trainer, export and the ``tune`` pipeline / CLI (tiny random models, few samples)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.errors import ConfigError
from core.jobs import read_metrics
from core.tuning import BrainTuningModel, TuneParams, TuningData
from core.tuning.checkpoints import latest_checkpoint
from core.tuning.trainer import train
from tests.fakes import make_dataset

N_VOX = 4


@pytest.fixture(scope="module")
def data():
    # 4 stories: story0, story1 train (4 + 5 rows), story2 validation (6 rows), story3 test
    ds = make_dataset(n_stories=4, n_trs_run=24, n_voxels=N_VOX)
    return TuningData.build(ds, "S01", np.arange(N_VOX))


def _params(**kw):
    base = dict(epochs=2, batch_size=4, micro_batch=2, schedule="constant", patience=0,
                head_lr=1e-2, backbone_lr=1e-4, seed=3)
    base.update(kw)
    return TuneParams(**base)


def _model(spec="random:whisper-tiny", **kw):
    return BrainTuningModel.from_spec(spec, N_VOX, device="cpu", **kw)


@pytest.mark.slow
def test_train_writes_metrics_checkpoints_and_learns(tmp_path, data):
    model = _model()
    out = train(tmp_path, model, data, _params(epochs=2, head_lr=5e-2))
    recs = read_metrics(tmp_path)
    steps = [r for r in recs if r["kind"] == "step"]
    epochs = [r for r in recs if r["kind"] == "epoch"]
    assert len(steps) == 2 * out["steps_per_epoch"] == out["steps"]  # 9 samples / 4 → 3 steps
    assert out["steps_per_epoch"] == 3
    assert [r["epoch"] for r in epochs] == [0, 1]
    assert set(steps[0]) >= {"epoch", "step", "loss", "lr_backbone", "lr_head", "samples_per_s"}
    assert all(np.isfinite(r["val_loss"]) for r in epochs)
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["state"] == "running" and status["step"] == out["steps"] and status["fraction"] == 1.0
    ck = latest_checkpoint(tmp_path)
    assert ck.name == "epoch-001" and any(ck.glob("*.safetensors"))
    assert (tmp_path / "checkpoints" / "best" / "model.safetensors").exists()
    state = json.loads((ck / "state.json").read_text())
    assert state["epoch"] == 1 and state["params"]["seed"] == 3
    # the zero head starts at loss = mean(y²) ≈ 1; a high head lr must lower the training loss
    assert epochs[-1]["train_loss"] < steps[0]["loss"]


def _head(model):
    return torch.cat([model.head.weight.detach().flatten(), model.head.bias.detach()]).clone()


class _Stop(Exception):
    pass


@pytest.mark.slow
def test_resume_equals_uninterrupted(tmp_path, data):
    p = _params(epochs=2, head_init="random", patience=0)
    a = _model(head_init="random")
    train(tmp_path / "a", a, data, p)
    b = _model(head_init="random")
    first = train(tmp_path / "b", b, data, p, stop_after=1)
    assert first["epochs_run"] == 1 and latest_checkpoint(tmp_path / "b").name == "epoch-000"
    c = _model(head_init="random")  # a fresh process would start from scratch weights too
    calls = []

    out = train(tmp_path / "b", c, data, p, resume=True, progress=lambda f, m: calls.append(f))
    assert out["resumed_from"] == 0 and out["epochs_run"] == 2 and calls
    sa = json.loads((latest_checkpoint(tmp_path / "a") / "state.json").read_text())
    sb = json.loads((latest_checkpoint(tmp_path / "b") / "state.json").read_text())
    assert sa["step"] == sb["step"]
    assert abs(sa["val_loss"] - sb["val_loss"]) < 1e-5 and abs(sa["train_loss"] - sb["train_loss"]) < 1e-5
    torch.testing.assert_close(_head(a), _head(c), atol=1e-5, rtol=0)


def test_resume_after_crash_in_progress(tmp_path, data):
    p = _params(epochs=2)
    seen = {"n": 0}

    def boom(f, m):
        seen["n"] += 1
        if seen["n"] == 4:  # first step of epoch 2
            raise _Stop()

    with pytest.raises(_Stop):
        train(tmp_path, _model(), data, p, progress=boom)
    assert latest_checkpoint(tmp_path).name == "epoch-000"
    out = train(tmp_path, _model(), data, p, resume=True)
    assert out["resumed_from"] == 0 and out["steps"] == 6


def test_resume_with_changed_params_refused(tmp_path, data):
    train(tmp_path, _model(), data, _params(epochs=2), stop_after=1)
    with pytest.raises(ConfigError, match="head_lr"):
        train(tmp_path, _model(), data, _params(epochs=2, head_lr=0.5), resume=True)


@pytest.mark.slow
def test_lora_trains_only_adapters_and_head(tmp_path, data):
    model = _model("random:wav2vec2-tiny")
    before = {n: p.detach().clone() for n, p in model.backbone.named_parameters()}
    out = train(tmp_path, model, data, _params(epochs=1, lora=True, backbone_lr=1e-2))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    assert any("lora_" in n for n in trainable) and "head.weight" in trainable
    n_expected = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n or n.startswith("head."))
    assert out["n_trainable"] == n_expected
    base = model.backbone.get_base_model()
    for n, p in base.named_parameters():
        if "lora_" not in n:
            key = n.replace(".base_layer", "")
            torch.testing.assert_close(p, before[key])


@pytest.mark.parametrize("spec,lora", [("random:whisper-tiny", False), ("random:wav2vec2-tiny", False),
                                       ("random:wav2vec2-tiny", True)])
def test_train_layers_trains_only_the_top_layers(tmp_path, data, spec, lora):
    """train_layers=1: only the last transformer layer (and what follows it) and the head change;
    every lower layer and the input side stay bit-equal, and none of them holds a gradient."""
    from core.tuning.model import freeze_lower_layers

    model = _model(spec)
    cfg = model.backbone.config  # the layer count from the config, independent of the parameter names
    n_layers = getattr(cfg, "encoder_layers", None) or cfg.num_hidden_layers
    assert n_layers >= 2
    before = {n: p.detach().clone() for n, p in model.backbone.named_parameters()}
    out = train(tmp_path, model, data, _params(epochs=1, train_layers=1, lora=lora, backbone_lr=1e-2))
    base = model.backbone.get_base_model() if lora else model.backbone
    top = f"layers.{n_layers - 1}."
    changed = set()
    for n, p in base.named_parameters():
        key = n.replace(".base_layer", "")
        if key in before and not torch.equal(p, before[key]):
            changed.add(key)
        if top not in n and not n.startswith("layer_norm."):  # Whisper's final norm follows the layers
            assert not p.requires_grad, n
            if key in before:
                torch.testing.assert_close(p, before[key], rtol=0, atol=0)
    if lora:  # only the top layer's adapters train: lora_B starts at 0 and moves only there
        assert all(top in n for n, p in base.named_parameters() if p.requires_grad)
        moved = {n for n, p in base.named_parameters() if "lora_B" in n and p.abs().sum() > 0}
        assert moved and all(top in n for n in moved)
    else:
        assert changed and all(top in n or not n.startswith(("layers.", "encoder.layers.")) for n in changed)
    assert out["n_trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert freeze_lower_layers(_model(spec).backbone, "whisper" if "whisper" in spec else "wav2vec2", 0) == []
    with pytest.raises(ConfigError, match="train_layers"):
        TuneParams(train_layers=-1)


def test_lora_bad_target(tmp_path, data):
    with pytest.raises(ConfigError, match="nope"):
        train(tmp_path, _model(), data, _params(epochs=1, lora=True, lora_targets=("nope",)))


# --------------------------------------------------------------------------- export
def _equal_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    for k in sa:
        torch.testing.assert_close(sa[k].float(), sb[k].float(), atol=0, rtol=0)


@pytest.mark.parametrize("spec,lora", [("random:whisper-tiny", False), ("random:wav2vec2-tiny", True)])
def test_export_loads_with_transformers(tmp_path, data, spec, lora):
    from safetensors.torch import load_file
    from transformers import AutoModel

    from core.tuning.export import export

    p = _params(epochs=1, lora=lora, backbone_lr=1e-2, head_init="random")
    model = _model(spec, head_init="random")
    out = train(tmp_path, model, data, p)
    path = export(tmp_path, model, p, {"data": "fake", "subject": "S01", "model": spec,
                                       "targets": {"criterion": "all", "n_selected": N_VOX},
                                       "control": None, "val_loss": out["best_val"],
                                       "best_epoch": out["best_epoch"]})
    assert path == tmp_path / "export"
    loaded = AutoModel.from_pretrained(path)
    if spec.endswith("whisper-tiny"):
        _equal_state(loaded.get_encoder(), model.backbone)
    else:  # merged = W + (alpha / r) · B @ A on each adapted projection, the rest untouched
        got = loaded.state_dict()
        tuned = dict(model.backbone.get_base_model().named_modules())
        scale = p.lora_alpha / p.lora_r
        n_adapted = 0
        for name, mod in tuned.items():
            if hasattr(mod, "lora_A"):
                A, B = mod.lora_A["default"].weight, mod.lora_B["default"].weight
                w = mod.base_layer.weight + scale * (B @ A)
                torch.testing.assert_close(got[name + ".weight"], w.detach(), atol=1e-6, rtol=1e-5)
                n_adapted += 1
                assert B.abs().sum() > 0  # the adapter trained (B starts at zero)
        assert n_adapted > 0
        assert (path / "adapter" / "adapter_config.json").exists()
        assert (path / "adapter" / "adapter_model.safetensors").exists()
    head = load_file(str(path / "head.safetensors"))
    torch.testing.assert_close(head["weight"], model.head.weight.detach())
    torch.testing.assert_close(head["bias"], model.head.bias.detach())
    info = json.loads((path / "tuning.json").read_text())
    assert info["n_voxels"] == N_VOX and info["params"]["lora"] is lora and info["subject"] == "S01"
    card = (path / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\n") and "- brain-tuning" in card
    assert "n_voxels: 4" in card and "val_loss:" in card



# --------------------------------------------------------------------------- controls
def test_controls_transform_training_targets_only():
    from core.tuning.controls import CHUNK_TRS, apply_control

    ds = make_dataset(n_stories=5, n_trs_run=24, n_voxels=N_VOX)
    d = TuningData.build(ds, "S01", np.arange(N_VOX))
    orig = {s.name: s.targets.copy() for s in d.train._stories}
    val = d.val._stories[0].targets.copy()
    rep = apply_control(d, "random-story", seed=1)
    for st in d.train._stories:
        src = orig[rep["source_story"][st.name]]
        assert rep["source_story"][st.name] != st.name and st.targets.shape == orig[st.name].shape
        k = min(len(src), len(st.targets))
        np.testing.assert_array_equal(st.targets[:k], src[:k])
        assert all(any(np.array_equal(row, r) for r in src) for row in st.targets[k:])  # padded rows
    np.testing.assert_array_equal(d.val._stories[0].targets, val)

    d2 = TuningData.build(make_dataset(n_stories=3, n_trs_run=20 + 4 * CHUNK_TRS + 3, n_voxels=N_VOX),
                          "S01", np.arange(N_VOX))
    st = d2.train._stories[0]
    y = st.targets.copy()  # 63 rows: 4 whole chunks, 3 rows left
    rep = apply_control(d2, "chunk-shuffle")
    c = CHUNK_TRS
    np.testing.assert_array_equal(st.targets[:c], y[2 * c:3 * c])
    np.testing.assert_array_equal(st.targets[3 * c:4 * c], y[c:2 * c])
    np.testing.assert_array_equal(st.targets[4 * c:], y[4 * c:])
    assert rep["stories"][st.name] == {"chunks": 4, "apart": 2}
    with pytest.raises(ConfigError, match="stimulus"):
        apply_control(d2, "stimulus")


# --------------------------------------------------------------------------- pipeline / CLI
@pytest.fixture(scope="module")
def ds_root(tmp_path_factory):
    from tests.ds_fixture import make_ds003020_fixture

    root = tmp_path_factory.mktemp("ds003020") / "ds"
    make_ds003020_fixture(root, n_stories=4, duration_range=(40.0, 44.0))
    return root


def _cli(capsys, *argv):
    from core.cli import main

    code = main(["-q", *argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_cli_tune_end_to_end(tmp_path, ds_root, capsys):
    from transformers import AutoModel

    from core.data import load_dataset

    ds = load_dataset(f"ds003020:{ds_root}")
    assert ds.split("UTS01")["val"] and ds.test_story not in ds.split("UTS01")["train"]
    out = tmp_path / "run"
    argv = ["tune", "--data", f"ds003020:{ds_root}", "--subject", "UTS01", "--model", "random:whisper-tiny",
            "--out", str(out), "--epochs", "1", "--micro-batch", "4", "--targets", "ceiling>0.4"]
    code, printed, err = _cli(capsys, *argv)
    assert code == 0, err
    s = json.loads(printed)
    assert s["n_voxels"] == s["targets"]["n_selected"] > 0 and s["epochs_run"] == 1
    assert ds.test_story not in s["train_stories"] + s["val_stories"] and s["val_stories"]
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "done" and status["result"] == s["export"]
    kinds = {r["kind"] for r in read_metrics(out)}
    assert {"step", "epoch"} <= kinds
    loaded = AutoModel.from_pretrained(s["export"])
    assert loaded.config.model_type == "whisper"
    info = json.loads((out / "export" / "tuning.json").read_text())
    assert info["subject"] == "UTS01" and info["targets"]["criterion"] == "ceiling>0.4"
    # again without --resume: refused; with a different model under --resume: refused
    code, _, err = _cli(capsys, *argv)
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("error:") and "--resume" in last
    code, _, err = _cli(capsys, *[a if a != "random:whisper-tiny" else "random:hubert-tiny" for a in argv],
                        "--resume")
    assert code == 2 and "model" in err


def test_cli_tune_bad_inputs(tmp_path, ds_root, capsys):
    base = ["tune", "--data", f"ds003020:{ds_root}", "--subject", "UTS01", "--epochs", "1",
            "--micro-batch", "4", "--targets", "ceiling>0.4"]
    code, _, err = _cli(capsys, *base, "--model", "random:nosuchmodel", "--out", str(tmp_path / "a"))
    assert code == 2 and err.startswith("error:") and "nosuchmodel" in err
    notrun = tmp_path / "notrun"
    notrun.mkdir()
    (notrun / "keep.txt").write_text("mine")
    code, _, err = _cli(capsys, *base, "--model", "random:whisper-tiny", "--out", str(notrun))
    assert code == 2 and "not a tuning run" in err and (notrun / "keep.txt").read_text() == "mine"
    code, _, err = _cli(capsys, *base[:-1], "ceiling>0.999", "--model", "random:whisper-tiny",
                        "--out", str(tmp_path / "b"))
    assert code == 2 and "selects no voxel" in err and not (tmp_path / "b").exists()


def test_tune_job_kind_is_heavy():
    from core.jobs import is_heavy
    from core.jobs.kinds import KINDS, run_tune

    assert KINDS["tune"] is run_tune and is_heavy("tune")


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, ds_root):
    """A ``tune`` process killed with SIGKILL after its first checkpoint, resumed, ends equal to an
    uninterrupted run (exported head and validation losses)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from safetensors.torch import load_file

    from core.pipelines.tune import tune

    argv = ["--data", f"ds003020:{ds_root}", "--subject", "UTS01", "--model", "random:whisper-tiny",
            "--epochs", "3", "--micro-batch", "2", "--batch-size", "4", "--targets", "ceiling>0.4",
            "--control", "chunk-shuffle"]
    killed = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.Popen([sys.executable, "-m", "core", "-q", "tune", *argv, "--out", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.time() + 300
        while not (killed / "checkpoints" / "epoch-000" / "state.json").exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert latest_checkpoint(killed).name in ("epoch-000", "epoch-001") and not (killed / "export").exists()
    params = dict(epochs=3, micro_batch=2, batch_size=4, targets="ceiling>0.4")
    resumed = tune(f"ds003020:{ds_root}", "UTS01", "random:whisper-tiny", killed, params,
                   control="chunk-shuffle", resume=True, device="cpu")
    whole = tune(f"ds003020:{ds_root}", "UTS01", "random:whisper-tiny", tmp_path / "whole", params,
                 control="chunk-shuffle", device="cpu")
    assert resumed["resumed_from"] is not None and resumed["steps"] == whole["steps"]
    assert abs(resumed["best_val"] - whole["best_val"]) < 1e-5
    ha, hb = load_file(str(killed / "export" / "head.safetensors")), load_file(str(tmp_path / "whole" / "export" / "head.safetensors"))
    for k in ("weight", "bias"):
        torch.testing.assert_close(ha[k], hb[k], atol=1e-5, rtol=0)
    ea = [r for r in read_metrics(killed) if r["kind"] == "epoch"]
    eb = [r for r in read_metrics(tmp_path / "whole") if r["kind"] == "epoch"]
    assert [r["epoch"] for r in ea] == [0, 1, 2] or [r["epoch"] for r in ea][-2:] == [1, 2]
    assert abs(ea[-1]["val_loss"] - eb[-1]["val_loss"]) < 1e-5


@pytest.mark.parametrize("spec", ["random:whisper-tiny", "random:wav2vec2-tiny"])
def test_bf16_autocast_trains_and_stays_close_to_fp32(tmp_path, data, spec):
    # the Whisper log-mel STFT must stay fp32 under autocast (it converts to numpy)
    model = _model(spec, head_init="random", seed=1)
    waves = torch.as_tensor(np.stack([data.train[j][0].numpy() for j in range(2)]))
    with torch.no_grad():
        ref = model(waves)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(waves)
    assert torch.allclose(low.float(), ref, rtol=0.1, atol=0.05 * float(ref.abs().max()))
    res = train(tmp_path / "run", _model(spec), data, _params(epochs=1, precision="bf16"))
    assert res["epochs_run"] == 1 and np.isfinite(res["last_train_loss"])
