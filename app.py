"""Brain-tuning Studio — the Streamlit app: ``streamlit run app.py`` (binds 127.0.0.1, see
``.streamlit/config.toml``).

This file registers the pages (``pages/``). Each page starts with ``pages._ui.context()``, which draws
the sidebar — the dataset (the demo brain or a ds003020 folder), the subject, and the feature space
/ model — so a page run on its own (Streamlit's legacy ``pages/`` mode: AppTest, a first request to
a deep link) still has it. Pages are views over ``core``; every number is computed by the engine
(and reproducible with ``python -m core …``).
"""

from __future__ import annotations

import streamlit as st

st.set_page_config(page_title="Brain-tuning Studio", page_icon=":material/psychology:", layout="wide")

PAGES = [
    st.Page("pages/learn.py", title="Learn", icon=":material/school:", default=True),
    st.Page("pages/data.py", title="Data", icon=":material/headphones:"),
    st.Page("pages/alignment.py", title="Alignment maps", icon=":material/map:"),
    st.Page("pages/tuning.py", title="Brain-tuning", icon=":material/model_training:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("pages/analyses.py", title="Analyses", icon=":material/analytics:"),
]


page = st.navigation(PAGES)
page.run()
