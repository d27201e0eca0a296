"""The ``encode`` pipeline: Dataset + feature source → FeatureSet → EncodingResult (+ provenance).

The one place that knows datasets, feature sources and results together. Stages:

1. stories — the protocol's training stories (``project``: the dataset's split; ``released``: the
   released code's 24 stories, those present; or ``params.train_stories``), the test story;
   stories the subject lacks, or whose features cannot be made, are skipped with a warning (logger
   ``core``; the CLI prints it on stderr) and listed in ``provenance["skipped"]`` — never silently;
2. features — :class:`core.features.featureset.FeatureSet` through the cached TR pipeline;
3. designs and fit — :meth:`FeatureSet.designs` and :func:`core.encoding.fit.fit_encoding`;
4. provenance — everything that changes the numbers (data and source fingerprints, feature window
   mode, protocol and all parameters, stories, skipped stories, ROI groups, code and packages).
"""

from __future__ import annotations

import logging
import platform
import time
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from core.encoding.params import RELEASED_TRAIN_STORIES, EncodeParams
from core.errors import ConfigError, DataError
from core.progress import ProgressFn, report, sub_progress
from core.store import check_result_dir, key_hash

CODE_VERSION = "encode-v2"  #: bump when the meaning of an encoding result changes
log = logging.getLogger("core")


def package_versions() -> dict:
    """Versions of the packages that determine the numbers (for provenance)."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("numpy", "scipy", "torch", "himalaya", "transformers", "h5py", "pycortex"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def _skipped_for(dataset, subject: str) -> list:
    """Stories the subject lacks, from the dataset's own report (partial downloads)."""
    fn = getattr(dataset, "skipped_for", None)
    return list(fn(subject)) if fn is not None else []


def choose_stories(dataset, subject: str, params: EncodeParams) -> dict:
    """Training and test stories of ``subject`` under ``params``.

    Returns
    -------
    ``{"train": [...], "test": [story], "source": str, "skipped": [{"story", "file", "reason"}]}``
    where ``source`` says where the training list came from.
    """
    if subject not in dataset.subjects:
        raise DataError(f"unknown subject {subject!r}; available: {', '.join(dataset.subjects)}")
    split = dataset.split(subject)
    have = set(dataset.subject_stories(subject))
    test = split["test"]
    skipped = _skipped_for(dataset, subject)
    if params.train_stories is not None:
        unknown = [s for s in params.train_stories if s not in dataset.stories]
        if unknown:
            raise ConfigError(f"training stories {unknown} are not in {dataset.spec}; available: "
                              f"{', '.join(dataset.stories)}")
        if dataset.test_story in params.train_stories:
            raise ConfigError(f"the test story {dataset.test_story!r} cannot be a training story")
        lacking = [s for s in params.train_stories if s not in have]
        if lacking:
            raise DataError(f"{subject} has no responses for training stories {lacking}; "
                            f"drop them from --train-stories")
        train, source = list(params.train_stories), "given"
    elif params.protocol == "released":
        listed = [s for s in RELEASED_TRAIN_STORIES if s in dataset.stories]
        if listed:
            train, source = [s for s in listed if s in have], "released list"
            for s in RELEASED_TRAIN_STORIES:
                if s not in have and not any(k["story"] == s for k in skipped):
                    skipped.append({"story": s, "file": None,
                                    "reason": "in the released training list but not in this dataset"})
        else:  # a dataset without the Moth stories (the demo, a user's own): its own split
            train, source = split["train"] + split["val"], "split (no released-list story here)"
    else:
        train, source = split["train"] + split["val"], "split"
    if not train or not test:
        raise DataError(f"subject {subject!r} needs training stories and the test story "
                        f"{dataset.test_story!r}; found train={train}, test={test}")
    return {"train": train, "test": test, "source": source, "skipped": skipped}


def feature_set(dataset, source, layers: Sequence[str], train: list, test: list,
                skipped: list, progress: ProgressFn = None):
    """The FeatureSet of ``train + test``; a training story whose features fail (DataError) is
    dropped from ``train`` (in place) and appended to ``skipped``. The test story must work."""
    from core.features.featureset import FeatureSet

    stories = list(train) + list(test)
    arrays, prov = {layer: {} for layer in layers}, {}
    for i, story in enumerate(stories):
        try:
            fs = FeatureSet.from_source(dataset, source, layers, [story],
                                        sub_progress(progress, i / len(stories), (i + 1) / len(stories)))
        except DataError as err:
            if story in test:
                raise
            train.remove(story)
            skipped.append({"story": story, "file": None, "reason": f"features unusable: {err}"})
            continue
        prov = fs.provenance
        for layer in layers:
            arrays[layer][story] = fs.layers[layer][story]
    if not train:
        raise DataError(f"no usable training story for {source.spec}; see the skipped stories above")
    return FeatureSet(spec=source.spec, layers=arrays, provenance=prov)


def _warn_skipped(subject: str, skipped: list) -> None:
    """One warning line per skipped story naming it and its file; stories the dataset never
    recorded for this subject (``kind == "not-recorded"``, e.g. UTS05–08's 27 stories) in one line."""
    quiet = [s["story"] for s in skipped if s.get("kind") == "not-recorded"]
    for item in skipped:
        if item.get("kind") != "not-recorded":
            log.warning("%s: skipped story %s%s: %s", subject, item["story"],
                        f" ({item['file']})" if item.get("file") else "", item["reason"])
    if quiet:
        log.warning("%s: %d stories were never recorded for this subject (not used): %s", subject,
                    len(quiet), ", ".join(quiet[:8]) + (", …" if len(quiet) > 8 else ""))


def encode_subject(dataset, subject: str, source, layers: Optional[Sequence[str]] = None,
                   params: EncodeParams = EncodeParams(), roi_groups: Optional[Mapping] = None,
                   progress: ProgressFn = None):
    """Encode ``source`` for ``subject``: an :class:`core.encoding.result.EncodingResult` with
    provenance (nothing written).

    Parameters
    ----------
    dataset : :class:`core.data.base.Dataset`. subject : e.g. ``"S1"``, ``"UTS01"``.
    source : a feature source (``core.features.source_for``). layers : its layers (None = all).
    params : :class:`EncodeParams` (``EncodeParams.for_protocol("released")`` for the released one).
    roi_groups : group → member ROIs (None: the defaults of ``core.data.roi_groups``).
    """
    from core.data.roi_groups import group_masks
    from core.encoding.fit import fit_encoding
    from core.features.design import response_matrix

    t0 = time.time()
    layers = list(layers) if layers else list(source.layers())
    chosen = choose_stories(dataset, subject, params)
    train, test, skipped = chosen["train"], chosen["test"], chosen["skipped"]
    report(progress, 0.0, "features")
    feats = feature_set(dataset, source, layers, train, test, skipped, sub_progress(progress, 0.0, 0.5))
    _warn_skipped(subject, skipped)
    report(progress, 0.5, "responses")
    voxels = dataset.voxel_report(subject)
    rois = dataset.rois(subject)
    groups = group_masks(rois, roi_groups, strict=roi_groups is not None)
    repeats = dataset.repeats(subject)
    cc_max, ceiling = choose_ceiling(dataset, subject, params, voxels.valid, repeats)
    result = fit_encoding(feats.designs(train, test, params, layers, dataset),
                          response_matrix(dataset, subject, train), repeats, params,
                          valid=voxels.valid, rois=rois, roi_groups=groups, subject=subject,
                          features=source.spec, cc_max=cc_max, progress=sub_progress(progress, 0.5, 1.0))
    result.summary["ceiling"] = ceiling
    result.summary["dropped"] = voxels.summary()
    result.summary["provenance"] = {
        "data": dataset.spec, "dataset_fingerprint": dataset.fingerprint(), **feats.provenance,
        "feature_mode": feats.provenance.get("feature_protocol", {}).get("mode"),
        "protocol": params.protocol, "params": params.to_dict(),
        "train_stories": train, "train_stories_source": chosen["source"], "test_story": test[0],
        "n_repeats": int(dataset.n_repeats(subject)), "skipped": skipped,
        "roi_groups": {g: v["members"] for g, v in groups.items()},
        "code_version": CODE_VERSION, "packages": package_versions(),
        "seconds": round(time.time() - t0, 2),
    }
    return result


def encode(dataset, subject: str, source, layers: Optional[Sequence[str]], out_dir: Path,
           params: EncodeParams = EncodeParams(), roi_groups: Optional[Mapping] = None,
           progress: ProgressFn = None) -> dict:
    """:func:`encode_subject` written to ``out_dir`` (replaced atomically); returns the summary.

    ``out_dir`` must be new, empty or an earlier encode result (it would be replaced).
    """
    out_dir = check_result_dir(out_dir, "an encode result")
    result = encode_subject(dataset, subject, source, layers, params, roi_groups, progress)
    result.save(out_dir, replace=True)
    report(progress, 1.0, "done")
    return result.summary


def encode_key(dataset, subject: str, source, layers: Sequence[str],
               params: EncodeParams = EncodeParams(), roi_groups: Optional[Mapping] = None) -> str:
    """Cache key of an encoding result (dataset, subject, source weights/protocol, layers, params,
    ROI groups, code version)."""
    groups = None if roi_groups is None else {k: list(v) for k, v in roi_groups.items()}
    return key_hash(CODE_VERSION, dataset.fingerprint(), subject, source.fingerprint(), list(layers),
                    params.to_dict(), groups)


def cached_encode(dataset, subject: str, source, layers: Optional[Sequence[str]] = None,
                  params: EncodeParams = EncodeParams(), roi_groups: Optional[Mapping] = None,
                  progress: ProgressFn = None) -> Path:
    """Encode into ``<cache>/encodings/<key>/`` unless it is already there; return the folder.

    Safe under concurrency: two processes computing the same key both finish and the first complete
    folder is kept (content-addressed, never replaced).
    """
    from core.settings import get_settings

    layers = list(layers) if layers else list(source.layers())
    out = get_settings().cache_root / "encodings" / encode_key(dataset, subject, source, layers, params,
                                                               roi_groups)
    if not (out / "summary.json").exists():
        result = encode_subject(dataset, subject, source, layers, params, roi_groups, progress)
        result.save(out, replace=False)
    return out


def choose_ceiling(dataset, subject: str, params: EncodeParams, valid: np.ndarray,
                   repeats: Optional[np.ndarray] = None) -> tuple:
    """The noise ceiling of ``subject``'s test story: from its repeats where it has ≥ 2 (Schoppe),
    else from leave-one-subject-out ISC with the other participants who heard the story
    (``dataset.group_responses``; derivation in ``core.encoding.ceiling``).

    Parameters
    ----------
    valid : ``(n_voxels,)`` bool voxels to compute (others NaN). repeats : the subject's test
        repeats ``(n_repeats, n_trs, n_voxels)`` if already loaded. Rows from ``params.test_start``.

    Returns
    -------
    ``(cc_max (n_voxels,) float64, {"kind": "repeats"|"isc", "n": repeats or others averaged})``;
    the ISC kind adds ``"mean_isc"`` (Fisher-z mean over the valid voxels).
    """
    from core.encoding.ceiling import (ceiling_from_signal_power, fisher_mean,
                                       isc_to_signal_power, subject_isc)
    from core.encoding.fit import repeat_ceiling

    rep = dataset.repeats(subject) if repeats is None else np.asarray(repeats)
    if rep.shape[0] >= 2:
        return repeat_ceiling(rep, params, valid), {"kind": "repeats", "n": int(rep.shape[0])}
    others = dataset.group_responses(subject)
    if others is None:
        raise DataError(f"{subject} has {rep.shape[0]} repeat(s) of the test story "
                        f"{dataset.test_story!r} and {dataset.spec} has no other participants for "
                        "an intersubject ceiling; a noise ceiling needs >= 2 repeats")
    valid = np.asarray(valid, dtype=bool)
    t0 = int(params.test_start)
    if rep.shape[1] <= t0 + 1:
        raise DataError(f"the test story has {rep.shape[1]} response rows; the {params.protocol} "
                        f"protocol scores it from row {t0} and needs more")
    r_isc, k = subject_isc(rep.mean(axis=0)[t0:, valid], (np.asarray(o)[t0:, valid] for o in others))
    if not k.size or k.max() < 1:
        raise DataError(f"no other participant of {dataset.spec} shares {subject}'s voxels on "
                        f"{dataset.test_story!r}; an intersubject ceiling is impossible")
    cc = np.full(rep.shape[2], np.nan)
    cc[valid] = ceiling_from_signal_power(isc_to_signal_power(r_isc, k), int(rep.shape[0]),
                                          undefined=0.0 if params.protocol == "released" else np.nan)
    return cc, {"kind": "isc", "n": int(k.max()), "mean_isc": round(float(fisher_mean(r_isc)), 6)}


def subject_ceiling_info(dataset, subject: str, params: EncodeParams = EncodeParams()) -> tuple:
    """``(cc_max, info)`` of :func:`choose_ceiling` on the subject's kept voxels (NaN for dropped
    ones), cached by dataset fingerprint, subject and the ceiling parameters."""
    from core.store import cached_arrays

    def compute():
        cc, info = choose_ceiling(dataset, subject, params, dataset.voxel_report(subject).valid)
        return {"cc_max": cc, "kind": np.array(info["kind"]), "n": np.array(info["n"]),
                "mean_isc": np.array(info.get("mean_isc", np.nan))}

    key = key_hash(CODE_VERSION, "ceiling-v2", dataset.fingerprint(), subject, params.protocol,
                   params.test_start, params.ceiling_ddof, params.ceiling_zscore)
    arrays = cached_arrays("ceilings", key, compute)
    info = {"kind": str(arrays["kind"]), "n": int(arrays["n"])}
    if info["kind"] == "isc":
        info["mean_isc"] = float(arrays["mean_isc"])
    return arrays["cc_max"], info


def subject_ceiling(dataset, subject: str, params: EncodeParams = EncodeParams()) -> np.ndarray:
    """cc_max ``(n_voxels,)`` float64 of ``subject``'s test story under ``params``' protocol (NaN
    for dropped voxels): from its repeats, or intersubject correlation where it has fewer than 2
    (:func:`choose_ceiling`) — the same array as an encode's ``cc_max.npy``; cached."""
    return subject_ceiling_info(dataset, subject, params)[0]
