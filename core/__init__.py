"""Brain-tuning Studio engine: datasets, feature spaces, speech models, voxelwise encoding.

Importable without streamlit. See ``../shared/DESIGN.md`` for the data flow and CLI contracts.
"""

__version__ = "0.1.0"
