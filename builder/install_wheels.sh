#!/usr/bin/env bash
# Install the wheels build_extensions.sh and package_trellis2.sh wrote, without their dependencies.
#
#   builder/install_wheels.sh WHEELS
#
# --no-deps: o_voxel's metadata names cumesh and flex_gemm as git URLs, which pip would fetch and
# build again; their wheels are in WHEELS, and the pure-Python dependencies are pinned by
# install_python.sh. --force-reinstall makes a rebuilt wheel of the same version replace the old
# one (idempotent). Then checks with find_spec that each is installed (importing o_voxel needs
# libcuda, absent in a docker build). Environment: PYTHON (default python3).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
wheels=${1:?usage: install_wheels.sh WHEELS}
python=${PYTHON:-python3}
shopt -s nullglob
files=("$wheels"/*.whl)
if [ "${#files[@]}" -eq 0 ]; then
  echo "install_wheels.sh: no wheels in $wheels" >&2
  exit 1
fi
"$python" -m pip install --disable-pip-version-check --no-input --no-deps --force-reinstall "${files[@]}"
"$python" "$here/check_image.py" --extensions
