#!/usr/bin/env bash
# Fetch TRELLIS.2 and the native extensions at the commits pinned in versions.env.
#
#   builder/fetch_sources.sh DEST
#
# DEST gets TRELLIS.2/ (trellis2, o-voxel with Eigen), CuMesh/ (with cubvh and its Eigen) and
# FlexGEMM/, the layout build_extensions.sh reads. Idempotent: a source already at its pinned
# commit is left alone. A repository or commit set in the environment (e.g.
# EIGEN_REPO=https://github.com/live-clones/eigen.git, the GitHub mirror) wins over versions.env.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=builder/lib.sh
source "$here/lib.sh"
load_versions

dest=${1:?usage: fetch_sources.sh DEST}
mkdir -p "$dest"

git_checkout "$TRELLIS2_REPO" "$TRELLIS2_COMMIT" "$dest/TRELLIS.2"
git_checkout "$EIGEN_REPO" "$O_VOXEL_EIGEN_COMMIT" "$dest/TRELLIS.2/o-voxel/third_party/eigen"
git_checkout "$CUMESH_REPO" "$CUMESH_COMMIT" "$dest/CuMesh"
git_checkout "$CUBVH_REPO" "$CUBVH_COMMIT" "$dest/CuMesh/third_party/cubvh"
git_checkout "$EIGEN_REPO" "$CUBVH_EIGEN_COMMIT" "$dest/CuMesh/third_party/cubvh/third_party/eigen"
git_checkout "$FLEXGEMM_REPO" "$FLEXGEMM_COMMIT" "$dest/FlexGEMM"
echo "sources at $dest"
