#!/usr/bin/env bash
# Build TRELLIS.2's three native extensions as wheels against the torch and CUDA toolkit found.
#
#   builder/build_extensions.sh SRC WHEELS
#
# SRC is the layout fetch_sources.sh writes; o_voxel is built without the import of its postprocess
# module (trim_o_voxel in lib.sh says why). The packages build in parallel; each wheel's
# shared objects are stripped of debug info (o_voxel goes from 18 MB to under 1 MB) and the wheel
# is repacked with a fresh RECORD. Prints one "name seconds" line per package. WHEELS also gets
# build-info.json, the architecture list the wheels were compiled for: the image keeps it at
# /opt/trellis-mv/build-info.json, where the worker's start-up check reads it.
# Environment: PYTHON (default python3), TORCH_CUDA_ARCH_LIST (default from versions.env),
# MAX_JOBS (compiler jobs per package; default a quarter of the cores), PACKAGES (a space-separated
# subset of "flex_gemm o_voxel cumesh" and the extra names to build; default all of them),
# EXTRA_PACKAGES (NAME=DIR pairs under SRC built beside the image's three: the GPU test harness
# builds what it compares against this way, tests/gpu/device_run.sh; the image builds none).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=builder/lib.sh
source "$here/lib.sh"
# A caller's architecture list (e.g. just 9.0 on a test machine) wins over the image's.
load_versions
export TORCH_CUDA_ARCH_LIST

src=$(cd "${1:?usage: build_extensions.sh SRC WHEELS}" && pwd)
mkdir -p "${2:?usage: build_extensions.sh SRC WHEELS}"
wheels=$(cd "$2" && pwd)
python=${PYTHON:-python3}
jobs=$(( $(nproc) / 4 ))
export MAX_JOBS=${MAX_JOBS:-$(( jobs > 0 ? jobs : 1 ))}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# build NAME DIR: one wheel, stripped, into $wheels; the log stays in $wheels/logs.
build() {
  local name=$1 dir=$2 start=$SECONDS
  mkdir -p "$work/$name" "$wheels/logs"
  "$python" -m pip wheel --no-build-isolation --no-deps -w "$work/$name" "$dir" \
    >"$wheels/logs/$name.log" 2>&1
  local wheel
  wheel=$(ls "$work/$name"/*.whl)
  "$python" -m wheel unpack -d "$work/$name/unpacked" "$wheel" >/dev/null
  find "$work/$name/unpacked" -name '*.so' -exec strip --strip-debug {} +
  "$python" -m wheel pack -d "$wheels" "$work/$name/unpacked"/* >/dev/null
  echo "$name $(( SECONDS - start )) s"
}

declare -A dirs=([flex_gemm]=FlexGEMM [o_voxel]=TRELLIS.2/o-voxel [cumesh]=CuMesh)
names="flex_gemm o_voxel cumesh"
for extra in ${EXTRA_PACKAGES:-}; do
  dirs[${extra%%=*}]=${extra#*=}
  names+=" ${extra%%=*}"
done
names=${PACKAGES:-$names}
for name in $names; do
  [ -n "${dirs[$name]:-}" ] || { echo "build_extensions.sh: unknown package '$name'" >&2; exit 2; }
done
if [[ " $names " == *" o_voxel "* ]]; then
  trim_o_voxel "$src/TRELLIS.2/o-voxel"
fi
pids=()
for name in $names; do
  build "$name" "$src/${dirs[$name]}" & pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do
  wait "$pid" || failed=1
done
if [ "$failed" -ne 0 ]; then
  echo "an extension failed to build; logs in $wheels/logs" >&2
  tail -n 30 "$wheels"/logs/*.log >&2
  exit 1
fi
printf '{"torch_cuda_arch_list": "%s", "variant": "%s", "cuda_version": "%s"}\n' \
  "$TORCH_CUDA_ARCH_LIST" "$VARIANT" "$CUDA_VERSION" >"$wheels/build-info.json"
ls -l "$wheels"/*.whl "$wheels/build-info.json"
