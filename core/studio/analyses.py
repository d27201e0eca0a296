"""The Analyses page's engine calls: each analysis is a background job (:mod:`core.jobs.analysis_kinds`)
whose finished folder holds the same ``summary.json`` and arrays as its CLI command; this module builds
their params, starts / follows them and turns summaries into tables."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from core.errors import ConfigError

#: what each analysis shows (for the page), in the paper's words
ANALYSES = {
    "partition": "Variance partitioning — the unique and shared variance of a semantic and an acoustic "
                 "space per voxel (banded ridge); preference > 0 = semantic-preferring",
    "lowlevel-impact": "Low-level impact — the percent drop of a layer's cc_norm when what low-level "
                       "spaces explain is regressed out of its features (paper evaluation 2)",
    "preference": "Semantic vs phonetic preference per layer — how well each layer predicts word "
                  "embeddings vs phonemes, with bootstrap confidence intervals (paper evaluation 4)",
    "significance": "Significance — per-voxel block-permutation p-values of test r with "
                    "Benjamini–Hochberg FDR",
    "probe": "Downstream probes — linear-probe F1 per layer on a labelled task, with a "
             "shuffled-label control (paper evaluation 3)",
}
GROUP_JOBS = 2  #: parallel fits of the app's group encode (this machine's 2 cores; CLI: --n-jobs)
DEFAULT_REMOVE = ("lowlevel:powspec", "lowlevel:diphones", "lowlevel:triphones", "lowlevel:articulation")
DEMO_TASKS = ("demo:word-identity", "demo:phonemes", "demo:sentence-type")


def params_for(kind: str, data: str, subject: str, source: str, protocol: str = "project",
               spaces: Optional[list] = None, remove: Optional[list] = None, task: Optional[str] = None) -> dict:
    """The job params of analysis ``kind`` for the page's choices (see :mod:`core.jobs.analysis_kinds`)."""
    if kind == "partition":
        spaces = list(spaces or [])
        if len(spaces) != 2 or spaces[0] == spaces[1]:
            raise ConfigError("variance partitioning needs two different feature spaces")
        return {"data": data, "subject": subject, "spaces": spaces, "protocol": protocol}
    if kind == "lowlevel-impact":
        if not remove:
            raise ConfigError("choose at least one low-level space to remove")
        return {"data": data, "subject": subject, "source": source, "layers": None,
                "remove": list(remove), "protocol": protocol}
    if kind == "significance":
        return {"data": data, "subject": subject, "source": source, "layers": None, "protocol": protocol}
    if kind == "preference":
        return {"data": data, "source": source, "layers": None}
    if kind == "encode-group":
        return {"data": data, "subjects": "all", "source": source, "layers": None, "protocol": protocol,
                "n_jobs": GROUP_JOBS}
    if kind == "probe":
        if not task:
            raise ConfigError("choose a probe task (demo:… or folder:<path>)")
        return {"data": data, "task": task, "source": source, "layers": None}
    raise ConfigError(f"unknown analysis {kind!r}; expected one of {', '.join(ANALYSES)}")


def job(kind: str, params: dict) -> Optional[dict]:
    """The analysis job's status if it was ever started, else None."""
    from core.jobs import job_dir, job_status
    from core.jobs.kinds import job_key

    folder = job_dir(kind, job_key(kind, params))
    return job_status(folder) if (folder / "status.json").exists() else None


def launch(kind: str, params: dict) -> Path:
    """Start (or join) the analysis job."""
    from core.jobs import start_job

    return start_job(kind, params)


def result(kind: str, params: dict) -> Optional[Path]:
    """The finished analysis folder (holding ``summary.json``; ``group.json`` for a group encode),
    None before it exists."""
    status = job(kind, params)
    if status and status["state"] == "done" and status.get("result"):
        folder = Path(status["result"])
        if (folder / ("group.json" if kind == "encode-group" else "summary.json")).exists():
            return folder
    return None


def summary(folder: Path) -> dict:
    return json.loads((Path(folder) / "summary.json").read_text())


# -- tables -------------------------------------------------------------------------------------

def partition_table(folder: Path) -> pd.DataFrame:
    """Per ROI group and ROI: preference, unique variance of each space, shared, joint R², n."""
    s = summary(folder)
    names = s["names"]
    rows = []
    for section in ("roi_groups", "roi", "planted"):
        for region, v in (s.get(section) or {}).items():
            row = {"region": region, "preference": v.get("preference")}
            for safe, spec in names.items():
                row[f"unique {spec}"] = v.get(f"unique_{safe}")
            row.update({"shared": v.get("shared"), "joint R²": v.get("r2_joint"), "n_voxels": v.get("n_voxels")})
            rows.append(row)
    return pd.DataFrame(rows)


def partition_map(folder: Path) -> np.ndarray:
    """The preference map ``(n_voxels,)`` (> 0 first space preferred)."""
    return np.load(Path(folder) / "preference.npy")


def impact_table(folder: Path) -> pd.DataFrame:
    """Per layer × region (ROI groups, ROIs, planted types): full and residual cc_norm, % drop."""
    s = summary(folder)
    rows = []
    for layer, v in s["layers"].items():
        for section in ("roi_groups", "roi", "planted"):
            for region, r in (v.get(section) or {}).items():
                rows.append({"layer": layer, "region": region, "full": r.get("full"), "resid": r.get("resid"),
                             "drop %": r.get("drop_percent"), "n_voxels": r.get("n_voxels")})
    return pd.DataFrame(rows, columns=["layer", "region", "full", "resid", "drop %", "n_voxels"])


def preference_table(folder: Path) -> pd.DataFrame:
    """Per layer: semantic r, phonetic r, preference with its confidence interval."""
    s = summary(folder)
    return pd.DataFrame([{"layer": layer, "depth": i, "semantic_r": v["semantic_r"], "phonetic_r": v["phonetic_r"],
                          "preference": v["preference"], "ci_lo": v["ci"][0], "ci_hi": v["ci"][1]}
                         for i, (layer, v) in enumerate(s["layers"].items())])


def significance_table(folder: Path) -> pd.DataFrame:
    """Per layer: voxels tested, significant, share, mean r."""
    s = summary(folder)
    return pd.DataFrame([{"layer": layer, "n_tested": v["n_tested"], "n_significant": v["n_significant"],
                          "share": v["share"], "mean_r": v["mean_r"]} for layer, v in s["layers"].items()])


def significance_map(folder: Path, layer: str) -> np.ndarray:
    """Observed test r ``(n_voxels,)`` with non-significant voxels set to NaN (hidden on maps)."""
    r = np.load(Path(folder) / f"r_{layer}.npy").astype(np.float64)
    sig = np.load(Path(folder) / f"significant_{layer}.npy")
    return np.where(sig, r, np.nan)


def probe_table(folder: Path) -> pd.DataFrame:
    """Per layer: F1 of the probe and of the shuffled-label control (long format for a chart)."""
    s = summary(folder)
    rows = []
    for i, (layer, v) in enumerate(s["layers"].items()):
        rows.append({"layer": layer, "depth": i, "probe": "labels", "f1": v["f1"]})
        rows.append({"layer": layer, "depth": i, "probe": "shuffled labels", "f1": v["f1_shuffled"]})
    return pd.DataFrame(rows, columns=["layer", "depth", "probe", "f1"])


def group_tables(folder: Path, layer: str = "best") -> tuple:
    """``(participants, regions)`` of a group encode: per participant × region mean cc_norm at
    ``layer`` (``best`` = each participant's best layer; offered when there are several layers),
    and per region the across-participant
    mean, n, participants above 0 and Wilcoxon p (with the smallest attainable p)."""
    g = json.loads((Path(folder) / "group.json").read_text())
    rows = []
    for subject, v in g["participants"].items():
        name = v["best_layer"] if layer == "best" else layer
        cell = v["layers"][name]
        rows.append({"participant": subject, "layer": name, "mean_cc_norm": cell["mean_cc_norm"],
                     **{f"{k}": x for k, x in cell.get("roi_groups", {}).items()}})
    regions = [{"region": k, "mean": r["mean"], "n_subjects": r["n_subjects"], "n_positive": r["n_positive"],
                "Wilcoxon p": r["wilcoxon_p"], "min possible p": r["min_possible_p"]}
               for k, r in g["regions"].get(layer, {}).items()]
    return pd.DataFrame(rows), pd.DataFrame(regions)


def group_layers(folder: Path) -> list:
    """Layers of a group encode (``best`` — each participant's best layer — first when there are
    several)."""
    layers = json.loads((Path(folder) / "group.json").read_text())["layers"]
    return ["best", *layers] if len(layers) > 1 else list(layers)


def group_mean_map(folder: Path, layer: str) -> Optional[tuple]:
    """``(mean, SurfaceSpace over every mesh vertex)`` of the group mean cc_norm map at ``layer``,
    or None when the participants share no mesh (volumes)."""
    from core.data.base import SurfaceSpace

    g = json.loads((Path(folder) / "group.json").read_text())
    maps = g.get("mean_maps")
    if not maps or layer not in maps["files"]:
        return None
    mean = np.load(Path(folder) / maps["files"][layer][0]).astype(np.float64)
    space = SurfaceSpace(maps["mesh"], np.arange(mean.size), mean.size // 2)
    return mean, space


def group_map_png(folder: Path, layer: str, rois: Optional[dict] = None) -> Optional[bytes]:
    """PNG of the group mean cc_norm map at ``layer`` on the shared mesh (None for volumes).
    ``rois``: ``{name: (n_vertices,) bool}`` outlines on the full mesh."""
    from core.studio.results import SCORE_CMAP, color_range
    from core.viz.surface import surface_map_png

    found = group_mean_map(folder, layer)
    if found is None:
        return None
    mean, space = found
    vmin, vmax = color_range(mean)
    return surface_map_png(mean, space, view="flat", cmap=SCORE_CMAP, vmin=vmin, vmax=vmax, rois=rois,
                           title=f"group mean cc_norm · {layer}")


def cli_command(kind: str, params: dict) -> str:
    """The CLI call that writes the same numbers as the analysis job."""
    if kind == "encode-group":
        from core.studio.sources import cli_encode_command

        return cli_encode_command(params["data"], "all", params["source"], protocol=params.get("protocol", "project"),
                                  n_jobs=params.get("n_jobs") or 1)
    cmd = ["python", "-m", "core", kind]
    if kind == "probe":
        cmd += ["--task", params["task"], "--model", params["source"]]
    elif kind == "preference":
        cmd += ["--data", params["data"], "--model", params["source"]]
    else:
        cmd += ["--data", params["data"], "--subject", params["subject"]]
        if kind == "partition":
            cmd += ["--spaces", ",".join(params["spaces"])]
        else:
            from core.studio.sources import is_model_spec

            src = params["source"]
            cmd += ["--model", src, "--layers", "all"] if is_model_spec(src) else ["--features", src]
        if kind == "lowlevel-impact":
            cmd += ["--remove", ",".join(params["remove"])]
        if params.get("protocol", "project") != "project":
            cmd += ["--protocol", params["protocol"]]
    return shlex.join(cmd + ["--out", "OUT_DIR"])
