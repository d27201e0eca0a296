"""Random-fMRI controls (paper-method.md, "Controls"): the same trainer on mismatched targets.

Only the **training** stories' targets change; the validation story keeps its real responses (early
stopping / the validation loss then tell how much of the real signal the control model fits).

- ``random-story`` — each training story's targets are replaced by another training story's
  (a seeded derangement), trimmed to its length or padded with randomly drawn rows of that story
  (the released code's ``'all'`` control).
- ``chunk-shuffle`` — each training story's rows are cut into chunks of :data:`CHUNK_TRS` TRs and
  chunk ``i`` is swapped with chunk ``i + m//2`` (``m`` whole chunks; a trailing partial chunk stays):
  partners are ``m//2`` chunks apart, ≥ :data:`CHUNK_MIN_APART` when ``m ≥ 20`` ("where possible";
  fewer chunks give the largest distance that pairs all of them). Deterministic (the released
  code's ``'local'`` control: chunks of 15 TRs swapped at least 10 chunks apart).

Representation controls (paper "Controls": BigSLM-tuned / LM-tuned) replace the targets of the
training **and** validation stories (the validation loss must measure the same task):

- ``representation:<feature spec>[#<layer>]`` — the targets are another feature source's features at
  the same rows: :func:`core.features.pipeline.tr_features` at the story's ``R - 5`` TR stamps,
  trimmed ``[10:-5]`` exactly like the released responses (→ the ``R - 20`` response rows) and
  z-scored per story (ddof 0, a constant column → 0, :func:`core.tuning.samples.zscore_story`).
  E.g. ``representation:semantic:minilm`` (a text LM's word embeddings: the LM-tuned control) or
  ``representation:bundled:whisper-base#layer_6`` (a bigger speech model's layer: the BigSLM-tuned
  control). ``#<layer>`` names one of the source's layers (``#6`` means ``layer_6``); without it a
  one-layer source uses its layer and a model its **last** layer (the output). The head then has
  ``n_features`` outputs (``data.report["n_voxels"]`` is set to it; ``data.voxels`` keeps the voxel
  selection, which no longer enters the loss). Only the training and validation stories are passed
  to ``tr_features``: the test story is never read.

The stimulus control (paper "Controls": stimulus-tuned) changes the **loss**, not the targets:

- ``stimulus`` — the model's own self-supervised objective on the same clips, no voxel targets and
  no voxel head: wav2vec2's contrastive + diversity pre-training loss, Whisper's ASR loss on the
  words inside each clip, HuBERT's masked prediction of MFCC k-means clusters (its first iteration;
  transformers has none). See :mod:`core.tuning.stimulus` (model, losses) and
  :mod:`core.tuning.stimulus_data` (clips, labels); the ``tune`` pipeline builds it instead of
  calling :func:`apply_control`, which refuses it. Other families → one-line ConfigError.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from core.errors import ConfigError, DataError

CONTROLS = ("random-story", "chunk-shuffle")  #: random-fMRI controls (training targets only)
REPRESENTATION = "representation"  #: prefix of ``representation:<feature spec>[#<layer>]``
STIMULUS = "stimulus"  #: the model's own self-supervised objective (:mod:`core.tuning.stimulus`)
CONTROL_FORMS = CONTROLS + (STIMULUS, f"{REPRESENTATION}:<feature spec>[#<layer>]")  #: messages / help
CHUNK_TRS = 15  #: chunk length of the chunk-shuffle control (TRs)
CHUNK_MIN_APART = 10  #: minimum distance (chunks) between swapped chunks, where possible


def _unknown(control) -> ConfigError:
    return ConfigError(f"unknown control {control!r}; choose one of {' | '.join(CONTROL_FORMS)}")


def parse_control(control: Optional[str]) -> Optional[dict]:
    """Syntax check of a control name: ``None`` → ``None``; ``{"kind": "random-story" |
    "chunk-shuffle" | "stimulus"}``; or ``{"kind": "representation", "spec": FSPEC, "layer": LAYER or None}``.

    Unknown names or an empty spec/layer → :class:`ConfigError` (one line). The spec itself is
    resolved by :func:`representation_source`.
    """
    if control is None:
        return None
    control = str(control).strip()
    if control in CONTROLS + (STIMULUS,):
        return {"kind": control}
    prefix, sep, rest = control.partition(":")
    if prefix != REPRESENTATION or not sep:
        raise _unknown(control)
    spec, hash_, layer = rest.partition("#")
    spec, layer = spec.strip(), layer.strip()
    if not spec or (hash_ and not layer):
        raise ConfigError(f"control {control!r} needs a feature spec and, after '#', a layer: "
                          f"{REPRESENTATION}:<feature spec>[#<layer>], e.g. {REPRESENTATION}:semantic:minilm "
                          f"or {REPRESENTATION}:bundled:whisper-base#layer_6")
    return {"kind": REPRESENTATION, "spec": spec, "layer": layer or None}


def representation_source(spec: str, layer: Optional[str], data_spec: str = ""):
    """``(source, layer)`` of a representation control: the feature source of ``spec``
    (:func:`core.features.source_for`, the encode command's resolution; model specs get the window
    mode of ``data_spec``) and the resolved layer name (see the module docstring).

    Unknown spec or layer → :class:`ConfigError` naming the available layers.
    """
    from core.features import source_for

    source = source_for(spec, data_spec)
    layers = [str(x) for x in source.layers()]
    if layer is None:
        return source, layers[-1]
    if layer not in layers and layer.isdigit() and f"layer_{layer}" in layers:
        layer = f"layer_{layer}"
    if layer not in layers:
        raise ConfigError(f"representation control: {spec} has no layer {layer!r}; available: "
                          f"{', '.join(layers)}")
    return source, layer


def representation_targets(dataset, stories, source, layer: str, progress=None) -> dict:
    """``{story: (R - 20, n_features) float32}``: ``tr_features`` of ``layer`` trimmed ``[10:-5]``
    to the response rows and z-scored per story. Reads only ``stories``."""
    from core.data import timing
    from core.features.pipeline import tr_features
    from core.tuning.samples import zscore_story

    feats = tr_features(dataset, source, [layer], list(stories), progress=progress)[layer]
    out = {}
    for story in stories:
        x = np.asarray(feats[story])
        if x.ndim != 2 or x.shape[0] <= timing.TRIM_START + timing.TRIM_END:
            raise DataError(f"{source.spec} [{layer}] features of {story!r} have shape {x.shape}; "
                            f"expected (R - 5, n_features) with more than 15 rows")
        out[story] = zscore_story(x[timing.TRIM_START:-timing.TRIM_END])
    return out


def _apply_representation(data, ctl: dict, dataset, progress=None) -> dict:
    if dataset is None:
        raise ConfigError("the representation control needs the dataset (apply_control(..., dataset=ds))")
    source, layer = representation_source(ctl["spec"], ctl["layer"], str(getattr(dataset, "spec", "")))
    splits = (("train", data.train), ("val", data.val))
    stories = [st.name for _, split in splits for st in split._stories]
    targets = representation_targets(dataset, stories, source, layer, progress)
    n_feat = {y.shape[1] for y in targets.values()}
    if len(n_feat) != 1:
        raise DataError(f"{source.spec} [{layer}] gives different feature counts per story: {sorted(n_feat)}")
    for _, split in splits:
        for st in split._stories:
            y = targets[st.name]
            if y.shape[0] != len(st.targets):
                raise DataError(f"{source.spec} [{layer}] features of {st.name!r} give {y.shape[0]} rows "
                                f"after the [10:-5] trim, the responses have {len(st.targets)}")
            st.targets = np.ascontiguousarray(y, dtype=np.float32)
    n = int(n_feat.pop())
    data.report["n_voxels"] = n
    data.report["targets_kind"] = REPRESENTATION
    return {"control": f"{REPRESENTATION}:{ctl['spec']}" + (f"#{ctl['layer']}" if ctl["layer"] else ""),
            "kind": REPRESENTATION, "source": source.spec, "layer": layer, "n_features": n,
            "stories": stories, "trim": [10, -5], "zscore": "per story"}


def apply_control(data, control: Optional[str], seed: int = 0, dataset=None, progress=None) -> dict:
    """Replace ``data``'s targets in place by a control's; returns a report (JSON-able).

    Random-fMRI controls change the training stories only; ``representation:…`` changes the
    training and validation stories and needs ``dataset`` (the :class:`core.data.base.Dataset`
    ``data`` was built from) to compute the features.
    """
    ctl = parse_control(control)
    if ctl is None:
        return {"control": None}
    if ctl["kind"] == REPRESENTATION:
        return _apply_representation(data, ctl, dataset, progress)
    if ctl["kind"] == STIMULUS:
        raise ConfigError("the stimulus control changes the loss, not the targets: run it with "
                          "core.pipelines.tune.tune(..., control='stimulus') (core.tuning.stimulus)")
    control = ctl["kind"]
    stories = data.train._stories
    rng = np.random.default_rng(int(seed))
    if control == "random-story":
        if len(stories) < 2:
            raise ConfigError(f"the random-story control needs ≥ 2 training stories, subject has "
                              f"{len(stories)}; use chunk-shuffle or add stories")
        n = len(stories)
        while True:  # a derangement: no story keeps its own responses
            perm = rng.permutation(n)
            if not np.any(perm == np.arange(n)):
                break
        originals = [s.targets for s in stories]
        pairs = {}
        for i, st in enumerate(stories):
            src = originals[perm[i]]
            L = len(st.targets)
            if len(src) >= L:
                new = src[:L]
            else:
                extra = src[rng.integers(0, len(src), L - len(src))]
                new = np.concatenate([src, extra])
            st.targets = np.ascontiguousarray(new, dtype=np.float32)
            pairs[st.name] = stories[perm[i]].name
        return {"control": control, "seed": int(seed), "source_story": pairs}
    swapped = {}
    for st in stories:
        m = len(st.targets) // CHUNK_TRS
        half = m // 2
        y = st.targets.copy()
        for i in range(half):
            a, b = slice(i * CHUNK_TRS, (i + 1) * CHUNK_TRS), slice((i + half) * CHUNK_TRS, (i + half + 1) * CHUNK_TRS)
            y[a], y[b] = st.targets[b], st.targets[a]
        st.targets = y
        swapped[st.name] = {"chunks": m, "apart": half}
    return {"control": control, "chunk_trs": CHUNK_TRS, "stories": swapped}
