#!/usr/bin/env bash
# Create (once) a virtual environment and install the pinned Python packages of one image stage.
#
#   builder/install_python.sh runtime|build|weights VENV
#
# build:   torch + torchvision (CUDA wheels from TORCH_INDEX_URL), setuptools and what the native
#          extensions' setup.py files import under --no-build-isolation.
# runtime: torch + torchvision, flash-attn (the release wheel at FLASH_ATTN_URL, checked against
#          FLASH_ATTN_SHA256 before pip sees it), xformers as the fallback attention backend,
#          transformers 4.57, one Pillow build and what trellis2 / o_voxel / BiRefNet import;
#          then builder/check_image.py --python checks versions, Pillow's WebP codec and `pip check`.
# weights: huggingface_hub only, for download_weights.py.
# The venv is made with python$PYTHON_VERSION (or $PYTHON when set). Idempotent: an existing venv is
# reused and pip leaves satisfied pins alone. Every version comes from versions.env; a variable of
# the same name in the environment (a Docker build argument) wins, e.g. FLASH_ATTN_SHA256.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=builder/lib.sh
source "$here/lib.sh"
load_versions

role=${1:?usage: install_python.sh runtime|build|weights VENV}
venv=${2:?usage: install_python.sh runtime|build|weights VENV}
case $role in runtime | build | weights) ;; *)
  echo "install_python.sh: unknown role '$role' (expected runtime, build or weights)" >&2; exit 2 ;;
esac

if [ ! -x "$venv/bin/python" ]; then
  "${PYTHON:-python$PYTHON_VERSION}" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --disable-pip-version-check --no-input)

if [ "$role" = weights ]; then
  "${pip[@]}" "huggingface_hub==$HF_HUB_VERSION"
  exit 0
fi

# torch first and from its own index only, so no other index can supply a torch of that version.
"${pip[@]}" --index-url "$TORCH_INDEX_URL" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
torch_pins=("torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION")

# shellcheck disable=SC2206  # the package lists are space-separated pins
if [ "$role" = build ]; then
  extra=($BUILD_PACKAGES)
  "${pip[@]}" "${torch_pins[@]}" "setuptools==$SETUPTOOLS_VERSION" "${extra[@]}"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
wheel="$work/$(basename "$FLASH_ATTN_URL")"
curl -fsSL --retry 3 -o "$wheel" "$FLASH_ATTN_URL"
echo "$FLASH_ATTN_SHA256  $wheel" | sha256sum --check --strict -

# shellcheck disable=SC2206  # the package list is space-separated pins
extra=($TRELLIS2_PACKAGES)
"${pip[@]}" "${torch_pins[@]}" "$wheel" "xformers==$XFORMERS_VERSION" \
  "transformers==$TRANSFORMERS_VERSION" "huggingface_hub==$HF_HUB_VERSION" \
  "Pillow==$PILLOW_VERSION" "setuptools==$SETUPTOOLS_VERSION" "${extra[@]}"
"$venv/bin/python" "$here/check_image.py" --python
