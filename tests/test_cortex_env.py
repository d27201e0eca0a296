"""pycortex is imported with its config under the cache and without printing to stdout."""

import os
import subprocess
import sys

from core.settings import REPO_ROOT


def test_get_cortex_keeps_stdout_clean_and_config_in_cache(tmp_path):
    env = dict(os.environ, BTS_CACHE_DIR=str(tmp_path), HOME=str(tmp_path / "home"))
    code = "from core.cortex_env import get_cortex; get_cortex()"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""  # CLI commands print JSON on stdout: nothing else may land there
    assert (tmp_path / "pycortex-config" / "pycortex" / "options.cfg").exists()
    assert not (tmp_path / "home" / ".config" / "pycortex").exists()
