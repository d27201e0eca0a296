"""Tuning targets: which voxels the brain-tuning head predicts (paper-method.md, "Tuning targets").

Each selector returns ``(voxels, report)``: sorted unique int64 indices into the subject's response
columns and a JSON-able dict (``criterion``, ``n_selected``, ``n_voxels``, ``n_valid`` and the
criterion's settings). Voxels the dataset drops (``dataset.voxel_report(subject).valid`` False: NaN
or constant somewhere) are never selected. A selection of zero voxels is a :class:`ConfigError`
naming the criterion.

- :func:`by_ceiling` — noise ceiling ``cc_max`` > threshold (paper: 0.4), from the test story's
  repeats (``core.pipelines.encode.subject_ceiling``) or a ``.npy`` file of shape ``(n_voxels,)``
  (e.g. the released per-subject arrays).
- :func:`by_roi` — the union of ROI and/or ROI-group masks (``core.data.roi_groups``).
- :func:`by_encoding` — the top-k voxels by ``cc_norm`` of a pretrained encoding result, at a given
  layer or its best layer (highest mean cc_norm).
- :func:`select_targets` — one of the above from a text spec (CLI / params):
  ``ceiling>0.4``, ``ceiling>0.4@FILE.npy``, ``roi:NAME[,NAME…]`` (ROIs or ROI groups),
  ``top:K@RESULT_DIR`` or ``top:K:LAYER@RESULT_DIR``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from core.errors import ConfigError, DataError

CEILING_THRESHOLD = 0.4  #: paper-method.md "Tuning targets": voxels with noise ceiling > 0.4


def _finish(dataset, subject: str, mask: np.ndarray, criterion: str, **extra) -> Tuple[np.ndarray, dict]:
    valid = np.asarray(dataset.voxel_report(subject).valid, dtype=bool)
    keep = np.asarray(mask, dtype=bool) & valid
    voxels = np.flatnonzero(keep).astype(np.int64)
    if not len(voxels):
        raise ConfigError(f"target criterion {criterion} selects no voxel of subject {subject!r} "
                          f"({int(valid.sum())} valid voxels); loosen it or choose another criterion")
    report = {"criterion": criterion, "n_selected": int(len(voxels)), "n_voxels": int(valid.shape[0]),
              "n_valid": int(valid.sum())}
    report.update(extra)
    return voxels, report


def by_ceiling(dataset, subject: str, threshold: float = CEILING_THRESHOLD,
               ceiling: Union[None, str, Path, np.ndarray] = None) -> Tuple[np.ndarray, dict]:
    """Voxels whose noise ceiling exceeds ``threshold``.

    Parameters
    ----------
    threshold : cc_max threshold, strictly greater (paper: 0.4).
    ceiling : None (from the dataset's repeats via ``subject_ceiling``), a path to a ``.npy`` of
        shape ``(n_voxels,)``, or such an array. NaN entries are never selected.

    Raises
    ------
    ConfigError : non-finite threshold, or nothing selected. DataError : unreadable or
        wrong-shaped ceiling file.
    """
    threshold = float(threshold)
    if not np.isfinite(threshold):
        raise ConfigError(f"ceiling threshold {threshold!r} must be a finite number (paper: 0.4)")
    n = dataset.n_voxels(subject)
    source = "repeats"
    if ceiling is None:
        from core.pipelines.encode import subject_ceiling

        cc = np.asarray(subject_ceiling(dataset, subject), dtype=np.float64)
    elif isinstance(ceiling, (str, Path)):
        path = Path(ceiling).expanduser()
        source = str(path)
        try:
            cc = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise DataError(f"ceiling file {path} does not exist; give a .npy of shape ({n},)") from None
        except (OSError, ValueError) as err:
            raise DataError(f"ceiling file {path} is not a readable .npy ({err}); give one of shape ({n},)") from None
        cc = np.asarray(cc)
        if cc.shape != (n,) or not np.issubdtype(cc.dtype, np.number):
            raise DataError(f"ceiling file {path} holds shape {cc.shape} ({cc.dtype}), expected ({n},) "
                            f"numbers for subject {subject!r}; use that subject's ceiling file")
        cc = cc.astype(np.float64)
    else:
        cc = np.asarray(ceiling, dtype=np.float64)
        source = "array"
        if cc.shape != (n,):
            raise DataError(f"ceiling array has shape {cc.shape}, expected ({n},) for subject {subject!r}")
    with np.errstate(invalid="ignore"):
        mask = np.isfinite(cc) & (cc > threshold)
    return _finish(dataset, subject, mask, f"ceiling>{threshold:g}", threshold=threshold,
                   ceiling_source=source)


def by_roi(dataset, subject: str, names: Sequence[str],
           groups: Optional[Mapping[str, tuple]] = None) -> Tuple[np.ndarray, dict]:
    """Voxels in the union of ROIs and/or ROI groups ``names``.

    ``groups`` : group name → member ROIs (default ``core.data.roi_groups.DEFAULT_ROI_GROUPS``, e.g.
    ``semantic`` = Broca, sPMv, IPS, RSC, FO). A name that is neither is a :class:`ConfigError`
    listing the available ones.
    """
    from core.data.roi_groups import group_masks

    names = [str(x).strip() for x in ([names] if isinstance(names, str) else names) if str(x).strip()]
    if not names:
        raise ConfigError("no ROI or ROI-group name given for the targets; e.g. roi:semantic or roi:Broca,sPMv")
    rois = dataset.rois(subject)
    gm = group_masks(rois, groups, strict=groups is not None)
    mask = np.zeros(dataset.n_voxels(subject), dtype=bool)
    used = {}
    for name in names:
        if name in rois:
            mask |= np.asarray(rois[name], dtype=bool)
            used[name] = [name]
        elif name in gm:
            mask |= gm[name]["mask"]
            used[name] = list(gm[name]["members"])
        else:
            raise ConfigError(f"{name!r} is neither an ROI nor an ROI group of subject {subject!r}; "
                              f"available: {', '.join(sorted(set(rois) | set(gm)))}")
    return _finish(dataset, subject, mask, "roi:" + ",".join(names), rois=used)


def by_encoding(dataset, subject: str, result, k: int, layer: Optional[str] = None) -> Tuple[np.ndarray, dict]:
    """The ``k`` valid voxels with the highest test ``cc_norm`` in a pretrained encoding result.

    Parameters
    ----------
    result : an :class:`core.encoding.EncodingResult` or its folder (``encode --out DIR``).
    k : number of voxels (fewer when fewer have a finite cc_norm; the report says so).
    layer : layer name, or None / ``"best"`` for the layer with the highest mean cc_norm.
    """
    from core.encoding import EncodingResult

    if int(k) < 1:
        raise ConfigError(f"top-k target count {k!r} must be ≥ 1")
    k = int(k)
    res = result if isinstance(result, EncodingResult) else EncodingResult.load(Path(result))
    src = str(result) if not isinstance(result, EncodingResult) else res.features
    n = dataset.n_voxels(subject)
    if res.subject != subject:
        raise ConfigError(f"encoding result {src} is of subject {res.subject!r}, not {subject!r}; "
                          "encode this subject first")
    if not res.layers:
        raise DataError(f"encoding result {src} holds no layer scores; encode again")
    if layer in (None, "best"):
        layer = max(res.layers, key=lambda name: np.nanmean(res.layers[name].cc_norm)
                    if np.isfinite(res.layers[name].cc_norm).any() else -np.inf)
    elif layer not in res.layers:
        raise ConfigError(f"layer {layer!r} is not in encoding result {src}; available: "
                          f"{', '.join(res.layers)}")
    cc = np.asarray(res.layers[layer].cc_norm, dtype=np.float64)
    if cc.shape != (n,):
        raise DataError(f"encoding result {src} has {cc.shape[0]} voxels, subject {subject!r} has {n}; "
                        "use a result of this dataset")
    valid = np.asarray(dataset.voxel_report(subject).valid, dtype=bool)
    score = np.where(np.isfinite(cc) & valid, cc, -np.inf)
    order = np.argsort(-score, kind="stable")[:k]
    order = order[np.isfinite(score[order])]
    mask = np.zeros(n, dtype=bool)
    mask[order] = True
    return _finish(dataset, subject, mask, f"top:{k}:{layer}", k=k, layer=layer, source=src,
                   min_cc_norm=float(score[order].min()) if len(order) else None)


def select_targets(dataset, subject: str, spec: str) -> Tuple[np.ndarray, dict]:
    """Voxels from a text spec (see the module docstring); ConfigError naming a malformed spec."""
    text = str(spec).strip()
    if text.startswith("ceiling"):
        rest = text[len("ceiling"):]
        thr, _, path = rest.partition("@")
        thr = thr.strip()
        if thr and not thr.startswith(">"):
            raise ConfigError(f"target spec {spec!r}: write ceiling>0.4 or ceiling>0.4@FILE.npy")
        try:
            value = float(thr[1:]) if thr else CEILING_THRESHOLD
        except ValueError:
            raise ConfigError(f"target spec {spec!r}: threshold {thr[1:]!r} is not a number") from None
        return by_ceiling(dataset, subject, value, path.strip() or None)
    if text.startswith("roi:"):
        return by_roi(dataset, subject, text[4:].split(","))
    if text.startswith("top:"):
        head, sep, path = text[4:].partition("@")
        k, _, layer = head.partition(":")
        if not sep or not path.strip():
            raise ConfigError(f"target spec {spec!r}: write top:K@RESULT_DIR or top:K:LAYER@RESULT_DIR")
        try:
            kk = int(k)
        except ValueError:
            raise ConfigError(f"target spec {spec!r}: {k!r} is not a voxel count") from None
        return by_encoding(dataset, subject, path.strip(), kk, layer.strip() or None)
    raise ConfigError(f"unknown target spec {spec!r}; use ceiling>0.4[@FILE.npy], roi:NAME[,NAME], "
                      "or top:K[:LAYER]@RESULT_DIR")
