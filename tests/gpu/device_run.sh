#!/usr/bin/env bash
# GPU work on a bare, offline device machine, from the repository root (docs/gpu-testing.md):
#
#   tests/gpu/device_run.sh PHASES [SECONDS]
#
# PHASES, a comma list; they run in this order, whatever the order given:
#   build      compile the extensions .cache/wheels/ lacks for this GPU (builder/build_extensions.sh;
#              all four about 5 min, cumesh the longest) into $OUT/wheels/; copy them to
#              .cache/wheels/ for the next runs. Four: the image's three (flex_gemm, o_voxel,
#              cumesh) and, for the harness alone, nvdiffrast (HARNESS_ONLY below)
#   autotune   FlexGEMM entries for this GPU, every shape the decoders and the export meet:
#              builder/autotune_flexgemm.py tune $AUTOTUNE_ARGS
#   coldstart  handler.py from launch to ready, warm-up included, on 16 GB of weights: benchmarks/cold_start.py $COLDSTART_ARGS,
#              and --baseline for each tree prepare_cache.sh wrote in .cache/baselines/ (BASELINE="<rev>...")
#   firstjob   a fresh worker's first job vs its second, per pipeline type: benchmarks/first_job.py $FIRSTJOB_ARGS
#   tests      pytest ${PYTEST_TARGETS:-tests/gpu} $PYTEST_ARGS (targets: test files, space-separated;
#              args: options without spaces inside one, e.g. "-x --durations=0")
#   bench      benchmarks/run.py $BENCH_ARGS
# SECONDS (default 560) is the whole run's budget: each phase may use what the earlier ones left.
#
# Needs, carried in the working tree (tests/gpu/prepare_cache.sh writes the first three):
#   .cache/src.tgz         the sources builder/fetch_sources.sh lays out (TRELLIS.2, CuMesh, FlexGEMM) and nvdiffrast
#   .cache/pywheels/*.whl  pure-Python packages the machine lacks
#   .cache/commit          the commit this tree is (a copy has no .git); TRELLIS_MV_COMMIT overrides it
#   .cache/wheels/*.whl    the four extension wheels, from the `build` phase of an earlier run; only those:
#                          a trellis2 wheel would shadow the source checkout the tests import
# FlexGEMM reads one cache file: FlexGEMM's own, our builder/flex_gemm_autotune/*.json and, if present,
# .cache/flex_gemm_autotune.json (an earlier run's), merged and filled as the image's; the autotune
# phase tunes from them as tuned (merge --as-tuned), and its entries are merged in.
#
# Returns in $OUT (the device tool brings back at most 8 files, 16 MiB each, 64 MiB in all):
#   results.tgz       every phase's small files, rewritten after each phase (a killed run keeps what
#                     finished): env.json, *.log, gpu_results.json, bench/, first_job.json,
#                     cold_start.json, flex_gemm_autotune/<gpu>.json, flex_gemm_autotune_cache.json
#   glbs.tgz.NN       the tests' meshes (*.npz, first), GLBs (default_* next) and preview sheets (*.png, last), one gzipped
#                     tar cut into 15 MiB parts; parts
#                     past the caps are dropped (benchmarks/validate_glbs.py says what was lost)
#   wheels/*.whl      after `build`
# Then, on the machine that has node: python benchmarks/report.py <fetched folder> (docs/gpu-testing.md).
set -o pipefail
shopt -s nullglob
export PYTHONUNBUFFERED=1
phases=${1:?usage: device_run.sh build,autotune,firstjob,coldstart,tests,bench [SECONDS]}
deadline=$(( SECONDS + ${2:-560} ))
out=${OUT:?the device tool sets OUT}
repo=$PWD
site=/tmp/site run=/tmp/run_out weights=/tmp/weights
# As the image should run FlexGEMM: one merged cache, not rewritten after every new key (autosave off).
export FLEX_GEMM_AUTOTUNE_CACHE_PATH=/tmp/flex_gemm_autotune.json FLEX_GEMM_AUTOSAVE_AUTOTUNE_CACHE=0
export TRITON_CACHE_DIR=/tmp/triton
export TRELLIS_MV_GPU_OUT=/tmp/gpu_out HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export TRELLIS_MV_COMMIT=${TRELLIS_MV_COMMIT:-$(cat .cache/commit 2>/dev/null || echo unknown)}

# A warm machine keeps /tmp, ~/.triton and the repository's leftovers: start clean every time.
rm -rf "$site" /tmp/src "$TRELLIS_MV_GPU_OUT" "$run" "$weights" "$TRITON_CACHE_DIR" "$repo/.cold_start" \
  "$FLEX_GEMM_AUTOTUNE_CACHE_PATH"
mkdir -p "$site" "$TRELLIS_MV_GPU_OUT" "$run" "$out"
tar xzf .cache/src.tgz -C /tmp || exit 1

left() { echo $(( deadline - SECONDS )); }
asked() { [[ ,$phases, == *,$1,* ]]; }
wanted() {
  asked "$1" || return 1
  [ "$(left)" -gt 30 ] || { echo "$1: skipped, $(left) s left" | tee -a "$run/skipped.log"; return 1; }
}
pack() {
  cp "$FLEX_GEMM_AUTOTUNE_CACHE_PATH" "$run/flex_gemm_autotune_cache.json" 2>/dev/null
  tar czf "$out/results.tgz.part" -C "$run" . && mv "$out/results.tgz.part" "$out/results.tgz"
}
# Python with trellis2's sparse attention pointed at the SDPA stand-in (no flash-attn on the device),
# for scripts that do not set it up themselves (benchmarks/*.py do, through gpu_env).
shimmed() {
  PYTHONPATH=$repo/tests/gpu/shims:$repo/tests/gpu:$PYTHONPATH ATTN_BACKEND=sdpa SPARSE_ATTN_BACKEND=flash_attn "$@"
}

python3 - "$run/env.json" <<'EOF'
import datetime, json, os, subprocess, sys, torch
smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                     capture_output=True, text=True).stdout.strip()
df = subprocess.run(["df", "-h", os.getcwd(), "/tmp"], capture_output=True, text=True).stdout
json.dump({"commit": os.environ["TRELLIS_MV_COMMIT"], "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "gpu": smi, "python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
           "cpus": os.cpu_count(), "df": df.splitlines()}, open(sys.argv[1], "w"), indent=1)
EOF
cat "$run/env.json"

# The image's extensions, and what only the harness builds: NVIDIA's rasterizer, research-only by
# its licence, which the image never installs; the GPU tests compare our rasterizers and bake with it.
IMAGE_EXTENSIONS=(flex_gemm o_voxel cumesh)
HARNESS_ONLY=(nvdiffrast)
# An o_voxel wheel from before builder/lib.sh's trim_o_voxel still imports its postprocess module, and
# with it the research-only rasterizer: the build phase builds o_voxel again; without it, stop here.
for wheel in .cache/wheels/o_voxel-*.whl; do
  if python3 -c 'import sys, zipfile; sys.exit(b"postprocess" not in zipfile.ZipFile(sys.argv[1]).read("o_voxel/__init__.py"))' "$wheel"; then
    if ! asked build; then
      echo "$wheel imports o_voxel.postprocess (built before trim_o_voxel): add the build phase, which builds it again" >&2
      pack; exit 1
    fi
    echo "build: $wheel imports o_voxel.postprocess: building o_voxel again" | tee -a "$run/build.log"
    rm -f "$wheel"
  fi
done
if wanted build; then
  missing=()
  for name in "${IMAGE_EXTENSIONS[@]}" "${HARNESS_ONLY[@]}"; do
    compgen -G ".cache/wheels/$name-*.whl" >/dev/null || missing+=("$name")
  done
  start=$SECONDS
  if [ ${#missing[@]} -gt 0 ]; then
    PACKAGES="${missing[*]}" EXTRA_PACKAGES="nvdiffrast=nvdiffrast" TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} \
      MAX_JOBS=${MAX_JOBS:-6} builder/build_extensions.sh /tmp/src "$out/wheels" 2>&1 | tee "$run/build.log" || { pack; exit 1; }
    rm -rf "$out/wheels/logs"
  fi
  echo "build: ${missing[*]:-nothing missing} in $(( SECONDS - start )) s wall" | tee -a "$run/build.log"
  pack
fi

wheels=(.cache/wheels/*.whl "$out"/wheels/*.whl)
if [ ${#wheels[@]} -lt 4 ]; then
  echo "fewer than four extension wheels: run the build phase and copy \$OUT/wheels/*.whl to .cache/wheels/" >&2
  pack; exit 1
fi
for wheel in .cache/pywheels/*.whl "${wheels[@]}"; do
  case $(basename "$wheel") in trellis2-*) echo "refusing $wheel: it shadows /tmp/src/TRELLIS.2" >&2; exit 1 ;; esac
done
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
  .cache/pywheels/*.whl "${wheels[@]}" || exit 1
export PYTHONPATH=$site:/tmp/src/TRELLIS.2:$repo
# Compiled modules, as the image has them (pip compiles what it installs): a start never compiles
# sources, which took seconds of the cold start's imports (transformers, trellis2) here before.
python3 -m compileall -q -j 0 "$site" /tmp/src/TRELLIS.2/trellis2 "$repo/trellis_mv" >/dev/null 2>&1 \
  || echo "compileall: some files did not compile (a package's Python 2 leftovers?); the rest did"
caches=(/tmp/src/FlexGEMM/autotune_cache.json builder/flex_gemm_autotune/*.json)
[ -f .cache/flex_gemm_autotune.json ] && caches+=(.cache/flex_gemm_autotune.json)
# The entries as tuned (the autotune phase's input: it re-times no key the file holds), then the one
# FlexGEMM reads, as the image's: the untuned buckets filled from their neighbours.
tuned_cache=/tmp/flex_gemm_tuned.json
python3 builder/autotune_flexgemm.py merge --as-tuned "$tuned_cache" "${caches[@]}" || exit 1
python3 builder/autotune_flexgemm.py merge "$FLEX_GEMM_AUTOTUNE_CACHE_PATH" "$tuned_cache" || exit 1
echo "FlexGEMM cache from: ${caches[*]}"
# The image's extensions import without the harness-only ones (o_voxel, trimmed, no longer pulls
# the rasterizer in); then the harness's own for the comparison tests.
python3 -c 'import sys, flex_gemm, cumesh, o_voxel; assert "nvdiffrast" not in sys.modules, "o_voxel imported nvdiffrast"; print("extensions import")' \
  || exit 1
python3 -c 'import nvdiffrast.torch as dr; dr.RasterizeCudaContext(); print("harness-only nvdiffrast imports")' || exit 1

if wanted autotune || wanted firstjob; then
  # partial random weights (seconds to write; the load path and shapes are those of full ones)
  shimmed python3 -c 'import sys; from pathlib import Path; from random_weights import write_weights; write_weights(Path(sys.argv[1]))' \
    "$weights" >"$run/weights.log" 2>&1 || echo "writing random weights failed: see weights.log" >&2
fi
if wanted autotune; then
  # shellcheck disable=SC2086  # *_ARGS are lists of options
  shimmed env FLEX_GEMM_AUTOTUNE_CACHE_PATH="$tuned_cache" timeout "$(left)" python3 builder/autotune_flexgemm.py tune \
    --model-dir "$weights/TRELLIS.2-4B" --background-model "$weights/BiRefNet" --out-dir "$run/flex_gemm_autotune" \
    ${AUTOTUNE_ARGS:-} 2>&1 | tee "$run/autotune.log"
  python3 builder/autotune_flexgemm.py merge "$FLEX_GEMM_AUTOTUNE_CACHE_PATH" "$tuned_cache" "$run"/flex_gemm_autotune/*.json
  pack
fi
if wanted coldstart; then
  # As the image imports: the lock's packages alone, not the device's 200 more (tests/gpu/image_python.py).
  image_python=$(python3 tests/gpu/image_python.py /tmp/image-python builder/locks/runtime-cu124.txt 2>"$run/image_python.log") \
    || { cat "$run/image_python.log"; pack; exit 1; }
  # Compiled modules, as pip leaves them in the image: the device's packages were installed without
  # theirs, in a folder a start cannot write to, and every start compiled sympy's and torch's modules
  # from source (under py-spy, 4 s of the main thread's imports and 4 s of the encoders' thread). Here
  # they are compiled once into a folder of their own, which the worker and its children read.
  export PYTHONPYCACHEPREFIX=/tmp/pycache
  mapfile -t paths < <("$image_python" -c 'import sys; print("\n".join(p for p in sys.path[1:] if p and p != sys.argv[1]))' "$repo")
  baseline=() trees=("$repo/trellis_mv")
  for tree in "$repo"/.cache/baselines/*/; do
    [ -f "$tree/handler.py" ] || continue
    baseline+=(--baseline "${tree%/}") trees+=("${tree}trellis_mv")
  done
  # find -L: the linked packages are symbolic links, which compileall's walk passes over
  find -L "${paths[@]}" "${trees[@]}" -name '*.py' \
    -not -path '*/test/*' -not -path '*/tests/*' -print0 2>/dev/null \
    | xargs -0 -n 400 -P "$(nproc)" "$image_python" -m compileall -qq >/dev/null 2>&1 \
    || echo "compileall: some files did not compile; the rest did"
  echo "compiled into $PYTHONPYCACHEPREFIX: $(find "$PYTHONPYCACHEPREFIX" -name '*.pyc' | wc -l) modules" | tee -a "$run/image_python.log"
  # shellcheck disable=SC2086
  timeout "$(left)" "$image_python" benchmarks/cold_start.py --out "$run" --root "$repo/.cold_start" "${baseline[@]}" ${COLDSTART_ARGS:-} \
    2>&1 | tee "$run/coldstart.log"
  unset PYTHONPYCACHEPREFIX
  rm -rf "$repo/.cold_start"
  pack
fi
if wanted firstjob; then
  # shellcheck disable=SC2086
  timeout "$(left)" python3 benchmarks/first_job.py --out "$run" --model-dir "$weights/TRELLIS.2-4B" \
    --entries "$FLEX_GEMM_AUTOTUNE_CACHE_PATH" --untuned /tmp/src/FlexGEMM/autotune_cache.json ${FIRSTJOB_ARGS:-} \
    2>&1 | tee "$run/firstjob.log"
  pack
fi
rm -rf "$weights"
if wanted tests; then
  # shellcheck disable=SC2086
  timeout "$(left)" python3 -m pytest ${PYTEST_TARGETS:-tests/gpu} --confcutdir=tests/gpu -p no:cacheprovider -W default \
    -o timeout=600 -rA -q ${PYTEST_ARGS:-} 2>&1 | tee "$run/tests.log"
  cp "$TRELLIS_MV_GPU_OUT/gpu_results.json" "$run/" 2>/dev/null
  pack
  # GLBs: defaults first, cut into parts within what the device tool returns (8 files, 64 MiB; 60 used at most)
  (cd "$TRELLIS_MV_GPU_OUT" && for npz in *.npz; do echo "$npz"; done && for glb in default_*.glb; do echo "$glb"; done \
    && for glb in *.glb; do [[ $glb == default_* ]] || echo "$glb"; done && for png in *.png; do echo "$png"; done) >/tmp/glbs.txt
  if [ -s /tmp/glbs.txt ]; then
    tar czf - -C "$TRELLIS_MV_GPU_OUT" -T /tmp/glbs.txt | split -b 15M -d -a 2 - "$out/glbs.tgz."
    others=$(find "$out" -type f ! -name 'glbs.tgz.*' | wc -l)
    used=$(find "$out" -type f ! -name 'glbs.tgz.*' -printf '%s\n' | awk '{s += $1} END {print s + 0}')
    keep=$(( (60 * 1048576 - used) / (15 * 1048576) ))
    [ "$keep" -le $(( 8 - others )) ] || keep=$(( 8 - others ))
    find "$out" -name 'glbs.tgz.*' | sort | tail -n +$(( keep + 1 )) | xargs -r rm -f
    echo "GLBs: $(wc -l </tmp/glbs.txt) files, $(find "$out" -name 'glbs.tgz.*' | wc -l) parts returned"
  fi
fi
if wanted bench; then
  mkdir -p "$run/bench"
  # shellcheck disable=SC2086
  timeout "$(left)" python3 benchmarks/run.py --out "$run/bench" ${BENCH_ARGS:-} 2>&1 | tee "$run/bench.log" \
    | grep -v "it/s\]$"
  pack
fi
pack
ls -la "$out"
