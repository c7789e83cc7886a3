#!/usr/bin/env bash
# Fetch TRELLIS.2 and the native extensions at the commits pinned in versions.env.
#
#   builder/fetch_sources.sh DEST
#
# DEST gets TRELLIS.2/ (trellis2, o-voxel with Eigen), CuMesh/ (with cubvh and its Eigen),
# FlexGEMM/ and nvdiffrast/, the layout build_extensions.sh reads. Idempotent: a source already
# at its pinned commit is left alone. A repository or commit set in the environment (e.g.
# EIGEN_REPO=https://github.com/live-clones/eigen.git, the GitHub mirror) wins over versions.env.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=builder/lib.sh
source "$here/lib.sh"
load_versions

dest=${1:?usage: fetch_sources.sh DEST}
mkdir -p "$dest"

# checkout REPO COMMIT DIR: a shallow fetch of one commit, no history.
checkout() {
  local repo=$1 commit=$2 dir=$3
  if [ -d "$dir/.git" ] && [ "$(git -C "$dir" rev-parse HEAD)" = "$commit" ]; then
    return 0
  fi
  rm -rf "$dir"
  git init -q "$dir"
  git -C "$dir" remote add origin "$repo"
  git -C "$dir" fetch -q --depth 1 origin "$commit"
  git -C "$dir" checkout -q FETCH_HEAD
}

checkout "$TRELLIS2_REPO" "$TRELLIS2_COMMIT" "$dest/TRELLIS.2"
checkout "$EIGEN_REPO" "$O_VOXEL_EIGEN_COMMIT" "$dest/TRELLIS.2/o-voxel/third_party/eigen"
checkout "$CUMESH_REPO" "$CUMESH_COMMIT" "$dest/CuMesh"
checkout "$CUBVH_REPO" "$CUBVH_COMMIT" "$dest/CuMesh/third_party/cubvh"
checkout "$EIGEN_REPO" "$CUBVH_EIGEN_COMMIT" "$dest/CuMesh/third_party/cubvh/third_party/eigen"
checkout "$FLEXGEMM_REPO" "$FLEXGEMM_COMMIT" "$dest/FlexGEMM"
checkout "$NVDIFFRAST_REPO" "$NVDIFFRAST_COMMIT" "$dest/nvdiffrast"
echo "sources at $dest"
