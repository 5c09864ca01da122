#!/usr/bin/env bash
# Sets up everything slicewise needs on a fresh Debian/Ubuntu machine: system libraries for
# Qt/napari and Xvfb, then a virtualenv in .venv with the pinned, measured versions
# (docs/install.md explains each pin). Safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="xvfb xauth libgl1 libegl1 libxkbcommon-x11-0 libdbus-1-3 libfontconfig1 libxcb-icccm4 libxcb-image0 \
libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0"

missing=""
for pkg in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "setup: installing system packages:$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "setup: please install these system packages yourself:$missing" >&2
  fi
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/pip --disable-pip-version-check -q"
# torch first and pinned in every command: a looser pin pulls a multi-GB CUDA build.
$PIP install "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
$PIP install -c requirements/constraints.txt "torch==2.13.0" -e ".[napari,gpvm,formats,test]" -e training 2>&1 \
  | grep -v "^WARNING: Location" || true
# nnU-Net v2 networks; --no-deps: its timm<1.0.23 pin conflicts with ours and the U-Nets never import timm
$PIP install --no-deps -c requirements/constraints.txt dynamic-network-architectures 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import slicewise, slicewise_train, napari, torch; print('setup: slicewise', slicewise.__version__, '| torch', torch.__version__, '| napari', napari.__version__)"
