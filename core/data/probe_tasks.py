"""Downstream probe tasks (paper evaluation 3): labelled audio clips with a train/test split.

Task specs
----------
``folder:<path>`` — a folder of ``.wav`` files plus ``labels.csv`` with a header holding the
columns ``file,label`` and optionally ``split``:

- ``file``: a wav file name relative to the folder; ``label``: the class; a multi-label clip lists
  its labels separated by ``;`` (any ``;`` in the column makes the task multi-label, e.g. a
  phoneme set ``AH;K;T``); ``split``: ``train`` or ``test``. Without a split column a seeded
  80/20 split is drawn (stratified by class when every class has ≥ 2 clips; multi-label tasks and
  rarer classes: a plain seeded permutation).
- an optional ``classes.txt`` (one class per line) fixes the label set: a label not in it is an
  error ("unknown class"); without it, a test label never seen in training is an error.
- errors (one line each, :class:`DataError`): missing folder or CSV, wrong columns, no rows, empty
  label cells, files that are not ``.wav``, files named but missing, unreadable audio, unknown
  classes, bad split values, a task with fewer than 2 classes or an empty train/test side.

``demo:<name>`` — cut from the demo stories (``load_dataset("demo")``, or a given demo dataset), so
probes run offline:

- ``demo:word-identity``: word-aligned clips (word onset → offset) of the ``n_words`` (20) most
  frequent words, at most ``max_per_class`` (60) clips per word (seeded choice); label = the word.
- ``demo:phonemes``: word clips with the set of ARPAbet phones (``clean_phone``, 39 classes) whose
  phone events have their midpoint inside the word, as multi-label targets; ``max_clips`` (1200)
  words drawn (seeded).
- ``demo:sentence-type``: sentence clips (first word's onset → last word's offset) labelled with
  the demo template that generated them (``core.data.demo.text.TEMPLATES``, 15 types such as
  ``"the A P V the T at the L"``). Sentences are not stored in the demo, so each story's word
  sequence is parsed back into templates (a dynamic programme matching every template's literal
  words and slot vocabularies); a story whose words cannot be parsed is an error.

Demo tasks use the same seeded (stratified) 80/20 split.
"""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from core.errors import ConfigError, DataError
from core.store import key_hash

SAMPLE_RATE = 16000
TEST_FRACTION = 0.2
CODE_TAG = "probe-tasks-v1"
DEMO_TASKS = ("word-identity", "phonemes", "sentence-type")


@dataclass
class ProbeTask:
    """Labelled clips. ``labels[i]`` is a tuple of class names (one for single-label tasks);
    ``is_test`` ``(n,)`` bool; ``classes`` sorted; ``key`` hashes clips, labels and split."""

    name: str
    clips: List[np.ndarray]
    labels: List[Tuple[str, ...]]
    classes: List[str]
    multilabel: bool
    is_test: np.ndarray
    ids: List[str] = field(default_factory=list)
    key: str = ""

    def __post_init__(self):
        if not self.key:
            h = hashlib.sha1()
            for c in self.clips:
                h.update(np.ascontiguousarray(c, np.float32).tobytes())
                h.update(b"|")
            digest = h.hexdigest()
            self.key = key_hash(CODE_TAG, self.name, digest, [list(lab) for lab in self.labels],
                                self.is_test.tolist(), self.multilabel)

    def targets(self) -> np.ndarray:
        """``(n,)`` int64 class indices, or ``(n, n_classes)`` float32 indicators if multi-label."""
        index = {c: i for i, c in enumerate(self.classes)}
        if self.multilabel:
            y = np.zeros((len(self.labels), len(self.classes)), np.float32)
            for i, labs in enumerate(self.labels):
                y[i, [index[lab] for lab in labs]] = 1.0
            return y
        return np.array([index[labs[0]] for labs in self.labels], np.int64)


def seeded_split(labels: Sequence[Tuple[str, ...]], multilabel: bool, seed: int = 0,
                 test_fraction: float = TEST_FRACTION) -> np.ndarray:
    """``is_test`` (n,) bool: a seeded split, stratified by class for single-label tasks whose
    classes all have ≥ 2 clips (each such class then has ≥ 1 test and ≥ 1 train clip)."""
    n = len(labels)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7]))
    is_test = np.zeros(n, bool)
    counts = Counter(labs[0] for labs in labels) if not multilabel else None
    if counts and min(counts.values()) >= 2:
        for c in sorted(counts):
            idx = np.array([i for i, labs in enumerate(labels) if labs[0] == c])
            k = min(len(idx) - 1, max(1, int(round(test_fraction * len(idx)))))
            is_test[rng.choice(idx, size=k, replace=False)] = True
    else:
        k = max(1, int(round(test_fraction * n)))
        is_test[rng.permutation(n)[:k]] = True
    return is_test


def _finish(name: str, clips, labels, ids, is_test, multilabel: bool, allowed: Optional[set] = None,
            where: str = "") -> ProbeTask:
    train_classes = {c for lab, t in zip(labels, is_test) for c in lab if not t}
    all_classes = {c for lab in labels for c in lab}
    if allowed is not None:
        unknown = sorted(all_classes - allowed)
        if unknown:
            raise DataError(f"{where}: unknown class(es) {unknown[:5]} not in classes.txt; fix the labels "
                            "or add them to classes.txt")
    elif not multilabel and sorted(all_classes - train_classes):
        raise DataError(f"{where}: class(es) {sorted(all_classes - train_classes)[:5]} occur only in the "
                        "test split; give them training clips")
    if len(all_classes) < 2:
        raise DataError(f"{where}: the task has {len(all_classes)} class(es); a probe needs at least 2")
    if is_test.all() or not is_test.any():
        raise DataError(f"{where}: the {'train' if is_test.all() else 'test'} split is empty; put clips "
                        "on both sides (split column train/test)")
    classes = sorted(allowed) if allowed is not None else sorted(all_classes)
    return ProbeTask(name, clips, labels, classes, multilabel, np.asarray(is_test, bool), ids)


# -- folder:<path> --------------------------------------------------------------------------------

def load_folder_task(path, seed: int = 0) -> ProbeTask:
    """A ``folder:<path>`` task (format and errors: module docstring)."""
    from core.data.audio import load_audio

    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"probe task folder {root} does not exist; give folder:<dir with wavs and labels.csv>")
    csv_path = root / "labels.csv"
    if not csv_path.is_file():
        raise DataError(f"{csv_path} is missing; add a labels.csv with columns file,label[,split]")
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        if "file" not in cols or "label" not in cols or set(cols) - {"file", "label", "split"}:
            raise DataError(f"{csv_path} has columns {cols}; need a header with file,label and "
                            "optionally split")
        rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader]
    rows = [r for r in rows if any(r.values())]
    if not rows:
        raise DataError(f"{csv_path} has no rows: the task is empty; list one clip per row")
    allowed = None
    if (root / "classes.txt").is_file():
        allowed = {ln.strip() for ln in (root / "classes.txt").read_text().splitlines() if ln.strip()}
    multilabel = any(";" in r["label"] for r in rows)
    labels, clips, ids, splits = [], [], [], []
    missing = []
    for line, r in enumerate(rows, start=2):
        name = r["file"]
        labs = tuple(sorted({x.strip() for x in r["label"].split(";") if x.strip()}))
        if not labs:
            raise DataError(f"{csv_path} line {line}: empty label for {name!r}; give every clip a class")
        if not name.lower().endswith(".wav"):
            raise DataError(f"{csv_path} line {line}: {name!r} is not a .wav file; convert it to wav")
        if not (root / name).is_file():
            missing.append(name)
            continue
        labels.append(labs)
        ids.append(name)
        if "split" in r:
            sp = r["split"].lower()
            if sp not in ("train", "test"):
                raise DataError(f"{csv_path} line {line}: split {r['split']!r} must be train or test")
            splits.append(sp == "test")
    if missing:
        raise DataError(f"{csv_path} names {len(missing)} missing file(s) in {root}, e.g. {missing[:3]}; "
                        "add them or remove their rows")
    for name in ids:
        clips.append(load_audio(root / name))
    is_test = np.array(splits, bool) if splits else seeded_split(labels, multilabel, seed)
    return _finish(f"folder:{root}", clips, labels, ids, is_test, multilabel, allowed, where=str(csv_path))


# -- demo:<name> ----------------------------------------------------------------------------------

def _clip(audio: np.ndarray, on: float, off: float) -> np.ndarray:
    return np.asarray(audio[int(round(on * SAMPLE_RATE)):int(round(off * SAMPLE_RATE))], np.float32)


def _slot_vocab() -> dict:
    from core.data.demo import text

    vocab = {s: set() for s in "P L T M V I A".split()}
    for slots in text.TOPICS.values():
        for s, items in slots.items():
            vocab[s].update(items)
    vocab["TP"] = {text.plural(t) for t in vocab["T"]}
    vocab["PP"] = vocab["P"]
    vocab.update(E=set(text.EMOTIONS), N=set(text.NUMBERS), G=set(text.MOTION), S=set(text.PRONOUNS))
    return vocab


def parse_sentences(words: Sequence[str]) -> List[Tuple[int, int, int]]:
    """Parse a demo story's word sequence back into its sentences: ``[(start, stop, template)]``
    (word index range, index into ``TEMPLATES``). Raises :class:`DataError` if no parse exists."""
    from core.data.demo import text

    vocab = _slot_vocab()
    toks = [tpl.split() for tpl in text.TEMPLATES]

    def fits(i: int, tok: list) -> bool:
        if i + len(tok) > len(words):
            return False
        return all(w == t if t.islower() else w in vocab[t] for w, t in zip(words[i:i + len(tok)], tok))

    n = len(words)
    back = [None] * (n + 1)
    back[0] = (-1, -1)
    for i in range(n):
        if back[i] is None:
            continue
        for k, tok in enumerate(toks):
            j = i + len(tok)
            if j <= n and back[j] is None and fits(i, tok):
                back[j] = (i, k)
    if n == 0 or back[n] is None:
        raise DataError(f"cannot parse {n} demo words into the demo's sentence templates; rebuild the demo")
    out, j = [], n
    while j > 0:
        i, k = back[j]
        out.append((i, j, k))
        j = i
    return out[::-1]


def demo_task(name: str, dataset=None, seed: int = 0, n_words: int = 20, max_per_class: int = 60,
              max_clips: int = 1200) -> ProbeTask:
    """A built-in task cut from the demo stories (see the module docstring)."""
    from core.data.textgrid import clean_phone
    from core.features.lowlevel import PHONES

    if name not in DEMO_TASKS:
        raise ConfigError(f"unknown demo task {name!r}; expected one of "
                          f"{', '.join('demo:' + t for t in DEMO_TASKS)}")
    if dataset is None:
        from core.data import load_dataset

        dataset = load_dataset("demo")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 11]))
    items = []  # (story, onset, offset, labels, id)
    for story in dataset.stories:
        ev = dataset.words(story)
        words = [str(w) for w in ev.labels]
        if name == "sentence-type":
            from core.data.demo import text

            for i, j, k in parse_sentences(words):
                items.append((story, ev.onsets[i], ev.offsets[j - 1], (text.TEMPLATES[k],), f"{story}:s{i}"))
        elif name == "word-identity":
            for i, w in enumerate(words):
                items.append((story, ev.onsets[i], ev.offsets[i], (w,), f"{story}:w{i}"))
        else:
            ph = dataset.phones(story)
            mids = np.asarray(ph.mids)
            cleaned = [clean_phone(lab) for lab in ph.labels]
            for i, w in enumerate(words):
                inside = (mids >= ev.onsets[i]) & (mids < ev.offsets[i])
                labs = tuple(sorted({cleaned[k] for k in np.flatnonzero(inside) if cleaned[k] in PHONES}))
                if labs:
                    items.append((story, ev.onsets[i], ev.offsets[i], labs, f"{story}:w{i}"))
    if name == "word-identity":
        top = [w for w, _ in sorted(Counter(it[3][0] for it in items).items(), key=lambda x: (-x[1], x[0]))]
        keep = []
        for w in top[:n_words]:
            idx = [i for i, it in enumerate(items) if it[3][0] == w]
            if len(idx) > max_per_class:
                idx = sorted(rng.choice(idx, size=max_per_class, replace=False).tolist())
            keep += idx
        items = [items[i] for i in sorted(keep)]
    elif name == "phonemes" and len(items) > max_clips:
        items = [items[i] for i in sorted(rng.choice(len(items), size=max_clips, replace=False).tolist())]
    if not items:
        raise DataError(f"demo:{name}: the demo dataset gave no clips; rebuild the demo")
    audio = {s: np.asarray(dataset.audio(s), np.float32) for s in {it[0] for it in items}}
    clips = [_clip(audio[s], on, off) for s, on, off, _, _ in items]
    labels = [it[3] for it in items]
    multilabel = name == "phonemes"
    is_test = seeded_split(labels, multilabel, seed)
    task = _finish(f"demo:{name}", clips, labels, [it[4] for it in items], is_test, multilabel,
                   allowed=set(PHONES) if multilabel else None, where=f"demo:{name}")
    task.key = key_hash(task.key, dataset.fingerprint(), n_words, max_per_class, max_clips, seed)
    return task


def load_task(spec: str, dataset=None, seed: int = 0, **kwargs) -> ProbeTask:
    """Resolve a task spec: ``folder:<path>`` or ``demo:<word-identity|phonemes|sentence-type>``."""
    prefix, sep, rest = str(spec).partition(":")
    if prefix == "folder" and sep and rest.strip():
        return load_folder_task(rest.strip(), seed=seed)
    if prefix == "demo" and sep and rest.strip():
        return demo_task(rest.strip(), dataset=dataset, seed=seed, **kwargs)
    raise ConfigError(f"unknown probe task {spec!r}; expected folder:<path> or demo:<"
                      f"{'|'.join(DEMO_TASKS)}>")
