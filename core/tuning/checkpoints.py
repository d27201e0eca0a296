"""Checkpoints of a tuning run: ``checkpoints/epoch-NNN/`` (``accelerator.save_state`` + ``state.json``
written last, so a folder holding ``state.json`` is complete), ``checkpoints/best/`` (safetensors
weights), the parameter check that makes a resume refuse changed settings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

from core.errors import ConfigError, DataError

KEEP_LAST = 2  #: epoch checkpoints kept (the best one is kept apart)


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def latest_checkpoint(run_dir: Path) -> Optional[Path]:
    """The complete ``checkpoints/epoch-NNN`` folder with the highest epoch (None when none)."""
    root = checkpoint_dir(run_dir)
    done = sorted(p for p in root.glob("epoch-[0-9][0-9][0-9]") if (p / "state.json").exists()) \
        if root.exists() else []
    return done[-1] if done else None


def read_state(ckpt: Path) -> dict:
    """``state.json`` of a checkpoint folder (DataError when unreadable)."""
    path = Path(ckpt) / "state.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"checkpoint state {path} is unreadable ({err}); delete that checkpoint folder "
                        "and resume again") from None


def check_same_params(saved: dict, params) -> None:
    """ConfigError naming the first parameter whose value differs from the saved run's."""
    now = params.to_dict()
    defaults = type(params)().to_dict()  # a run saved before a parameter existed had its default
    for name in sorted(set(saved) | set(now)):
        if saved.get(name, defaults.get(name)) != now.get(name):
            raise ConfigError(f"cannot resume: parameter {name} was {saved.get(name)!r} in the saved run, "
                              f"now {now.get(name)!r}; use the same parameters or a new --out folder")


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


def save_weights(model, folder: Path) -> None:
    """Weights of ``model`` (backbone + head) as ``folder/model.safetensors``."""
    from safetensors.torch import save_model

    folder.mkdir(parents=True, exist_ok=True)
    save_model(model, str(folder / "model.safetensors"))


def load_weights(model, folder: Path) -> None:
    """Inverse of :func:`save_weights` (strict)."""
    from safetensors.torch import load_model

    load_model(model, str(Path(folder) / "model.safetensors"), device=str(model.device))


def best_dir(run_dir: Path) -> Path:
    """``checkpoints/best``: the weights of the epoch with the lowest validation loss."""
    return checkpoint_dir(run_dir) / "best"


def save_best(model, run_dir: Path, state: dict) -> None:
    """Write ``model``'s weights and ``state`` as the best checkpoint (via a temp folder)."""
    best = best_dir(run_dir)
    tmp = best.with_name("best.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_weights(model, tmp)
    _write_json(tmp / "state.json", state)
    shutil.rmtree(best, ignore_errors=True)
    tmp.rename(best)


def save_checkpoint(accelerator, run_dir: Path, epoch: int, state: dict) -> None:
    """Save the accelerator's state as ``checkpoints/epoch-{epoch:03d}`` (all processes call it;
    the main one writes ``state.json`` last, renames the folder into place, keeps the latest
    :data:`KEEP_LAST`)."""
    root = checkpoint_dir(run_dir)
    final = root / f"epoch-{epoch:03d}"
    tmp = root / f"epoch-{epoch:03d}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _write_json(tmp / "state.json", state)  # last: marks the folder complete
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        done = sorted(p for p in root.glob("epoch-[0-9][0-9][0-9]") if (p / "state.json").exists())
        for old in done[:-KEEP_LAST]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
