# Shared by the builder scripts (sourced, not run).
# shellcheck shell=bash

# load_versions [FOLDER]: set every pin of FOLDER/variants/$VARIANT.env and FOLDER/versions.env
# (FOLDER defaults to this script's folder) that the environment does not already set, the
# variant's first, so a Docker build argument or a caller's `TORCH_CUDA_ARCH_LIST=9.0 builder/...`
# wins over both while the files stay the one place the defaults live. VARIANT itself comes from
# the environment or versions.env. A folder without variants/ (a Docker stage that got one merged
# subset of the pins) is read alone. builder/pins.py reads the files the same way.
load_versions() {
  local folder=${1:-$(dirname "${BASH_SOURCE[0]}")}
  [ -r "$folder/versions.env" ] || { echo "cannot read $folder/versions.env" >&2; return 1; }
  if [ -z "${VARIANT:-}" ]; then
    VARIANT=$(sed -n 's/^VARIANT=//p' "$folder/versions.env")
  fi
  if [ -d "$folder/variants" ]; then
    [ -r "$folder/variants/$VARIANT.env" ] || { echo "VARIANT=$VARIANT: no $folder/variants/$VARIANT.env" >&2; return 1; }
    _load_file "$folder/variants/$VARIANT.env"
  fi
  _load_file "$folder/versions.env"
}

_load_file() {
  local line key
  while IFS= read -r line || [ -n "$line" ]; do
    [[ $line =~ ^([A-Z0-9_]+)= ]] || continue
    key=${BASH_REMATCH[1]}
    if [ -z "${!key:-}" ]; then
      eval "$line"
    fi
  done <"$1"
}

# git_checkout REPO COMMIT DIR: a shallow fetch of one commit, no history. A DIR already at COMMIT is
# left alone, so a fetch is idempotent.
git_checkout() {
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

# trim_o_voxel DIR: o_voxel (DIR is TRELLIS.2's o-voxel/) without the import of its postprocess
# module. o_voxel/__init__.py imports postprocess, o_voxel's own GLB export, which trellis-mv
# replaces (trellis_mv/export/) and which imports NVIDIA's rasterizer, licensed for research and
# evaluation only, at its top; so without this every `import o_voxel`, and trellis2's shape decoder
# does one, would need that rasterizer installed. The module file stays: where the rasterizer is
# installed (the GPU test harness) `import o_voxel.postprocess` still works for comparisons.
# Idempotent; fails when __init__.py no longer reads as expected (a new TRELLIS2_COMMIT).
trim_o_voxel() {
  local init=$1/o_voxel/__init__.py
  [ -r "$init" ] || { echo "trim_o_voxel: no $init" >&2; return 1; }
  sed -i '/^    postprocess,$/d' "$init"
  if grep -q postprocess "$init" || ! grep -q '^    convert,$' "$init"; then
    echo "trim_o_voxel: $init is not the one this step knows; check it at TRELLIS2_COMMIT" >&2
    return 1
  fi
}
