"""Downstream probes (core.analysis.probes, core.data.probe_tasks, core.pipelines.probe)."""

import json

import numpy as np
import pytest
import soundfile as sf

from core.analysis.probes import probe_scores
from core.data.probe_tasks import load_task, parse_sentences
from core.errors import DataError


def test_probe_separable_features_beat_chance_and_shuffled_stays_at_chance():
    rng = np.random.default_rng(0)
    k, n = 5, 400
    y = rng.integers(k, size=n)
    X = rng.normal(size=(k, 32))[y] + rng.normal(size=(n, 32))
    is_test = np.zeros(n, bool)
    is_test[rng.permutation(n)[:100]] = True
    s = probe_scores(X, y, is_test, multilabel=False)
    assert s["f1"] > 0.85 and s["f1_macro"] > 0.85
    assert abs(s["f1_shuffled"] - 1 / k) < 0.12  # chance = 1/k for balanced classes
    assert (s["n_train"], s["n_test"], s["n_classes"]) == (300, 100, 5)
    Y = (rng.random((n, 8)) < 0.3).astype(np.float32)
    X2 = Y @ rng.normal(size=(8, 32)) * 2 + rng.normal(size=(n, 32))
    m = probe_scores(X2, Y, is_test, multilabel=True)
    assert m["f1"] > 0.7 and m["f1_shuffled"] < 0.45  # random predictions at rate ~0.3 give F1 ≈ 0.3
    with pytest.raises(DataError, match="same number of clips"):
        probe_scores(X[:10], y, is_test, multilabel=False)


def _tone(freq, seconds=0.4, sr=16000, seed=0):
    t = np.arange(int(seconds * sr)) / sr
    noise = np.random.default_rng(seed).normal(scale=0.01, size=t.shape)
    return (0.5 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def _folder(tmp_path, rows, header="file,label", write=True):
    tmp_path.mkdir(parents=True, exist_ok=True)
    lines = [header]
    for i, row in enumerate(rows):
        lines.append(",".join(row))
        if write and row[0].endswith(".wav"):
            sf.write(tmp_path / row[0], _tone(300 + 200 * (hash(row[1]) % 3), seed=i), 16000)
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    return f"folder:{tmp_path}"


def test_folder_task_end_to_end_with_a_random_model(tmp_path):
    from core.pipelines.probe import probe

    freqs = {"low": 200.0, "mid": 800.0, "high": 2400.0}
    lines = ["file,label"]
    for c, f in freqs.items():
        for i in range(10):
            sf.write(tmp_path / f"{c}{i}.wav", _tone(f * (1 + 0.02 * i), seed=i), 16000)
            lines.append(f"{c}{i}.wav,{c}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    task = load_task(f"folder:{tmp_path}")
    assert task.classes == ["high", "low", "mid"] and not task.multilabel
    assert task.is_test.sum() == 6  # seeded, stratified 80/20: 2 of 10 per class
    out = probe(f"folder:{tmp_path}", "random:wav2vec2-tiny", ["layer_0", "layer_1"], tmp_path / "out", epochs=50)
    assert out["task"] == f"folder:{tmp_path}" and list(out["layers"]) == ["layer_0", "layer_1"]
    for v in out["layers"].values():
        assert set(v) == {"f1", "f1_macro", "f1_shuffled", "f1_macro_shuffled", "n_train", "n_test", "n_classes"}
        assert (v["n_train"], v["n_test"], v["n_classes"]) == (24, 6, 3)
        assert 0 <= v["f1"] <= 1 and 0 <= v["f1_shuffled"] <= 1
    assert np.load(tmp_path / "out" / "features_layer_0.npy").shape[0] == 30
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == out


def test_cli_probe_and_bad_task_one_line(tmp_path, capsys):
    from core.cli import main

    spec = _folder(tmp_path / "t", [(f"a{i}.wav", "x" if i % 2 else "y") for i in range(10)])
    assert main(["-q", "probe", "--task", spec, "--model", "random:wav2vec2-tiny", "--layers", "1",
                 "--out", str(tmp_path / "o"), "--epochs", "20"]) == 0
    assert list(json.loads(capsys.readouterr().out)["layers"]) == ["layer_1"]
    assert main(["-q", "probe", "--task", f"folder:{tmp_path}/nope", "--model", "random:wav2vec2-tiny",
                 "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err


@pytest.mark.parametrize("case,match", [
    ("missing", "missing file"),
    ("empty_label", "empty label"),
    ("empty", "no rows"),
    ("columns", "columns"),
    ("nonwav", "not a .wav"),
    ("unknown", "unknown class"),
    ("test_only", "only in the test split"),
    ("split", "must be train or test"),
    ("one_class", "at least 2"),
])
def test_folder_bad_inputs(tmp_path, case, match):
    rows = [(f"c{i}.wav", "a" if i % 2 else "b") for i in range(6)]
    if case == "missing":
        _folder(tmp_path, rows)
        (tmp_path / "c3.wav").unlink()
    elif case == "empty_label":
        _folder(tmp_path, rows[:3] + [("c3.wav", "")] + rows[4:])
    elif case == "empty":
        _folder(tmp_path, [])
    elif case == "columns":
        _folder(tmp_path, rows, header="path,class")
    elif case == "nonwav":
        _folder(tmp_path, rows + [("notes.mp3", "a")])
    elif case == "unknown":
        _folder(tmp_path, rows)
        (tmp_path / "classes.txt").write_text("a\n")
    elif case == "test_only":
        _folder(tmp_path, [(f, lab, "train") for f, lab in rows] + [("z.wav", "c", "test")],
                header="file,label,split")
    elif case == "split":
        _folder(tmp_path, [(f, lab, "dev") for f, lab in rows], header="file,label,split")
    elif case == "one_class":
        _folder(tmp_path, [(f, "a") for f, _ in rows])
    with pytest.raises(DataError, match=match) as err:
        load_task(f"folder:{tmp_path}")
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def tiny_demo():
    from core.data.demo import DemoConfig, open_demo

    return open_demo(DemoConfig.tiny())


def test_demo_tasks_consistent_with_word_events(tiny_demo):
    from core.data.demo import text
    from core.data.textgrid import clean_phone

    words = load_task("demo:word-identity", dataset=tiny_demo, n_words=10)
    assert len(words.classes) == 10 and not words.multilabel
    for clip, lab, cid in zip(words.clips[:50], words.labels, words.ids):
        story, idx = cid.split(":w")
        ev = tiny_demo.words(story)
        assert ev.labels[int(idx)] == lab[0]
        assert abs(len(clip) / 16000 - (ev.offsets[int(idx)] - ev.onsets[int(idx)])) < 1e-3
    ph = load_task("demo:phonemes", dataset=tiny_demo)
    assert ph.multilabel and len(ph.classes) == 39 and ph.targets().shape == (len(ph.clips), 39)
    cid, labs = ph.ids[0], ph.labels[0]
    story, idx = cid.split(":w")
    ev, pev = tiny_demo.words(story), tiny_demo.phones(story)
    inside = [clean_phone(p) for p, m in zip(pev.labels, pev.mids)
              if ev.onsets[int(idx)] <= m < ev.offsets[int(idx)]]
    assert set(labs) == {p for p in inside if p}
    st = load_task("demo:sentence-type", dataset=tiny_demo)
    assert set(st.classes) <= set(text.TEMPLATES)
    for story in tiny_demo.stories:  # the parse covers every word, each sentence matches its template
        w = list(tiny_demo.words(story).labels)
        parts = parse_sentences(w)
        assert parts[0][0] == 0 and parts[-1][1] == len(w)
        assert all(b == c for (_, b, _), (c, _, _) in zip(parts, parts[1:]))
        assert all(len(text.TEMPLATES[k].split()) == j - i for i, j, k in parts)
    with pytest.raises(DataError, match="cannot parse"):
        parse_sentences(["banana", "the"])
