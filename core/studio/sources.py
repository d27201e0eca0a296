"""Specs, feature sources and encode jobs of the app (part of the :mod:`core.studio` facade)."""

from __future__ import annotations

import shlex
from functools import lru_cache
from pathlib import Path
from typing import Optional

from core.errors import ConfigError
from core.progress import ProgressFn

DEMO_SPEC = "demo"
DEMO_GROUP_SPEC = "demo-group"  #: several simulated participants on fsaverage5 (issue 12)


# -- data specs ---------------------------------------------------------------------------------

def data_spec(choice: str, path: str = "") -> str:
    """Data spec from the sidebar: ``"demo"`` or a typed folder (→ ``ds003020:<folder>``).

    A typed value that already is a spec (``ds003020:…``, ``demo``) is kept as is.
    """
    if choice in (DEMO_SPEC, DEMO_GROUP_SPEC):
        return choice
    path = (path or "").strip()
    if not path:
        raise ConfigError("type the path of a dataset folder: ds003020 layout (the folder holding stimuli/ "
                          "and derivative/) or Narratives layout (the folder holding participants.tsv)")
    if path in (DEMO_SPEC, DEMO_GROUP_SPEC):
        return path
    prefix, sep, rest = path.partition(":")
    if sep and prefix in ("ds003020", "narratives"):
        return f"{prefix}:{allowed_path(rest)}"
    folder = allowed_path(path)
    kind = "narratives" if (folder / "participants.tsv").exists() and not (folder / "derivative").exists() \
        else "ds003020"
    return f"{kind}:{folder}"


def allowed_path(path: str) -> Path:
    """``path`` resolved (``~`` expanded, symlinks followed) if it lies under one of the app's
    allowed roots (``core.settings``: ``BTS_ALLOWED_ROOTS``, default the home folder and the cache);
    ConfigError otherwise — typed paths never reach the rest of the file system."""
    from core.settings import ALLOWED_ENV, get_settings

    text = str(path).strip()
    if not text or "\x00" in text:
        raise ConfigError(f"{text!r} is not a folder path; type an absolute path such as ~/data/ds003020")
    resolved = Path(text).expanduser().resolve()
    roots = get_settings().allowed_roots
    if not any(resolved == r or resolved.is_relative_to(r) for r in roots):
        raise ConfigError(f"{resolved} is outside the folders this app may open ({', '.join(map(str, roots))}); "
                          f"move the data there or set {ALLOWED_ENV} before starting the app")
    return resolved


def demo_ready() -> bool:
    """Whether the demo dataset is already built in the cache (opening it is then quick)."""
    from core.data.demo import demo_is_built

    return demo_is_built()


def group_ready() -> bool:
    """Whether the demo group (``demo-group``) is built in the cache (else its first use builds it:
    the demo first if needed, then the participants — run it as a background job)."""
    from core.data.demo_group import GroupConfig
    from core.data.demo_group.dataset import group_root_for, needs_build

    config = GroupConfig()
    return demo_ready() and not needs_build(group_root_for(config), config)


def open_dataset(spec: str, progress: ProgressFn = None):
    """``core.data.load_dataset(spec)`` (DataError / ConfigError with a one-line message)."""
    from core.data import load_dataset

    return load_dataset(spec, progress=progress)


def cli_describe_command(spec: str) -> str:
    """The CLI call that prints the dataset summary the Data page shows."""
    return f"python -m core datasets describe --data {shlex.quote(spec)}"


# -- feature sources ----------------------------------------------------------------------------

def is_model_spec(spec: str) -> bool:
    """Whether ``spec`` names a speech model (layers to choose) rather than a feature space."""
    from core.features import MODEL_PREFIXES

    return spec.partition(":")[0] in MODEL_PREFIXES


def source_catalog() -> list:
    """Feature spaces, models and tuned checkpoints the app offers, as dicts
    ``{"spec", "label", "group"}`` with group ∈ {"feature space", "model", "checkpoint"}.

    Built from the engine's registries: the low-level and semantic space tables, the bundled
    Whisper models, the random-init families (untrained baselines) and, once the model registry
    resolves ``ckpt:`` specs, the exported checkpoints in the cache's run folders.
    """
    from core.features.lowlevel import SPACES as LOW
    from core.features.semantic import SPACES as SEM
    from core.models import PREFIXES
    from core.models.bundled import bundled_names
    from core.models.random_models import RANDOM_FAMILIES

    out = [{"spec": f"lowlevel:{n}", "label": f"low-level: {n}", "group": "feature space"} for n in LOW]
    out += [{"spec": f"semantic:{n}", "label": f"semantic: {n}", "group": "feature space"} for n in SEM]
    out += [{"spec": f"bundled:{n}", "label": f"{n} (bundled)", "group": "model"} for n in bundled_names()]
    out += [{"spec": f"random:{f}", "label": f"{f}, random init (untrained baseline)", "group": "model"}
            for f in RANDOM_FAMILIES]
    if "ckpt" in PREFIXES:
        out += [{"spec": f"ckpt:{d}", "label": f"tuned: {d.parent.name if d.name == 'tune' else d.name}",
                 "group": "checkpoint"}
                for d in find_checkpoints()]
    return out


def find_checkpoints() -> list:
    """Tuning run folders in the cache holding an exported brain-tuned checkpoint: ``<run>/export/``,
    or ``<job>/tune/export/`` for the app's tune jobs (the ``tune/`` folder is the run)."""
    from core.settings import get_settings

    root = get_settings().runs_root
    if not root.is_dir():
        return []
    found = [d for d in root.iterdir() if (d / "export").is_dir()]
    found += [d / "tune" for d in root.iterdir() if (d / "tune" / "export").is_dir()]
    return sorted(found)


@lru_cache(maxsize=32)
def resolve(spec: str, data: Optional[str] = None):
    """The feature source of ``spec`` (cached per process); with ``data``, the one an encode on that
    dataset uses (``core.features.source_for``: speech models in fast mode on the demo)."""
    from core.features import resolve_source, source_for

    return source_for(spec, data) if data else resolve_source(spec)


def encode_layers(spec: str) -> list:
    """Layers an app encode covers: all of a model's (``--layers all``), or the space's one."""
    source = resolve(spec)
    if is_model_spec(spec):
        from core.models import parse_layers

        return list(parse_layers(source, "all"))
    return list(source.layers())


# -- encodings ----------------------------------------------------------------------------------

PROTOCOLS = {"project": "project (default: delay before trim, alpha by r, whole test story)",
             "released": "released code (24 stories, test from row 40, alpha by √R², ceiling ddof 1)"}


def encode_dir(dataset, subject: str, spec: str, protocol: str = "project") -> Path:
    """The cache folder of the app's encode of ``spec`` under ``protocol`` (exists or not)."""
    from core.encoding.params import EncodeParams
    from core.pipelines.encode import encode_key
    from core.settings import get_settings

    key = encode_key(dataset, subject, resolve(spec, dataset.spec), encode_layers(spec),
                     EncodeParams.for_protocol(protocol))
    return get_settings().cache_root / "encodings" / key


def cached_result(dataset, subject: str, spec: str, protocol: str = "project") -> Optional[Path]:
    """The encode folder if already computed, else None (never computes)."""
    out = encode_dir(dataset, subject, spec, protocol)
    return out if (out / "summary.json").exists() else None


def launch_encode(dataset, subject: str, spec: str, protocol: str = "project") -> Path:
    """Start (or join) the background encode job of ``spec``; return its run folder."""
    from core.jobs import start_job

    params = {"data": dataset.spec, "subject": subject, "source": spec, "protocol": protocol,
              "layers": encode_layers(spec), "params": {}}
    return start_job("encode", params, key=encode_dir(dataset, subject, spec, protocol).name)


def encode_job(dataset, subject: str, spec: str, protocol: str = "project") -> Optional[dict]:
    """Status of the encode job of ``spec`` if one was ever started, else None."""
    from core.jobs import job_dir, job_status

    run = job_dir("encode", encode_dir(dataset, subject, spec, protocol).name)
    return job_status(run) if (run / "status.json").exists() else None


def launch_dataset_build(spec: str) -> Path:
    """Start (or join) the background job that opens/builds dataset ``spec``."""
    from core.jobs import start_job

    return start_job("dataset", {"data": spec})


def dataset_job(spec: str) -> Optional[dict]:
    """Status of the dataset-build job of ``spec`` if one was started, else None."""
    from core.jobs import job_dir, job_status
    from core.jobs.kinds import job_key

    run = job_dir("dataset", job_key("dataset", {"data": spec}))
    return job_status(run) if (run / "status.json").exists() else None


def delay_seconds(dataset) -> tuple:
    """(shortest, longest) lag in seconds between stimulus and response the encoding model uses
    (its FIR delays in TRs times the TR)."""
    from core.encoding.params import EncodeParams

    delays = EncodeParams().delays
    return min(delays) * dataset.tr, max(delays) * dataset.tr


def encode_note(dataset, spec: str) -> Optional[str]:
    """What an encode of a speech model costs (None for feature spaces, which take seconds to a
    minute), and which window protocol it uses (fast on the demo, the paper's elsewhere)."""
    if not is_model_spec(spec):
        return None
    from core.data.timing import run_trs_for_duration

    source = resolve(spec, dataset.spec)
    # audio seconds of each story: the inverse of run_trs_for_duration (R TRs ↔ tr·R − 10 TRs)
    lead = run_trs_for_duration(0.0, dataset.tr) * dataset.tr
    seconds = sum(max(dataset.tr * dataset.n_trs_run(s) - lead, 0.0) for s in dataset.stories)
    windows = f"about {seconds / source.step_s:,.0f} windows for this dataset"
    if source.mode == "fast":
        return (f"Fast feature mode (the demo's default, because the paper's protocol takes hours on "
                f"2 CPU cores): a {source.window_s:g} s window every {source.step_s:g} s keeping the "
                f"mean of its last second's frames, Whisper run on the window's own length — {windows}. "
                "About 5 minutes on 2 idle CPU cores for whisper-tiny; done once, then cached. Measured "
                "on the demo, it moves a voxel's r by about 0.05 from the paper protocol — as much as "
                "shifting the paper's own sampling grid by 0.1 s does. The paper protocol: "
                "`--mode paper` (about 1.5 hours for the demo on 2 CPU cores).")
    return (f"Speech-model features follow the paper's protocol: the model runs on a "
            f"{source.window_s:g} s window every {source.step_s:g} s of audio — {windows}. Minutes on "
            "a GPU; on a CPU expect hours for a real model. The job runs in the background and its "
            "features are cached, so it is done once.")


def cli_encode_command(data: str, subject: str, spec: str, out: str = "OUT_DIR",
                       protocol: str = "project", n_jobs: Optional[int] = None) -> str:
    """The CLI call that writes the same numbers as the app's encode of ``spec`` (``subject`` may
    be ``all``; ``n_jobs`` then gives its parallel fits)."""
    cmd = ["python", "-m", "core", "encode", "--data", data, "--subject", subject]
    cmd += ["--model", spec, "--layers", "all"] if is_model_spec(spec) else ["--features", spec]
    if protocol != "project":
        cmd += ["--protocol", protocol]
    if n_jobs is not None:
        cmd += ["--n-jobs", str(n_jobs)]
    return shlex.join(cmd + ["--out", out])


