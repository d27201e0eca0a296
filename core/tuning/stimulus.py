"""The stimulus-tuned control: the model's own self-supervised objective on the tuning clips.

paper-method.md, "Controls": tuning with the model's own loss on the same story audio separates
"more in-domain audio" from "brain signal". Same clips, trainer, schedule, optimiser groups, early
stopping (on the validation story's loss of the same objective), checkpoints, resume and export as
brain-tuning; no voxel targets and **no voxel head** (``n_voxels = 0``; the export has no
``head.safetensors``). The objective's own modules take the place of the head in the second
optimiser group (``head_lr`` and its schedule). The CNN / conv front end stays frozen
(:func:`core.tuning.model.freeze_front_end`); ``--lora`` wraps the backbone (encoder) as usual and
the objective's modules then train fully, like the head. The paper's stimulus run used 300 epochs,
lr 2e-5, 10 % warm-up and linear decay (:data:`PAPER_STIMULUS`: pass them as overrides).

Objectives (:data:`OBJECTIVES`), loss = a mean per masked frame / label token of the micro-batch:

- wav2vec2 — the contrastive + diversity pre-training loss of transformers'
  ``Wav2Vec2ForPreTraining`` (Baevski et al. 2020), divided by the number of masked frames (as
  transformers' pre-training example). Masks: ``_compute_mask_indices`` with ``mask_prob`` 0.65,
  ``mask_length`` 10 (the paper's p = 0.065 × M = 10; transformers' example default) and the config's
  ``mask_time_min_masks``; negatives: ``_sample_negative_indices`` (``config.num_negatives``, 100).
  Quantizer, ``project_q`` and ``project_hid`` come from the model folder when its weights hold them
  (e.g. ``facebook/wav2vec2-base``), else they are initialised by transformers' own init, seeded.
  Gumbel temperature: transformers' default 2 (the start of the paper's 2 → 0.5 anneal; not annealed).
- Whisper — its supervised objective: ASR of the words inside each clip
  (:mod:`core.tuning.stimulus_data`) with ``WhisperForConditionalGeneration``: token cross-entropy
  (transformers' loss). The decoder comes from the model folder (``bundled:whisper-tiny.en`` holds
  it), else (``random:``) it is initialised seeded; it trains with the encoder. The encoder input is
  ``params.whisper_input`` as for brain-tuning (``window``: the clip's own 500 frames through
  :func:`core.features.layers.whisper_hidden_states`; ``pad30``: transformers' 30 s input).
  A micro-batch without any word gives loss 0.
- HuBERT — transformers has no HuBERT pre-training loss; this runs HuBERT's first iteration
  (Hsu et al. 2021): masked prediction (``mask_prob`` 0.8, ``mask_length`` 10) of k-means cluster
  ids of MFCC frames (100 clusters fitted on the training stories' audio), logits = cosine
  similarity of ``Linear(hidden, 256)(h_t)`` with one learned 256-d embedding per cluster / 0.1,
  cross-entropy on masked frames. The projection and embeddings are initialised seeded (no
  checkpoint holds them); fairseq's CNN feature penalty is dropped (the CNN is frozen).

Masks and negatives of a sample are drawn from a seed of ``(params.seed, epoch, story, row)``
(:func:`core.tuning.stimulus_data.sample_seed`; epoch −1 in eval mode, so the validation loss uses
the same masks every epoch): independent of batching, processes and resumption.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Optional

import numpy as np
import torch
from torch import nn

from core.errors import ConfigError, ModelError
from core.tuning import stimulus_data as sd
from core.tuning.model import WHISPER_INPUTS, freeze_front_end

STIMULUS = "stimulus"  #: the control's name
OBJECTIVES = {"wav2vec2": "wav2vec2-contrastive", "whisper": "whisper-asr", "hubert": "hubert-mfcc-kmeans"}
MASK = {"wav2vec2": (0.65, 10), "hubert": (0.8, 10)}  #: (mask_prob, mask_length), see the docstring
HUBERT_DIM, HUBERT_TEMP = 256, 0.1  #: HuBERT Base: final_dim 256, logit temperature 0.1
PAPER_STIMULUS = dict(schedule="followup", followup_lr=2e-5, warmup_fraction=0.1, epochs=300)  #: paper


def check_family(family: str, spec: str = "") -> None:
    """ConfigError (one line) for a family without a stimulus objective."""
    if family not in OBJECTIVES:
        raise ConfigError(f"the stimulus control has no self-supervised objective for {spec or family} "
                          f"(family {family!r}); supported: {', '.join(OBJECTIVES)}")


@contextmanager
def _np_seed(seed: int):
    """Seed numpy's global RNG (transformers' mask helpers use it), restoring it afterwards."""
    state = np.random.get_state()
    np.random.seed(int(seed) % 2 ** 32)
    try:
        yield
    finally:
        np.random.set_state(state)


def _saved(folder, prefixes) -> dict:
    """Tensors of the model folder's weight files whose names start with one of ``prefixes``."""
    from core.models.hf import weight_files

    out = {}
    for f in weight_files(folder):
        if f.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(f), framework="pt") as h:
                out.update({k: h.get_tensor(k) for k in h.keys() if k.startswith(tuple(prefixes))})
        else:
            sd_ = torch.load(str(f), map_location="cpu", weights_only=True)
            out.update({k: v for k, v in sd_.items() if k.startswith(tuple(prefixes))})
    return out


def _load_part(module: nn.Module, tensors: dict, prefix: str) -> bool:
    """Load ``prefix``-named tensors into ``module`` when they cover all its weights; True if so."""
    sub = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    own = set(module.state_dict())
    if not sub or not own <= set(sub) | {k for k in own if k.endswith("proj_out.weight")}:
        return False
    module.load_state_dict({k: v for k, v in sub.items() if k in own}, strict=False)
    return True


class StimulusModel(nn.Module):
    """Backbone + the objective's modules; ``forward(waves, rows)`` returns the scalar loss.

    Parameters
    ----------
    speech_model : trainable :class:`core.models.SpeechModel` (``load_trainable``).
    seed : seeds the initialisation of missing modules and the masks. whisper_input : ``window`` |
    ``pad30``. freeze : freeze the front end (paper: True).

    Attributes
    ----------
    backbone, family, preprocessor, objective (name), extra (``nn.ModuleDict`` of the objective's
    modules), n_voxels (0), init_report (where each extra module came from), frozen.
    """

    def __init__(self, speech_model, seed: int = 0, whisper_input: str = "window", freeze: bool = True):
        super().__init__()
        check_family(speech_model.family, speech_model.spec)
        if whisper_input not in WHISPER_INPUTS:
            raise ConfigError(f"whisper_input {whisper_input!r} is not one of {', '.join(WHISPER_INPUTS)}")
        self.backbone, self.family = speech_model.module, speech_model.family
        self.preprocessor, self.sample_rate = speech_model.preprocessor, int(speech_model.sample_rate)
        self.objective, self.seed, self.whisper_input = OBJECTIVES[self.family], int(seed), whisper_input
        self.n_voxels, self.head, self._epoch = 0, None, 0
        self.frozen = freeze_front_end(self.backbone, self.family) if freeze else []
        folder = getattr(speech_model, "folder", None)
        device = next(self.backbone.parameters()).device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            getattr(self, f"_build_{self.family}")(folder)
        self.extra.to(device)
        self.labeller = sd.whisper_labeller(speech_model, self.backbone.config) if self.family == "whisper" else None
        self.kmeans = None

    @classmethod
    def from_spec(cls, spec: str, device: Optional[str] = None, **kwargs) -> "StimulusModel":
        from core.models import load_trainable

        return cls(load_trainable(spec, device=device), **kwargs)

    # -- construction ---------------------------------------------------------------------------
    def _build_wav2vec2(self, folder):
        from transformers import Wav2Vec2ForPreTraining

        self._check_masking()
        w = Wav2Vec2ForPreTraining(self.backbone.config)
        w.wav2vec2 = self.backbone
        object.__setattr__(self, "_wrapper", w)  # not a submodule: its parts are registered below
        self.extra = nn.ModuleDict({"quantizer": w.quantizer, "project_q": w.project_q,
                                    "project_hid": w.project_hid, "dropout_features": w.dropout_features})
        saved = _saved(folder, ("quantizer.", "project_q.", "project_hid.")) if folder else {}
        self.init_report = {n: (f"loaded from {folder}" if _load_part(getattr(w, n), saved, n + ".")
                                else f"initialised (transformers' init, seed {self.seed})")
                            for n in ("quantizer", "project_q", "project_hid")}

    def _build_whisper(self, folder):
        from transformers import WhisperForConditionalGeneration

        w = WhisperForConditionalGeneration(self.backbone.config)
        w.model.encoder = self.backbone
        object.__setattr__(self, "_wrapper", w)
        parts = {"decoder": w.model.decoder}
        if w.proj_out.weight is not w.model.decoder.embed_tokens.weight:
            parts["proj_out"] = w.proj_out
        self.extra = nn.ModuleDict(parts)
        saved = _saved(folder, ("model.decoder.", "decoder.", "proj_out.")) if folder else {}
        ok = _load_part(w.model.decoder, saved, "model.decoder.") or _load_part(w.model.decoder, saved, "decoder.")
        if ok and "proj_out" in parts:
            ok = _load_part(w.proj_out, saved, "proj_out.")
        note = ""
        if ok and folder is not None and (folder / "tuning.json").exists():
            note = " (a brain-tuning export: its decoder was never trained)" \
                if '"whisper-asr"' not in (folder / "tuning.json").read_text() else ""
        self.init_report = {"decoder": f"loaded from {folder}{note}" if ok
                            else f"initialised (transformers' init, seed {self.seed})"}

    def _build_hubert(self, folder):
        self._check_masking()
        d = int(self.backbone.config.hidden_size)
        emb = nn.Module()
        emb.weight = nn.Parameter(torch.empty(sd.N_CLUSTERS, HUBERT_DIM).uniform_())  # fairseq: uniform_
        self.extra = nn.ModuleDict({"final_proj": nn.Linear(d, HUBERT_DIM), "label_embs": emb})
        self.init_report = {"final_proj": f"initialised (seed {self.seed})",
                            "label_embs": f"initialised uniform(0, 1) (seed {self.seed})"}

    def _check_masking(self):
        if not hasattr(self.backbone, "masked_spec_embed") or not getattr(self.backbone.config,
                                                                          "apply_spec_augment", True):
            raise ModelError(f"the {self.family} model has no mask embedding (config mask_time_prob = 0 or "
                             "apply_spec_augment = False); masked pre-training needs one: use a checkpoint "
                             "with mask_time_prob > 0")

    # -- labels ---------------------------------------------------------------------------------
    def prepare(self, data, dataset) -> dict:
        """Attach the objective's labels to ``data``'s samples (Whisper: transcript tokens; HuBERT:
        k-means of the training audio's MFCC); returns the report for the run summary."""
        rep = {"objective": self.objective, "init": self.init_report}
        if self.family == "whisper":
            max_len = int(self.backbone.config.max_target_positions)
            labs, width = {}, 0
            for name, split in (("train", data.train), ("val", data.val)):
                labs[name], rep[f"{name}_labels"] = sd.word_labels(dataset, split, self.labeller, max_len)
                width = max([width] + [a.shape[1] for a in labs[name]])
            for name, split in (("train", data.train), ("val", data.val)):
                sd.set_labels(split, labs[name], width)
            rep["tokenizer"] = type(self.labeller).__name__
        elif self.family == "hubert":
            self.kmeans = sd.fit_kmeans([st.audio for st in data.train._stories], seed=self.seed)
            n = int(self.backbone._get_feat_extract_output_lengths(len(data.train.waveform(0))))
            for split in (data.train, data.val):
                sd.set_labels(split, sd.cluster_labels(split, self.kmeans, n), n)
            rep["kmeans"] = {"n_clusters": sd.N_CLUSTERS, "features": "MFCC+d+dd (39)", "fit_on":
                             data.train.stories, "inertia": float(self.kmeans.inertia_)}
        rep["mask"] = MASK.get(self.family)
        return rep

    # -- forward --------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose masks training draws (the trainer calls it before each epoch)."""
        self._epoch = int(epoch)

    def masks(self, rows: torch.Tensor, n_frames: int):
        """``(mask (B, T) bool, negatives (B, T, K) int64 or None)`` of samples ``rows[:, :2]``."""
        prob, length = MASK[self.family]
        from transformers.models.wav2vec2.modeling_wav2vec2 import (_compute_mask_indices,
                                                                    _sample_negative_indices)

        epoch = self._epoch if self.training else -1
        m, negs = [], []
        for b, (crc, row) in enumerate(rows[:, :2].tolist()):
            with _np_seed(sd.sample_seed(self.seed, epoch, crc, row)):
                mi = _compute_mask_indices((1, n_frames), prob, length,
                                           min_masks=int(self.backbone.config.mask_time_min_masks))
                if self.family == "wav2vec2":
                    negs.append(_sample_negative_indices((1, n_frames), int(self.backbone.config.num_negatives),
                                                         mi)[0] + b * n_frames)
            m.append(mi[0])
        mask = torch.as_tensor(np.stack(m), dtype=torch.bool, device=self.device)
        neg = torch.as_tensor(np.stack(negs), dtype=torch.long, device=self.device) if negs else None
        return mask, neg

    def _normalised(self, waves):
        x = waves.to(self.device, torch.float32)
        if getattr(self.preprocessor, "do_normalize", False):  # as BrainTuningModel: per clip, ddof 0
            x = (x - x.mean(1, keepdim=True)) / torch.sqrt(x.var(1, keepdim=True, unbiased=False) + 1e-7)
        return x

    def forward(self, waves: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Loss (scalar) of waveforms ``(B, n_samples)`` at 16 kHz and their label rows
        ``(B, 2 + L)`` int64 (:mod:`core.tuning.stimulus_data`)."""
        rows = torch.as_tensor(rows)
        if waves.ndim != 2 or rows.ndim != 2 or rows.shape[0] != waves.shape[0]:
            raise ConfigError(f"stimulus loss needs waves (B, n) and label rows (B, 2 + L); got "
                              f"{tuple(waves.shape)} and {tuple(rows.shape)}")
        return getattr(self, f"_loss_{self.family}")(waves, rows)

    def _loss_wav2vec2(self, waves, rows):
        x = self._normalised(waves)
        T = int(self.backbone._get_feat_extract_output_lengths(x.shape[1]))
        mask, neg = self.masks(rows, T)
        out = self._wrapper(x, mask_time_indices=mask, sampled_negative_indices=neg)
        return out.loss / mask.sum().clamp(min=1)

    def _loss_hubert(self, waves, rows):
        x = self._normalised(waves)
        T = int(self.backbone._get_feat_extract_output_lengths(x.shape[1]))
        labels = rows[:, 2:2 + T].to(self.device)
        if labels.shape[1] != T:
            raise ConfigError(f"HuBERT labels have {labels.shape[1]} frames, the model gives {T}; call prepare()")
        mask, _ = self.masks(rows, T)
        h = self.backbone(x, mask_time_indices=mask).last_hidden_state
        return hubert_loss(h, labels, mask, self.extra["final_proj"], self.extra["label_embs"].weight)

    def _loss_whisper(self, waves, rows):
        from core.features.layers import whisper_hidden_states
        from transformers.modeling_outputs import BaseModelOutput

        labels = rows[:, 2:].to(self.device)
        labels = labels[:, :max(int((labels != sd.IGNORE).sum(1).max()), 1)]
        pre = self.preprocessor
        arr = waves.detach().to("cpu", torch.float32).numpy()
        pad = "max_length" if self.whisper_input == "pad30" else "longest"
        with torch.autocast("cpu", enabled=False):  # log-mel stays fp32 under bf16 autocast
            feats = pre(list(arr), sampling_rate=self.sample_rate, return_tensors="pt",
                        padding=pad).input_features.to(self.device)
        if self.whisper_input == "pad30":
            out = self._wrapper(input_features=feats, labels=labels)
        else:
            top = len(self.backbone.layers)
            enc = whisper_hidden_states(self.backbone, feats, [top])[top]
            out = self._wrapper(encoder_outputs=BaseModelOutput(last_hidden_state=enc), labels=labels)
        if not bool((labels != sd.IGNORE).any()):
            return out.logits.sum() * 0.0  # no word in the micro-batch: nothing to learn, graph kept
        return out.loss

    # -- bookkeeping ----------------------------------------------------------------------------
    def parameter_groups(self):
        """``(backbone trainable params, objective params)``: the trainer's two groups."""
        return ([p for p in self.backbone.parameters() if p.requires_grad],
                [p for p in self.extra.parameters() if p.requires_grad])

    def decoder_state(self):
        """Whisper: the tuned decoder's state dict (exported with the encoder); else None."""
        return self.extra["decoder"].state_dict() if self.family == "whisper" else None


def hubert_loss(hidden, labels, mask, proj, embs, temperature: float = HUBERT_TEMP):
    """Mean cross-entropy over masked frames of ``cos(proj(h_t), e_c) / temperature`` logits.

    hidden ``(B, T, d)``, labels ``(B, T)`` int64 cluster ids, mask ``(B, T)`` bool, proj
    ``Linear(d, D)``, embs ``(C, D)``."""
    z = nn.functional.normalize(proj(hidden[mask]).float(), dim=-1)
    logits = z @ nn.functional.normalize(embs.float(), dim=-1).T / temperature
    return nn.functional.cross_entropy(logits, labels[mask])
