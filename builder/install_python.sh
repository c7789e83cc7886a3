#!/usr/bin/env bash
# Create (once) a virtual environment and install one image stage's locked Python packages.
#
#   builder/install_python.sh runtime|build|weights VENV
#
# Each stage installs its lock (builder/locks/<stage>-<VARIANT>.txt, weights.txt for weights) with
# pip's hash checking: every package at the version and sha256 builder/lock.py compiled from the
# pins, nothing resolved at build time, so two builds of one commit install the same files.
# build:   torch + torchvision, setuptools and what the native extensions' setup.py files import
#          under --no-build-isolation.
# runtime: torch + torchvision, xformers (the fallback attention backend), transformers 4.57, one
#          Pillow build, what trellis2 / o_voxel / BiRefNet import and this project's dependencies;
#          then flash-attn, the release wheel at FLASH_ATTN_URL, checked against FLASH_ATTN_SHA256
#          before pip sees it (its host is no package index, so it is outside the lock; its own
#          dependencies are in it); then builder/check_image.py --python.
# weights: huggingface_hub, for download_weights.py.
# The venv is made with python$PYTHON_VERSION (or $PYTHON when set). Idempotent: an existing venv is
# reused and pip leaves satisfied pins alone. Pins come from versions.env and variants/$VARIANT.env;
# a variable of the same name in the environment (a Docker build argument) wins.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=builder/lib.sh
source "$here/lib.sh"
load_versions

role=${1:?usage: install_python.sh runtime|build|weights VENV}
venv=${2:?usage: install_python.sh runtime|build|weights VENV}
case $role in
  runtime | build) lock="$here/locks/$role-$VARIANT.txt" ;;
  weights) lock="$here/locks/weights.txt" ;;
  *) echo "install_python.sh: unknown role '$role' (expected runtime, build or weights)" >&2; exit 2 ;;
esac
[ -r "$lock" ] || { echo "install_python.sh: no lock $lock (run builder/lock.py)" >&2; exit 1; }

if [ ! -x "$venv/bin/python" ]; then
  "${PYTHON:-python$PYTHON_VERSION}" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --disable-pip-version-check --no-input)
"${pip[@]}" --require-hashes --no-deps -r "$lock"
[ "$role" = runtime ] || exit 0

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
wheel="$work/$(basename "$FLASH_ATTN_URL")"
curl -fsSL --retry 3 -o "$wheel" "$FLASH_ATTN_URL"
if ! echo "$FLASH_ATTN_SHA256  $wheel" | sha256sum --check --strict --quiet -; then
  echo "install_python.sh: $(basename "$wheel") has sha256 $(sha256sum "$wheel" | cut -d' ' -f1)," \
    "not the pinned $FLASH_ATTN_SHA256 (variants/$VARIANT.env); refusing to install it" >&2
  exit 1
fi
"${pip[@]}" --no-deps "$wheel"
"$venv/bin/python" "$here/check_image.py" --python
