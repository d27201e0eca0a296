"""Model keys without loading (fingerprints and layers from files and configs) and trainable copies."""

import pytest
import torch

from core.models import feature_source, load_model
from core.models.hf import state_dict_hash
from test_models import _save_fixture


# -- fingerprints without loading; trainable copies -------------------------------------------
def _no_loading(monkeypatch):
    from core.models import registry

    def refuse(spec):
        raise AssertionError(f"{spec} was loaded")

    monkeypatch.setattr(registry, "_build", refuse)
    monkeypatch.setattr(registry, "_LOADED", {})  # models loaded by earlier tests do not count
    return registry


@pytest.mark.parametrize("kind", ["random", "hf", "bundled"])
def test_fingerprint_and_layers_do_not_load_the_model(tmp_path, monkeypatch, kind):
    from core.models import model_fingerprint

    spec = {"random": "random:hubert-tiny@5", "hf": f"hf:{tmp_path}", "bundled": "bundled:whisper-tiny.en"}[kind]
    if kind == "hf":
        _save_fixture("wav2vec2", tmp_path)
    registry = _no_loading(monkeypatch)
    src = feature_source(spec, mode="fast")
    fp, layers = src.fingerprint(), src.layers()
    assert layers[0] == "layer_0" and len(layers) == {"random": 3, "hf": 3, "bundled": 5}[kind]
    assert not [k for k in registry._LOADED if k[0] == spec]
    monkeypatch.undo()
    if kind == "bundled":
        return  # loading the real model is covered by the slow transcription test
    m = load_model(spec)
    assert m.fingerprint == model_fingerprint(spec) and m.layer_names == layers
    assert src.fingerprint() == fp  # the cache key does not depend on whether it was loaded


def test_app_encode_dir_does_not_load_the_model(tmp_path, monkeypatch):
    from core.data import load_dataset
    from core.studio.sources import encode_dir
    from tests.ds_fixture import make_ds003020_fixture

    make_ds003020_fixture(tmp_path / "ds003020", n_stories=3, n_voxels=10, n_repeats=2,
                          duration_range=(30.0, 32.0))
    ds = load_dataset(f"ds003020:{tmp_path / 'ds003020'}")
    registry = _no_loading(monkeypatch)
    out = encode_dir(ds, "UTS01", "random:wav2vec2-tiny@9")
    assert out.parent.name == "encodings" and not [k for k in registry._LOADED if "@9" in k[0]]


def test_fingerprint_follows_the_weight_files(tmp_path):
    from core.models import model_fingerprint
    from core.models.random_models import build_random

    _save_fixture("wav2vec2", tmp_path)
    src = feature_source(f"hf:{tmp_path}")
    first = src.fingerprint()
    assert model_fingerprint(f"hf:{tmp_path}") == model_fingerprint(f"hf:{tmp_path}")
    build_random("wav2vec2-tiny@1")[0].save_pretrained(tmp_path)  # same size, other weights
    assert src.fingerprint() != first
    assert load_model(f"hf:{tmp_path}").fingerprint == model_fingerprint(f"hf:{tmp_path}")


@pytest.mark.parametrize("kind", ["random", "hf"])
def test_load_trainable_is_a_fresh_trainable_copy(tmp_path, kind):
    from core.models import load_trainable

    spec = "random:wav2vec2-tiny" if kind == "random" else f"hf:{tmp_path}"
    if kind == "hf":
        _save_fixture("wav2vec2", tmp_path)
    frozen = load_model(spec)
    before = state_dict_hash(frozen.module)
    t = load_trainable(spec, device="cpu")
    assert t.module is not frozen.module and t.module.training and not frozen.module.training
    assert all(p.requires_grad for p in t.module.parameters())
    assert not any(p.requires_grad for p in frozen.module.parameters())
    assert (t.family, t.layer_names, t.fingerprint) == (frozen.family, frozen.layer_names, frozen.fingerprint)
    assert type(t.preprocessor) is type(frozen.preprocessor)
    assert state_dict_hash(t.module) == before  # same weights to start from
    t.module.config.layerdrop = 0.0  # train-mode LayerDrop would skip the last layer at random
    loss = t.module(torch.randn(1, 4000)).last_hidden_state.pow(2).mean()
    loss.backward()
    assert all(p.grad is not None for p in t.module.encoder.layers[-1].parameters())
    with torch.no_grad():
        for p in t.module.parameters():
            p.add_(1.0)
    assert state_dict_hash(frozen.module) == before and load_model(spec) is frozen
    assert load_trainable(spec, device="cpu").module is not t.module
