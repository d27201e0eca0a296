"""Downstream linear probes on time-averaged layer states (paper evaluation 3).

Released-code settings (``paper-method.md``, "What the released code does"): the time-mean of a
layer's hidden states over a clip → one linear layer, trained full-batch with Adam (lr 1e-3) for
50–100 epochs (default here 100); multi-label binary cross-entropy for phoneme sets, cross-entropy
otherwise; F1 micro and macro (``sklearn.metrics.f1_score``) on the held-out split.

Project choices (documented differences): features are standardised with the training split's
mean and standard deviation (raw hidden states of different layers differ in scale by orders of
magnitude; full-batch Adam at lr 1e-3 for 100 steps only moves weights by ~0.1, so unscaled features
would make layers incomparable); multi-label predictions are ``sigmoid > 0.5`` and label columns
without a positive training clip are dropped (they cannot be learned, and would only add zero-F1
columns to the macro mean); single-label macro F1 averages over the classes of the task.

Control: every probe is also trained on the training labels randomly permuted (seeded), evaluated on
the same true test labels — it should stay at chance.

Clip features (:func:`clip_features`): each clip runs through the model (no grad, eval mode) with
``output_hidden_states=True``; the hidden states of the frames covering real audio are averaged.
Clips are sorted by length and batched; shorter clips in a batch are zero-padded to the longest,
whose frames beyond the clip's own are excluded from the mean (padding still reaches the real
frames through attention — ``batch_size=1`` is exact; sorting keeps the padding small). Whisper
runs on the clip's own length (the positional table sliced, ``whisper_hidden_states``) rather than
padded to 30 s.
"""

from __future__ import annotations

from typing import Dict, Sequence

import numpy as np

from core.errors import ConfigError, DataError
from core.progress import ProgressFn, report

EPOCHS = 100  #: released code: 50–100
LR = 1e-3  #: released code
CODE_TAG = "probes-v1"


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple:
    mu, sd = train.mean(0), train.std(0)
    sd = np.where(sd > 1e-8, sd, 1.0)
    return ((train - mu) / sd).astype(np.float32), ((test - mu) / sd).astype(np.float32)


def fit_linear_probe(X_train: np.ndarray, y_train: np.ndarray, multilabel: bool, n_classes: int,
                     epochs: int = EPOCHS, lr: float = LR, seed: int = 0):
    """Train one ``torch.nn.Linear`` full-batch with Adam; returns ``predict(X) -> labels``
    (``(n,)`` int, or ``(n, n_classes)`` 0/1 if multi-label). ``X_train`` already standardised."""
    import torch

    if int(epochs) < 1 or not lr > 0:
        raise ConfigError(f"epochs={epochs} (≥ 1) and lr={lr} (> 0) are required")
    g = torch.Generator().manual_seed(int(seed))
    x = torch.as_tensor(np.asarray(X_train, np.float32))
    lin = torch.nn.Linear(x.shape[1], n_classes)
    with torch.no_grad():  # seeded init (independent of the global torch RNG)
        bound = 1.0 / np.sqrt(x.shape[1])
        lin.weight.uniform_(-bound, bound, generator=g)
        lin.bias.uniform_(-bound, bound, generator=g)
    if multilabel:
        y = torch.as_tensor(np.asarray(y_train, np.float32))
        loss_fn = torch.nn.BCEWithLogitsLoss()
    else:
        y = torch.as_tensor(np.asarray(y_train, np.int64))
        loss_fn = torch.nn.CrossEntropyLoss()
    opt = torch.optim.Adam(lin.parameters(), lr=lr)
    with torch.enable_grad():
        for _ in range(int(epochs)):
            opt.zero_grad()
            loss = loss_fn(lin(x), y)
            loss.backward()
            opt.step()

    def predict(X: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            z = lin(torch.as_tensor(np.asarray(X, np.float32)))
        return (z > 0).numpy().astype(np.int64) if multilabel else z.argmax(1).numpy()

    return predict


def _f1(y_true, y_pred, multilabel: bool, n_classes: int) -> tuple:
    from sklearn.metrics import f1_score

    kw = {"zero_division": 0}
    if not multilabel:
        kw["labels"] = list(range(n_classes))
    return (float(f1_score(y_true, y_pred, average="micro", **kw)),
            float(f1_score(y_true, y_pred, average="macro", **kw)))


def probe_scores(X: np.ndarray, y: np.ndarray, is_test: np.ndarray, multilabel: bool,
                 epochs: int = EPOCHS, lr: float = LR, seed: int = 0) -> Dict[str, object]:
    """F1 of a linear probe and of its shuffled-label control on one feature matrix.

    Parameters
    ----------
    X : ``(n_clips, n_features)`` time-averaged layer states.
    y : ``(n_clips,)`` class indices, or ``(n_clips, n_classes)`` 0/1 indicators if ``multilabel``.
    is_test : ``(n_clips,)`` bool held-out split.

    Returns
    -------
    ``{"f1", "f1_macro", "f1_shuffled", "f1_macro_shuffled", "n_train", "n_test", "n_classes"}``
    (``n_classes``: classes scored — multi-label columns with a training positive).
    """
    X = np.asarray(X, np.float32)
    is_test = np.asarray(is_test, bool)
    if X.ndim != 2 or X.shape[0] != len(y) or is_test.shape != (X.shape[0],):
        raise DataError(f"probe features {X.shape}, labels {np.shape(y)} and split {is_test.shape} "
                        "do not have the same number of clips")
    if not np.all(np.isfinite(X)):
        raise DataError("probe features hold NaN/inf values; check the model and the clips")
    if is_test.all() or not is_test.any():
        raise DataError("the probe split has no train or no test clips")
    y = np.asarray(y)
    if multilabel:
        cols = np.flatnonzero(y[~is_test].sum(0) > 0)
        y = y[:, cols]
        n_classes = len(cols)
    else:
        n_classes = int(y.max()) + 1
    if n_classes < 2:
        raise DataError(f"the probe's training split has {n_classes} class(es); need at least 2")
    xtr, xte = _standardise(X[~is_test], X[is_test])
    ytr, yte = y[~is_test], y[is_test]
    pred = fit_linear_probe(xtr, ytr, multilabel, n_classes, epochs, lr, seed)(xte)
    perm = np.random.default_rng(np.random.SeedSequence([int(seed), 13])).permutation(len(ytr))
    pred_s = fit_linear_probe(xtr, ytr[perm], multilabel, n_classes, epochs, lr, seed)(xte)
    f1, f1m = _f1(yte, pred, multilabel, n_classes)
    f1s, f1ms = _f1(yte, pred_s, multilabel, n_classes)
    return {"f1": f1, "f1_macro": f1m, "f1_shuffled": f1s, "f1_macro_shuffled": f1ms,
            "n_train": int((~is_test).sum()), "n_test": int(is_test.sum()), "n_classes": int(n_classes)}


def clip_features(model, clips: Sequence[np.ndarray], layers: Sequence[str], batch_size: int = 16,
                  progress: ProgressFn = None) -> Dict[str, np.ndarray]:
    """Time-averaged hidden states ``{layer: (n_clips, hidden) float32}`` of 16 kHz ``clips``.

    ``model`` a :class:`core.models.SpeechModel` (``load_model(spec)``). See the module docstring
    for batching; raises :class:`DataError` for a clip too short to give one output frame.
    """
    import torch

    from core.features.layers import _receptive_field, whisper_hidden_states

    idx = [model.layer_index(layer) for layer in layers]
    dev = next(model.module.parameters()).device
    whisper = model.family == "whisper"
    need = model.preprocessor.hop_length * 2 if whisper else _receptive_field(model.module.config)
    lengths = np.array([len(c) for c in clips])
    short = np.flatnonzero(lengths < need)
    if len(short):
        raise DataError(f"clip {int(short[0])} has {int(lengths[short[0]])} samples, fewer than {model.spec} "
                        f"needs for one frame ({need}); drop or lengthen such clips")
    if whisper and lengths.max() > model.preprocessor.n_samples:
        raise DataError(f"a clip is longer than Whisper's 30 s input ({lengths.max() / 16000:.1f} s); "
                        "cut it into shorter clips")
    order = np.argsort(lengths, kind="stable")
    out = {i: np.zeros((len(clips), 0), np.float32) for i in idx}
    rows: Dict[int, list] = {i: [None] * len(clips) for i in idx}
    with torch.inference_mode():
        for start in range(0, len(order), int(batch_size)):
            batch = order[start:start + int(batch_size)]
            waves = [np.asarray(clips[k], np.float32) for k in batch]
            if whisper:
                feats = model.preprocessor(waves, sampling_rate=model.sample_rate, return_tensors="pt",
                                           padding="longest").input_features
                hs = whisper_hidden_states(model.module, feats.to(dev), idx)
                n_frames = [max(1, (len(w) // model.preprocessor.hop_length) // 2) for w in waves]
            else:
                values = model.preprocessor(waves, sampling_rate=model.sample_rate, return_tensors="pt",
                                            padding="longest").input_values
                all_hs = model.module(values.to(dev), output_hidden_states=True).hidden_states
                hs = {i: all_hs[i] for i in idx}
                n_frames = [int(model.module._get_feat_extract_output_lengths(len(w))) for w in waves]
            for i in idx:
                h = hs[i].float()
                for b, k in enumerate(batch):
                    rows[i][k] = h[b, :min(n_frames[b], h.shape[1])].mean(0).cpu().numpy()
            report(progress, min(1.0, (start + len(batch)) / len(order)), f"clips {start + len(batch)}/{len(order)}")
    for i in idx:
        out[i] = np.stack(rows[i]).astype(np.float32)
    return {layer: out[model.layer_index(layer)] for layer in layers}
