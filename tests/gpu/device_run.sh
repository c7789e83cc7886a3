#!/usr/bin/env bash
# The GPU tests and/or the benchmark on a bare device machine, from the repo root:
#
#   tests/gpu/device_run.sh PHASES TESTS_SECONDS BENCH_SECONDS [PYTEST_K]   # PHASES: tests, bench or tests,bench
#
# Needs, carried in the working tree: .cache/src.tgz (fetch_sources.sh's tree: TRELLIS.2 and
# FlexGEMM's autotune cache), .cache/wheels/*.whl (the four extensions built there),
# .cache/pywheels/*.whl (pure-python dependencies the machine lacks) and, when one exists, an H100
# FlexGEMM autotune cache at .cache/flex_gemm_autotune.json. BENCH_ARGS passes options to
# benchmarks/run.py (e.g. --runs cascade_stochastic --cascade-steps 12 --base benchmarks/results.json). Writes to $OUT: gpu_results.json,
# glbs.tgz, tests.log, bench/results.json, bench/BENCHMARKS.md, bench.log, flex_gemm_autotune.json.
set -o pipefail
export PYTHONUNBUFFERED=1
phases=${1:-tests,bench}
out=${OUT:?the device tool sets OUT}
mkdir -p /tmp/site /tmp/gpu_out "$out/bench"
tar xzf .cache/src.tgz -C /tmp || exit 1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
  .cache/pywheels/*.whl .cache/wheels/*.whl || exit 1
if ! python3 -c 'import importlib.metadata as m, sys; sys.exit(tuple(map(int, m.version("typing_extensions").split(".")[:2])) < (4, 16))'; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .cache/pyextra/typing_extensions-*.whl
fi
export PYTHONPATH=/tmp/site:/tmp/src/TRELLIS.2:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export FLEX_GEMM_AUTOTUNE_CACHE_PATH=/tmp/flex_gemm_autotune.json TRELLIS_MV_GPU_OUT=/tmp/gpu_out
cp "$( [ -f .cache/flex_gemm_autotune.json ] && echo .cache/flex_gemm_autotune.json || echo /tmp/src/FlexGEMM/autotune_cache.json )" \
  "$FLEX_GEMM_AUTOTUNE_CACHE_PATH"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
if [[ $phases == *tests* ]]; then
  timeout "${2:-300}" python3 -m pytest tests/gpu/test_parity.py tests/gpu/test_encoders.py tests/gpu/test_handler_e2e.py --confcutdir=tests/gpu -p no:cacheprovider -W default \
    -o timeout=600 -rA -q ${4:+-k "$4"} 2>&1 | tee "$out/tests.log"
  cp /tmp/gpu_out/gpu_results.json "$out/" 2>/dev/null
  (cd /tmp/gpu_out && ls ./*.glb >/dev/null 2>&1 && tar czf "$out/glbs.tgz" ./*.glb)
  cp "$FLEX_GEMM_AUTOTUNE_CACHE_PATH" "$out/flex_gemm_autotune.json"
fi
if [[ $phases == *bench* ]]; then
  # shellcheck disable=SC2086  # BENCH_ARGS is a list of options
  timeout "${3:-240}" python3 benchmarks/run.py --out "$out/bench" ${BENCH_ARGS:-} 2>&1 | tee "$out/bench.log" | grep -v "it/s\]$"
  cp "$FLEX_GEMM_AUTOTUNE_CACHE_PATH" "$out/flex_gemm_autotune.json"
fi
ls -la "$out" "$out/bench"
