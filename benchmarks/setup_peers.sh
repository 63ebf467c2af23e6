#!/usr/bin/env bash
# Installs the peers the benchmark measures copyspan against, in their own venv (never in the
# project's runtime dependencies): provena-audit (PyPI) and vPDQ (PyPI vpdq + threatexchange's
# matcher). vpdq's sdist builds against Debian's FFmpeg development packages.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.cache/peers-venv
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import vpdq, threatexchange, provena_audit" 2>/dev/null; then
  exit 0
fi
if ! pkg-config --exists libavcodec libavformat libswscale 2>/dev/null; then
  packages="pkg-config libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libavdevice-dev libavfilter-dev libswresample-dev"
  apt-get install -y -qq $packages >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq $packages >/dev/null; }
fi
python3.11 -m venv "$VENV"
"$VENV/bin/pip" install -q provena-audit==0.2.0 vpdq==0.2.5 threatexchange==1.2.17
