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
