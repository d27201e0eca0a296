"""Reader for the Narratives dataset (Nastase et al. 2021, OpenNeuro ds002345; DataLad release).

``narratives:<path>`` with ``<path>`` = the folder holding ``participants.tsv``. See
:mod:`core.data.narratives.dataset` for the choices (stories, split, subjects, vertices) and
:mod:`core.data.narratives.timing` for the time base (6-TR trim, per-story TR, audio crop).
"""

from core.data.narratives.dataset import TEST_STORY, NarrativesDataset
from core.data.narratives.timing import INITIAL_TRIM, StoryTiming

__all__ = ["NarrativesDataset", "StoryTiming", "INITIAL_TRIM", "TEST_STORY"]
