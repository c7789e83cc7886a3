#!/usr/bin/env bash
# Bake one weights layer of the image (the Dockerfile's runtime stage runs this once per layer).
#
#   /opt/weights/bake_layer.sh LAYER
#
# Runs download_weights.py with the hf stage's venv (both mounted at /opt/weights) into /models,
# for the files builder/weights_manifest.json puts in LAYER; BAKE_WEIGHTS and WITH_RMBG are the
# build arguments of the same names (auto and 0 when unset). huggingface_hub's home (its Xet chunk
# cache, token lookups) is a temporary folder, removed after: nothing but /models enters the layer.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
layer=${1:?usage: bake_layer.sh LAYER}
home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT
HF_HOME=$home HF_HUB_DISABLE_TELEMETRY=1 "$here/venv/bin/python" "$here/download_weights.py" /models \
  --layer "$layer" --bake "${BAKE_WEIGHTS:-auto}" --rmbg "${WITH_RMBG:-0}"
