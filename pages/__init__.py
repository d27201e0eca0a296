"""The app's pages (one file per page, registered in ``app.py``) and their shared helpers (``_ui``)."""
