#!/usr/bin/env bash
# One-shot, idempotent set-up on a fresh machine: a venv in .venv with the pinned Python
# requirements; with --test also the system packages the browser tests need (Debian's chromium).
# Used by the README's two commands and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=""
[ "${1:-}" = "--test" ] && APT_PACKAGES="chromium"
if [ -z "$APT_PACKAGES" ]; then
  :
elif command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  missing=""
  for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    echo "setup: apt-get install$missing"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
else
  echo "setup: not root or no apt-get; install these system packages yourself if missing: $APT_PACKAGES"
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
python -m pip install -q torch==2.13.0
# --no-cache-dir: pycortex's wheel records the venv path; a cached wheel from another venv is wrong.
python -m pip install -q --no-cache-dir -r requirements.txt
echo "setup: done ($(python --version), $(python -c 'import torch; print("torch", torch.__version__)'))"
