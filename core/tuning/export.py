"""Export a brain-tuned model: a Hugging Face folder + the voxel head + a model card.

``run_dir/export/`` (published atomically with :func:`core.store.atomic_dir`, replacing an older
export):

- the backbone by ``save_pretrained`` (``config.json``, ``model.safetensors``) and its feature
  extractor (``preprocessor_config.json``), loadable with ``transformers.AutoModel.from_pretrained``.
  Whisper: tuning trains the encoder alone, so the folder holds a whole ``WhisperModel`` whose
  encoder is the tuned one and whose decoder is **freshly initialised** (seeded, untrained; brain-
  tuning never uses it) — load ``.get_encoder()``/``.encoder``. wav2vec2 / HuBERT: the model itself.
- LoRA runs: ``adapter/`` (peft ``save_pretrained``: ``adapter_config.json``,
  ``adapter_model.safetensors``) and, at the top, the **merged** model (``merge_and_unload``) — the
  folder ``from_pretrained`` loads.
- ``head.safetensors`` — ``weight`` ``(n_voxels, hidden)`` and ``bias`` ``(n_voxels,)`` float32
  (absent for the stimulus control, which has no voxel head: :mod:`core.tuning.stimulus`; its
  Whisper export holds the **tuned** decoder, its wav2vec2 export the ``Wav2Vec2Model`` without the
  pre-training quantizer / projections).
- ``tuning.json`` — ``{"params", "family", "n_voxels", "hidden_size", "lora", **report}`` where
  ``report`` carries the data spec, subject, voxel-selection report, control and validation metrics.
- ``README.md`` — a model card with YAML front matter (library_name, tags, data, subject, n_voxels,
  control, parameters, validation loss).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from core.store import atomic_dir
from core.tuning.model import hidden_size


def _plain_backbone(model):
    """The tuned backbone as a plain transformers model (LoRA merged into a copy)."""
    bb = model.backbone
    if hasattr(bb, "peft_config"):
        bb = copy.deepcopy(bb).merge_and_unload()
    return bb


def _hf_model(backbone, family: str, decoder_state=None):
    """What ``save_pretrained`` writes: Whisper's encoder inside a whole ``WhisperModel`` (decoder:
    ``decoder_state`` when given, else freshly initialised, seed 0)."""
    if family != "whisper":
        return backbone
    from transformers import WhisperModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        full = WhisperModel(backbone.config)
    full.encoder.load_state_dict(backbone.state_dict())
    if decoder_state is not None:
        full.decoder.load_state_dict(decoder_state)
    return full


def export(run_dir, model, params, report: dict) -> Path:
    """Write ``run_dir/export/`` (see the module docstring); returns its path.

    Parameters
    ----------
    run_dir : the run folder. model : the tuned :class:`BrainTuningModel` (its current weights are
        exported: :func:`core.tuning.trainer.train` leaves the best epoch's in it).
    params : :class:`TuneParams`. report : JSON-able provenance, e.g. ``{"data", "subject",
        "model", "targets" (selection report), "control", "val_loss", "best_epoch"}``.
    """
    from safetensors.torch import save_file

    final = Path(run_dir) / "export"
    lora = hasattr(model.backbone, "peft_config")
    with atomic_dir(final, replace=True) as tmp:
        backbone = _plain_backbone(model)
        dec = model.decoder_state() if hasattr(model, "decoder_state") else None
        hf = _hf_model(backbone, model.family, dec)
        hf.save_pretrained(tmp, safe_serialization=True)
        if model.preprocessor is not None and hasattr(model.preprocessor, "save_pretrained"):
            model.preprocessor.save_pretrained(tmp)
        if lora:
            model.backbone.save_pretrained(tmp / "adapter")
        if getattr(model, "head", None) is not None:
            save_file({"weight": model.head.weight.detach().float().cpu().contiguous(),
                       "bias": model.head.bias.detach().float().cpu().contiguous()},
                      str(tmp / "head.safetensors"))
        info = {"params": params.to_dict(), "family": model.family, "n_voxels": int(model.n_voxels),
                "hidden_size": hidden_size(backbone), "lora": lora,
                "objective": getattr(model, "objective", None)}
        info.update(report)
        (tmp / "tuning.json").write_text(json.dumps(info, indent=1, default=_jsonable))
        (tmp / "README.md").write_text(model_card(info))
    return final


def _jsonable(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def _yaml_scalar(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))  # a JSON string is a valid YAML scalar


def model_card(info: dict) -> str:
    """README.md text: YAML front matter + a short description of the tuning run."""
    params = info.get("params", {})
    targets = info.get("targets") or {}
    lines = ["---", "library_name: transformers", "tags:", "- brain-tuning", "- fmri",
             "- speech", f"base_model_spec: {_yaml_scalar(info.get('model'))}",
             f"data: {_yaml_scalar(info.get('data'))}", f"subject: {_yaml_scalar(info.get('subject'))}",
             f"n_voxels: {int(info.get('n_voxels', 0))}",
             f"target_selection: {_yaml_scalar(targets.get('criterion'))}",
             f"control: {_yaml_scalar(info.get('control'))}",
             f"lora: {_yaml_scalar(info.get('lora', False))}", "parameters:"]
    for k, v in params.items():
        lines.append(f"  {k}: {json.dumps(v) if isinstance(v, list) else _yaml_scalar(v)}")
    lines += ["validation:", f"  val_loss: {_yaml_scalar(info.get('val_loss'))}",
              f"  best_epoch: {_yaml_scalar(info.get('best_epoch'))}", "---", ""]
    whisper = info.get("family") == "whisper"
    if info.get("objective"):
        return "\n".join(lines + _stimulus_card(info, params)) + "\n"
    lines += [
        f"# Brain-tuned {info.get('model', 'speech model')}",
        "",
        "Fine-tuned to predict fMRI responses (brain-tuning, Moussa, Klakow & Toneva, ICLR 2025): "
        "backbone → mean-pool over time → linear voxel head, trained on "
        f"{info.get('n_voxels')} voxels of subject {info.get('subject')} ({info.get('data')}).",
        "",
        f"- Targets: {targets.get('criterion')} ({targets.get('n_selected')} voxels selected).",
        f"- Control: {info.get('control') or 'none (brain-tuned)'}.",
        f"- Validation loss ({params.get('loss')}): {info.get('val_loss')} at epoch {info.get('best_epoch')}.",
        "- `head.safetensors`: the voxel head (`weight` (n_voxels, hidden), `bias` (n_voxels,)).",
    ]
    if info.get("lora"):
        lines.append("- `adapter/`: the LoRA adapter (peft); the top folder holds the merged model.")
    if whisper:
        lines.append("- Whisper: only the encoder was tuned; the decoder in this folder is freshly "
                     "initialised and untrained (use `model.get_encoder()`).")
    lines.append("")
    return "\n".join(lines)


def _stimulus_card(info: dict, params: dict) -> list:
    """Model-card body of a stimulus-control run (no voxel head)."""
    ctl = info.get("control_report") or {}
    init = ctl.get("init") or {}
    lines = [f"# Stimulus-tuned {info.get('model', 'speech model')} (control)", "",
             "Fine-tuned with the model's own self-supervised objective "
             f"(`{info.get('objective')}`) on the story audio of subject {info.get('subject')}'s "
             f"tuning clips ({info.get('data')}): the stimulus-tuned control of brain-tuning (Moussa, "
             "Klakow & Toneva, ICLR 2025). No fMRI response was used; there is no voxel head.", "",
             f"- Validation loss ({info.get('objective')}): {info.get('val_loss')} at epoch "
             f"{info.get('best_epoch')}."]
    lines += [f"- `{name}`: {how}." for name, how in init.items()]
    if info.get("lora"):
        lines.append("- `adapter/`: the LoRA adapter (peft); the top folder holds the merged model.")
    if info.get("family") == "whisper":
        lines.append("- Whisper: the encoder and the decoder were tuned on ASR of the clips' words; "
                     "the folder holds both.")
    else:
        lines.append("- The pre-training modules (quantizer / projections) are not exported: the folder "
                     "holds the backbone only.")
    return lines + [""]
