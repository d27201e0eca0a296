"""Brain-tuning under DDP: ``torchrun --nproc_per_node=2`` (gloo, CPU) trains like one process with
the same effective batch — same per-step loss curve, same validation losses, same exported head.

Bit-for-bit-level agreement needs a model without stochastic layers: dropout, LayerDrop and
SpecAugment draw different random numbers on each process (and a process sees other micro-batches
than the single process), so the tests use a tiny wav2vec2 saved with those switched off
(``hf:<folder>``), or the tiny random Whisper (whose config has none). The remaining differences are
float summation order (the step's samples are split over two processes and all-reduced).

When run as a script (``torchrun … tests/test_tuning_ddp.py OUT``) this file is the worker of
:func:`test_ddp_uneven_last_step_and_accumulation`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
N_VOX = 4
#: the worker's runs on 9 training samples with 2 processes, name → TuneParams changes:
#: m2b4 → 1 micro-batch per process per step, the last step (1 sample) leaves process 1 empty;
#: m1b4 → 2 micro-batches per process per step (local accumulation under no_sync);
#: lora → LoRA adapters (dropout 0: deterministic) under DDP; bf16 → bf16 autocast under DDP;
#: resume → stopped after epoch 0, then resumed under DDP (ends as one uninterrupted process)
WORKER_RUNS = {"m2b4": dict(micro_batch=2), "m1b4": dict(micro_batch=1),
               "lora": dict(micro_batch=2, lora=True, lora_dropout=0.0),
               "bf16": dict(micro_batch=2, precision="bf16"),
               "resume": dict(micro_batch=2)}
#: bf16 rounds each matmul; process 1's micro-batch of 2 vs one micro-batch of 4 may take other kernels
RTOL = {"bf16": 3e-2}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                GLOO_SOCKET_IFNAME="lo", TOKENIZERS_PARALLELISM="false")


def _torchrun(args, timeout=600):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), *args]
    return subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)


def _metrics(run):
    from core.jobs import read_metrics

    recs = read_metrics(run)
    return [r for r in recs if r["kind"] == "step"], [r for r in recs if r["kind"] == "epoch"]


def _assert_same_curve(a, b, rtol=1e-4):
    sa, ea = _metrics(a)
    sb, eb = _metrics(b)
    # one record per step / epoch: only the main process writes metrics.jsonl
    assert [r["step"] for r in sa] == list(range(1, len(sa) + 1)) == [r["step"] for r in sb]
    assert [r["epoch"] for r in ea] == [r["epoch"] for r in eb] == list(range(len(ea)))
    np.testing.assert_allclose([r["loss"] for r in sa], [r["loss"] for r in sb], rtol=rtol, atol=1e-7)
    for k in ("train_loss", "val_loss"):
        np.testing.assert_allclose([r[k] for r in ea], [r[k] for r in eb], rtol=rtol, atol=1e-7)
    for k in ("lr_backbone", "lr_head"):
        assert [r[k] for r in sa] == pytest.approx([r[k] for r in sb])
    return sa


def _deterministic_wav2vec2(folder: Path) -> str:
    """``random:wav2vec2-tiny``'s architecture and weights with dropout, LayerDrop and SpecAugment
    off, saved as a local HF folder; returns its ``hf:`` spec."""
    import torch
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

    from core.models.random_models import random_config

    cfg = random_config("wav2vec2", tiny=True)
    for k in ("hidden_dropout", "attention_dropout", "activation_dropout", "feat_proj_dropout",
              "final_dropout", "layerdrop", "mask_time_prob", "mask_feature_prob"):
        setattr(cfg, k, 0.0)
    cfg.apply_spec_augment = False
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Wav2Vec2Model(cfg)
    model.save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False).save_pretrained(folder)
    return f"hf:{folder}"


@pytest.fixture(scope="module")
def ds_root(tmp_path_factory):
    from tests.ds_fixture import make_ds003020_fixture

    root = tmp_path_factory.mktemp("ds003020-ddp") / "ds"
    make_ds003020_fixture(root, n_stories=4, duration_range=(40.0, 44.0))
    return root


@pytest.mark.slow
def test_cli_tune_ddp_two_processes_equals_one(tmp_path, ds_root):
    """``python -m core tune`` under ``torchrun --nproc_per_node=2`` (micro-batch 2 per process,
    effective batch 4) vs one process (micro-batch 2 × accumulation 2): same losses, same head."""
    from safetensors.torch import load_file

    spec = _deterministic_wav2vec2(tmp_path / "w2v")
    argv = ["-m", "core", "-q", "tune", "--data", f"ds003020:{ds_root}", "--subject", "UTS01",
            "--model", spec, "--epochs", "2", "--micro-batch", "2", "--batch-size", "4",
            "--targets", "ceiling>0.4", "--precision", "fp32"]  # exact comparison (bf16: the worker test)
    ddp, one = tmp_path / "ddp", tmp_path / "one"
    r = _torchrun([*argv, "--out", str(ddp)])
    assert r.returncode == 0, r.stderr[-4000:]
    r1 = subprocess.run([sys.executable, *argv, "--out", str(one)], cwd=ROOT, env=_env(),
                        capture_output=True, text=True, timeout=600)
    assert r1.returncode == 0, r1.stderr[-4000:]

    steps = _assert_same_curve(ddp, one)
    assert r.stdout.count('"steps_per_epoch"') == 1, r.stdout  # one summary printed, by the main process
    assert r1.stdout.count('"steps_per_epoch"') == 1
    sd, so = (json.loads((d / "summary.json").read_text()) for d in (ddp, one))
    assert sd["steps"] == so["steps"] == len(steps) == 2 * sd["steps_per_epoch"]
    assert sd["steps_per_epoch"] == -(-sd["n_train"] // 4)  # the effective batch is 4 in both
    assert sd["best_epoch"] == so["best_epoch"]
    assert sd["best_val"] == pytest.approx(so["best_val"], rel=1e-4)
    for d in (ddp, one):
        status = json.loads((d / "status.json").read_text())
        assert status["state"] == "done" and status["step"] == len(steps)
    # one RNG state per process in the DDP checkpoint, the model / optimiser once
    ck = ddp / "checkpoints" / "epoch-001"
    assert {p.name for p in ck.glob("random_states_*.pkl")} == {"random_states_0.pkl", "random_states_1.pkl"}
    assert (ck / "model.safetensors").exists() and (ck / "state.json").exists()
    hd, ho = (load_file(str(d / "export" / "head.safetensors")) for d in (ddp, one))
    for k in ("weight", "bias"):
        assert float((hd[k] - ho[k]).abs().max()) < 1e-5, k
        assert float(hd[k].abs().max()) > 0  # the head trained (it starts at zero)


# --------------------------------------------------------------------------- uneven last step
def _worker_params(**changes):
    from core.tuning import TuneParams

    base = dict(epochs=2, batch_size=4, micro_batch=2, schedule="constant", patience=0,
                head_lr=1e-2, backbone_lr=1e-3, seed=3, head_init="random")
    return TuneParams(**{**base, **changes})


def _worker_data():
    from core.tuning import TuningData
    from tests.fakes import make_dataset

    # 4 stories: story0, story1 train (4 + 5 = 9 samples), story2 validation (6), story3 test
    return TuningData.build(make_dataset(n_stories=4, n_trs_run=24, n_voxels=N_VOX), "S01", np.arange(N_VOX))


def _worker_model():
    from core.tuning import BrainTuningModel

    # the tiny random Whisper has no dropout / LayerDrop / SpecAugment in its config
    return BrainTuningModel.from_spec("random:whisper-tiny", N_VOX, device="cpu", head_init="random", seed=3)


def _run_all(out: Path) -> None:
    from core.tuning.trainer import train

    data = _worker_data()
    for name, changes in WORKER_RUNS.items():
        if name == "resume":  # an interrupted run (as if killed after its epoch-0 checkpoint) resumed
            train(out / name, _worker_model(), data, _worker_params(**changes), stop_after=1)
            train(out / name, _worker_model(), data, _worker_params(**changes), resume=True)
        else:
            train(out / name, _worker_model(), data, _worker_params(**changes))


@pytest.mark.slow
def test_ddp_uneven_last_step_accumulation_lora_bf16_resume(tmp_path):
    """9 samples, 2 processes: a last step whose single sample leaves process 1 without one (it
    still joins the all-reduce), local gradient accumulation (micro-batch 1, batch 4), LoRA, bf16
    autocast, and a run resumed under DDP — each equal to one process with the same effective batch
    (the resumed one to an uninterrupted single process)."""
    from safetensors.torch import load_file

    from core.jobs import read_metrics
    from core.tuning.trainer import train

    r = _torchrun([str(Path(__file__).resolve()), str(tmp_path / "ddp")])
    assert r.returncode == 0, r.stderr[-4000:]
    data = _worker_data()
    for name, changes in WORKER_RUNS.items():
        one = train(tmp_path / "one" / name, _worker_model(), data, _worker_params(**changes))
        assert one["steps_per_epoch"] == 3  # 9 samples / 4 → 4 + 4 + 1
        rtol = RTOL.get(name, 1e-4)
        try:
            steps = _assert_same_curve(tmp_path / "ddp" / name, tmp_path / "one" / name, rtol=rtol)
        except AssertionError as e:
            raise AssertionError(f"run {name}: {e}") from None
        assert len(steps) == 6
        hd = load_file(str(tmp_path / "ddp" / name / "checkpoints" / "best" / "model.safetensors"))
        ho = load_file(str(tmp_path / "one" / name / "checkpoints" / "best" / "model.safetensors"))
        assert set(hd) == set(ho)
        if name == "bf16":  # Adam's normalised steps amplify bf16 rounding on tiny gradients:
            # compare the whole update (trained − initial weights) by direction and size instead
            init = _worker_model().state_dict()
            keys = sorted(hd)
            assert set(keys) <= set(init)
            du = np.concatenate([(hd[k] - init[k]).double().ravel().numpy() for k in keys])
            dv = np.concatenate([(ho[k] - init[k]).double().ravel().numpy() for k in keys])
            assert du @ dv / np.linalg.norm(du) / np.linalg.norm(dv) > 0.99
            assert np.linalg.norm(du) == pytest.approx(np.linalg.norm(dv), rel=0.05)
            continue
        for k in hd:
            assert float((hd[k] - ho[k]).abs().max()) < 1e-5, (name, k)
        if name == "lora":
            assert any("lora_B" in k and float(hd[k].abs().max()) > 0 for k in hd)  # adapters trained
        if name == "resume":
            kinds = [m["kind"] for m in read_metrics(tmp_path / "ddp" / name)]
            assert kinds.count("resume") == 1 and kinds.count("epoch") == 2


def test_local_accum_refuses_indivisible_batch():
    from core.errors import ConfigError
    from core.tuning.trainer import local_accum

    p = _worker_params(micro_batch=2, batch_size=4)
    assert local_accum(p, 1) == 2 and local_accum(p, 2) == 1
    with pytest.raises(ConfigError, match="multiple of micro_batch × processes"):
        local_accum(p, 4)


if __name__ == "__main__":  # torchrun worker of test_ddp_uneven_last_step_and_accumulation
    _run_all(Path(sys.argv[1]))
