# Shared by the builder scripts (sourced, not run).
# shellcheck shell=bash

# load_versions [FILE]: set every pin of versions.env (or FILE) that the environment does not
# already set, so a Docker build argument or a caller's `TORCH_CUDA_ARCH_LIST=9.0 builder/...`
# wins over the file while the file stays the one place the defaults live.
load_versions() {
  local file=${1:-${VERSIONS_FILE:-$(dirname "${BASH_SOURCE[0]}")/versions.env}}
  local line key
  [ -r "$file" ] || { echo "cannot read $file" >&2; return 1; }
  while IFS= read -r line || [ -n "$line" ]; do
    [[ $line =~ ^([A-Z0-9_]+)= ]] || continue
    key=${BASH_REMATCH[1]}
    if [ -z "${!key:-}" ]; then
      eval "$line"
    fi
  done <"$file"
}
