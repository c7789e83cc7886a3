#!/usr/bin/env bash
# Prepare .cache/ from nothing for a GPU run on a bare machine with no network (the device).
#
#   tests/gpu/prepare_cache.sh [MIRRORS]
#
# Writes, in the repository's git-ignored .cache/:
#   src.tgz      TRELLIS.2 (trellis2/, o-voxel/ with Eigen, configs/), CuMesh (with cubvh and its
#                Eigen) and FlexGEMM at the commits of builder/versions.env: the tree
#                builder/fetch_sources.sh writes, which builder/build_extensions.sh reads; plus, for
#                the harness alone, nvdiffrast at NVDIFFRAST_COMMIT below (see there).
#   pywheels/    the pure-Python wheels (cp312, manylinux) that the handler path needs and the
#                device lacks: runpod and its dependencies, pydantic, boto3, trimesh, ...
#   commit       this checkout's commit (with -dirty for uncommitted changes): the device's copy
#                has no .git, and results must name the commit they measured. Rewritten every time,
#                so run this script right before every device call.
# Then the device builds the extensions itself (tests/gpu/device_run.sh build) and its wheels
# come back into .cache/wheels/ (copy them from the run's files): carry them next time.
#
# MIRRORS is a folder of bare git mirrors named owner+name/repo (the layout of a session's fetched
# repositories); without it the sources come from the network through fetch_sources.sh. Mirrors
# may lack large blobs the build never reads, so from a mirror only the needed paths are archived.
# Idempotent: a file already present is kept; delete .cache/src.tgz to fetch the sources again; a
# wheel missing from pywheels/ (the list below changed) is downloaded, the others are kept.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=builder/lib.sh
source "$root/builder/lib.sh"
load_versions "$root/builder"
# Harness only: NVIDIA's rasterizer, which the GPU tests compare our own rasterizers and bake against
# (tests/gpu/test_preview.py, test_export_gpu.py). Its licence allows research and evaluation only,
# so the image never fetches, builds or installs it: this pin lives here, not in builder/.
NVDIFFRAST_REPO=https://github.com/NVlabs/nvdiffrast.git
NVDIFFRAST_COMMIT=253ac4fcea7de5f396371124af597e6cc957bfae  # tag v0.4.0
cache=$root/.cache
mkdir -p "$cache/pywheels" "$cache/wheels"
if ls "$cache"/wheels/trellis2-*.whl >/dev/null 2>&1; then
  # trellis2 installed from a wheel shadows the source checkout the GPU tests import (and lacks configs/).
  echo "prepare_cache.sh: remove $cache/wheels/trellis2-*.whl; only the extension wheels (the image's three and nvdiffrast) belong there" >&2
  exit 1
fi

# archive MIRROR COMMIT DEST PATH...: the named paths of one commit, unpacked into DEST.
archive() {
  local mirror=$1 commit=$2 dest=$3
  shift 3
  mkdir -p "$dest"
  git --git-dir "$mirror" archive --format=tar "$commit" "$@" | tar -x -C "$dest"
}

if [ ! -f "$cache/src.tgz" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  src=$work/src
  if [ -n "${1:-}" ]; then
    m=$(cd "$1" && pwd)
    archive "$m/microsoft+TRELLIS.2/repo" "$TRELLIS2_COMMIT" "$src/TRELLIS.2" trellis2 o-voxel configs
    archive "$m/live-clones+eigen/repo" "$O_VOXEL_EIGEN_COMMIT" "$src/TRELLIS.2/o-voxel/third_party/eigen" Eigen
    archive "$m/JeffreyXiang+CuMesh/repo" "$CUMESH_COMMIT" "$src/CuMesh" .
    archive "$m/ashawkey+cubvh/repo" "$CUBVH_COMMIT" "$src/CuMesh/third_party/cubvh" .
    archive "$m/live-clones+eigen/repo" "$CUBVH_EIGEN_COMMIT" "$src/CuMesh/third_party/cubvh/third_party/eigen" Eigen
    archive "$m/JeffreyXiang+FlexGEMM/repo" "$FLEXGEMM_COMMIT" "$src/FlexGEMM" .
    archive "$m/NVlabs+nvdiffrast/repo" "$NVDIFFRAST_COMMIT" "$src/nvdiffrast" setup.py pyproject.toml MANIFEST.in csrc nvdiffrast README.md LICENSE.txt
  else
    "$root/builder/fetch_sources.sh" "$src"
    git_checkout "$NVDIFFRAST_REPO" "$NVDIFFRAST_COMMIT" "$src/nvdiffrast"
    find "$src" -name .git -prune -exec rm -rf {} +
  fi
  tar -czf "$cache/src.tgz" -C "$work" src
  echo "sources: $(du -h "$cache/src.tgz" | cut -f1) in $cache/src.tgz"
fi

# The device's python3 is 3.12 with torch, numpy, Pillow, transformers, requests, aiohttp, tqdm and
# opencv; these are what the worker and trellis2 import beyond that (pinned: one version each),
# and py-spy for benchmarks/cold_start.py --profile.
pywheels=(
  runpod==1.12.0 aiohttp-retry==2.9.1 backoff==2.2.1 boto3==1.40.61 botocore==1.40.61 s3transfer==0.14.0
  jmespath==1.0.1 paramiko==4.0.0 bcrypt==5.0.0 pynacl==1.6.0 cryptography==46.0.3 cffi==2.0.0
  pycparser==2.23 invoke==2.2.1 tomli==2.3.0 tomlkit==0.13.3 tqdm-loggable==0.2 colorama==0.4.6
  pydantic==2.12.4 pydantic-core==2.41.5 annotated-types==0.7.0 typing-inspection==0.4.2
  easydict==1.14 plyfile==1.1.5 zstandard==0.25.0 trimesh==4.8.3 dracopy==2.2.0 xatlas==0.0.11
  py-spy==0.4.3
)
missing=()
for spec in "${pywheels[@]}"; do
  # wheel file names spell the project with underscores; pip accepts either spelling
  name=${spec%%==*} version=${spec#*==}
  compgen -G "$cache/pywheels/${name//-/_}-$version-*.whl" >/dev/null || missing+=("$spec")
done
if [ ${#missing[@]} -gt 0 ]; then
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_34_x86_64 --platform manylinux1_x86_64 -d "$cache/pywheels" "${missing[@]}"
fi
commit=$(git -C "$root" rev-parse --short=12 HEAD)
[ -z "$(git -C "$root" status --porcelain --untracked-files=no)" ] || commit=$commit-dirty
echo "$commit" >"$cache/commit"
echo "pure-python wheels: $(find "$cache/pywheels" -name '*.whl' | wc -l) in $cache/pywheels"
echo "extension wheels:   $(find "$cache/wheels" -name '*.whl' | wc -l) in $cache/wheels (built on the device)"
echo "commit:             $commit (in $cache/commit)"
