"""Brain-tuning (Moussa, Klakow & Toneva, ICLR 2025): fine-tune speech models to predict fMRI.

Parts (the trainer composes them):

- :mod:`~core.tuning.samples` — 10 s training waveforms per response row, as the released code
  pairs them (:class:`TuningData`, :func:`story_samples`, :func:`snippet_bounds`).
- :mod:`~core.tuning.targets` — target voxels (:func:`select_targets`, :func:`by_ceiling`,
  :func:`by_roi`, :func:`by_encoding`).
- :mod:`~core.tuning.model` — :class:`BrainTuningModel` (backbone → mean-pool → linear head).
- :mod:`~core.tuning.losses` — ``mse``, ``pearson``, ``cosine_l2`` (:func:`get_loss`).
- :mod:`~core.tuning.schedule` — Adam/AdamW + ``LambdaLR`` (:func:`build_optimizer`).
- :mod:`~core.tuning.params` — :class:`TuneParams`, :func:`preset` (``paper``, ``demo``).
- :mod:`~core.tuning.controls` — random-fMRI and representation controls (target transforms);
  :mod:`~core.tuning.stimulus` / :mod:`~core.tuning.stimulus_data` — the stimulus control (the
  model's own self-supervised objective on the same clips, no voxel head).
"""

from core.tuning.losses import LOSSES, cosine_l2_loss, get_loss, mse_loss, pearson_loss
from core.tuning.model import BrainTuningModel, freeze_front_end
from core.tuning.params import DEMO_CHANGES, PRESETS, TuneParams, preset
from core.tuning.samples import (DELAYS, SAMPLE_RATE, TuningData, TuningSplit, sample_waveform,
                                 snippet_bounds, story_samples, zscore_story)
from core.tuning.schedule import SCHEDULES, build_optimizer, head_decay, warmup_linear
from core.tuning.targets import (CEILING_THRESHOLD, by_ceiling, by_encoding, by_roi,
                                 select_targets)

__all__ = ["LOSSES", "cosine_l2_loss", "get_loss", "mse_loss", "pearson_loss", "BrainTuningModel",
           "freeze_front_end", "DEMO_CHANGES", "PRESETS", "TuneParams", "preset", "DELAYS",
           "SAMPLE_RATE", "TuningData", "TuningSplit", "sample_waveform", "snippet_bounds",
           "story_samples", "zscore_story", "SCHEDULES", "build_optimizer", "head_decay",
           "warmup_linear", "CEILING_THRESHOLD", "by_ceiling", "by_encoding", "by_roi",
           "select_targets"]
