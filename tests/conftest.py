"""Test session setup: an isolated cache root, so tests never touch the user's cache/."""

import os
import tempfile

# Must happen before core.settings is used anywhere.
_CACHE = os.environ.get("BTS_TEST_CACHE") or tempfile.mkdtemp(prefix="bts-test-cache-")
os.environ["BTS_CACHE_DIR"] = _CACHE
# the app confines typed paths to allowed roots; test fixtures live under the temp folder
os.environ.setdefault("BTS_ALLOWED_ROOTS", os.pathsep.join([os.path.expanduser("~"), tempfile.gettempdir()]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
