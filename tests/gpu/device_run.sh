#!/usr/bin/env bash
# GPU work on a bare, offline device machine, from the repository root:
#
#   tests/gpu/device_run.sh PHASES [SECONDS]     # PHASES: a comma list of build, tests, bench
#
# Needs, carried in the working tree (tests/gpu/prepare_cache.sh writes the first two):
#   .cache/src.tgz         the sources builder/fetch_sources.sh lays out (TRELLIS.2, CuMesh, FlexGEMM, nvdiffrast)
#   .cache/pywheels/*.whl  pure-Python packages the machine lacks
#   .cache/wheels/*.whl    the four extensions, built by the `build` phase of an earlier run; only
#                          those four: a trellis2 wheel there would shadow the source checkout
#   .cache/flex_gemm_autotune.json  (optional) an autotune cache from an earlier run on this GPU
# Phases:
#   build  compile the extensions that .cache/wheels/ lacks for this GPU (builder/build_extensions.sh;
#          all four take about 5 minutes, cumesh the longest) into $OUT/wheels/; copy them to
#          .cache/wheels/ for the next run
#   tests  pytest tests/gpu (PYTEST_ARGS adds options, e.g. "-k default"); $OUT/tests.log,
#          $OUT/gpu_results.json, $OUT/glbs.tgz
#   bench  benchmarks/run.py $BENCH_ARGS; $OUT/bench/results.json, $OUT/bench/BENCHMARKS.md
# SECONDS caps each test or bench phase (default 540). Every phase writes to $OUT as it goes, so
# a killed run still returns what it measured; the autotune cache comes back as
# $OUT/flex_gemm_autotune.json after every phase that ran kernels.
set -o pipefail
export PYTHONUNBUFFERED=1
phases=${1:?usage: device_run.sh build,tests,bench [SECONDS]}
limit=${2:-540}
out=${OUT:?the device tool sets OUT}
repo=$PWD
site=/tmp/site

rm -rf "$site" /tmp/src /tmp/gpu_out  # a warm machine keeps /tmp: start clean every time
mkdir -p "$site" /tmp/gpu_out "$out"
tar xzf .cache/src.tgz -C /tmp || exit 1
nvidia-smi --query-gpu=name,memory.used,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)'

if [[ $phases == *build* ]]; then
  missing=()
  for name in nvdiffrast flex_gemm o_voxel cumesh; do
    ls .cache/wheels/"$name"-*.whl >/dev/null 2>&1 || missing+=("$name")
  done
  start=$SECONDS
  if [ "${#missing[@]}" -gt 0 ]; then
    PACKAGES="${missing[*]}" TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-6} \
      builder/build_extensions.sh /tmp/src "$out/wheels" 2>&1 | tee "$out/build.log" || exit 1
    rm -rf "$out/wheels/logs"
  fi
  echo "build: ${missing[*]:-nothing to build} in $(( SECONDS - start )) s wall"
fi

shopt -s nullglob
wheels=(.cache/pywheels/*.whl .cache/wheels/*.whl "$out"/wheels/*.whl)
for wheel in "${wheels[@]}"; do
  case $(basename "$wheel") in trellis2-*) echo "refusing $wheel: it shadows /tmp/src/TRELLIS.2" >&2; exit 1 ;; esac
done
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
  "${wheels[@]}" || exit 1
export PYTHONPATH=$site:/tmp/src/TRELLIS.2:$repo HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export FLEX_GEMM_AUTOTUNE_CACHE_PATH=/tmp/flex_gemm_autotune.json TRELLIS_MV_GPU_OUT=/tmp/gpu_out
if [ -f .cache/flex_gemm_autotune.json ]; then
  cp .cache/flex_gemm_autotune.json "$FLEX_GEMM_AUTOTUNE_CACHE_PATH"
else
  cp /tmp/src/FlexGEMM/autotune_cache.json "$FLEX_GEMM_AUTOTUNE_CACHE_PATH"
fi
python3 -c 'import flex_gemm, cumesh, o_voxel, nvdiffrast.torch as dr; dr.RasterizeCudaContext(); print("extensions import")' || exit 1

keep_autotune() { cp "$FLEX_GEMM_AUTOTUNE_CACHE_PATH" "$out/flex_gemm_autotune.json"; }

if [[ $phases == *tests* ]]; then
  # shellcheck disable=SC2086  # PYTEST_ARGS is a list of options
  timeout "$limit" python3 -m pytest tests/gpu --confcutdir=tests/gpu -p no:cacheprovider -W default \
    -o timeout=600 -rA -q ${PYTEST_ARGS:-} 2>&1 | tee "$out/tests.log"
  cp /tmp/gpu_out/gpu_results.json "$out/" 2>/dev/null
  (cd /tmp/gpu_out && ls ./*.glb >/dev/null 2>&1 && tar czf "$out/glbs.tgz" ./*.glb)
  keep_autotune
fi
if [[ $phases == *bench* ]]; then
  mkdir -p "$out/bench"
  # shellcheck disable=SC2086  # BENCH_ARGS is a list of options
  timeout "$limit" python3 benchmarks/run.py --out "$out/bench" ${BENCH_ARGS:-} 2>&1 | tee "$out/bench.log" | grep -v "it/s\]$"
  keep_autotune
fi
ls -la "$out"
