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
#   pywheels/    the wheels (cp312, manylinux) of what the handler path needs and the device lacks
#                or has at other versions (runpod and its dependencies, pydantic, boto3, trimesh,
#                transformers, ...), at the versions of the image's lock; botocore's trimmed to S3
#   commit       this checkout's commit (with -dirty for uncommitted changes): the device's copy
#                has no .git, and results must name the commit they measured. Rewritten every time,
#                so run this script right before every device call.
#   baselines/   with BASELINE="<rev> [<rev>...]" set: per revision a folder named after it (baselines/main,
#                baselines/idle-window) with that commit's handler.py and trellis_mv/, and its commit, for
#                the cold start to launch beside this tree's (benchmarks/cold_start.py --baseline, which
#                device_run.sh passes for each); removed when BASELINE is not set.
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

# The device's python3 is 3.12 with torch, numpy, Pillow, requests, aiohttp, tqdm and opencv; these
# are what the worker and trellis2 import beyond that, at the versions the image's lock pins, and
# the lock's transformers (with its tokenizers and huggingface_hub: the device's newer ones import
# differently and take seconds longer), so the GPU tests and the cold start run what the image runs.
# py-spy (benchmarks/cold_start.py --profile) is the harness's own.
lock=$root/builder/locks/runtime-cu124.txt
pinned=(
  runpod aiohttp-retry backoff boto3 botocore s3transfer jmespath paramiko bcrypt pynacl cryptography cffi
  pycparser invoke tomli tomlkit tqdm-loggable colorama pydantic pydantic-core annotated-types
  typing-inspection easydict plyfile zstandard trimesh dracopy xatlas transformers tokenizers huggingface-hub
)
pywheels=(py-spy==0.4.3)
for name in "${pinned[@]}"; do
  spec=$(grep -m1 -E "^$name==" "$lock" | cut -d' ' -f1) || { echo "prepare_cache.sh: $lock pins no $name" >&2; exit 1; }
  pywheels+=("$spec")
done
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
# A version no longer pinned is dropped: two versions of one package stop the device's install.
for wheel in "$cache"/pywheels/*.whl; do
  base=$(basename "$wheel") keep=
  for spec in "${pywheels[@]}"; do
    name=${spec%%==*} version=${spec#*==}
    [[ $base == "${name//-/_}-$version-"* ]] && keep=1
  done
  [ -n "$keep" ] || rm -f "$wheel"
done
# botocore carries every AWS service's model (12 of its 14 MB); the worker and runpod talk to S3
# alone, and the device's copy is size-limited: only S3's model and the shared files stay.
python3 "$root/tests/gpu/trim_botocore.py" "$cache"/pywheels/botocore-*.whl
commit=$(git -C "$root" rev-parse --short=12 HEAD)
[ -z "$(git -C "$root" status --porcelain --untracked-files=no)" ] || commit=$commit-dirty
echo "$commit" >"$cache/commit"
rm -rf "$cache/baseline" "$cache/baselines"
for rev in ${BASELINE:-}; do
  # a folder name from the revision as given: a branch's slashes and a relative revision's ~ and ^ become _
  dest=$cache/baselines/$(printf '%s' "$rev" | tr -c 'A-Za-z0-9._-' '_')
  if [ "$(basename "$dest")" = current ] || [ -e "$dest" ]; then
    echo "prepare_cache.sh: BASELINE: $rev names the folder $dest twice or 'current' (this tree's name)" >&2
    exit 1
  fi
  mkdir -p "$dest"
  git -C "$root" archive --format=tar "$rev" handler.py trellis_mv | tar -x -C "$dest"
  git -C "$root" rev-parse --short=12 "$rev" >"$dest/commit"
  echo "baseline:           $rev at $(cat "$dest/commit") (in $dest)"
done
echo "pure-python wheels: $(find "$cache/pywheels" -name '*.whl' | wc -l) in $cache/pywheels"
echo "extension wheels:   $(find "$cache/wheels" -name '*.whl' | wc -l) in $cache/wheels (built on the device)"
echo "commit:             $commit (in $cache/commit)"
