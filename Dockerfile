# syntax=docker/dockerfile:1.7
# trellis-mv: the RunPod serverless worker image (docs/image.md). BuildKit is required:
#
#   DOCKER_BUILDKIT=1 docker build --secret id=hf_token,env=HF_TOKEN -t trellis-mv .
#
# The Hugging Face token (DINOv3 is gated) is a BuildKit secret: never an ARG or ENV, never in a
# layer or the history. Without it (the RunPod Hub builds with no secret and no build arguments)
# the public weights are baked and DINOv3 is left to the endpoint's cached model. Build arguments:
#   VARIANT=cu128           the Blackwell image: CUDA 12.8, torch 2.8 (builder/variants/cu128.env)
#   BAKE_WEIGHTS=all|none   all: fail without the token; none: bake nothing (default auto)
#   WITH_RMBG=1             also bake RMBG-2.0 (gated; its licence is non-commercial)
#   TORCH_CUDA_ARCH_LIST=9.0  compile the extensions for one GPU generation only (faster builds)
# Every pin lives in builder/versions.env and builder/variants/; the CUDA tags below repeat the
# variants' CUDA_VERSION (FROM cannot read a file) and tests/test_image_build.py keeps them equal.
#
# Stages: pins (the subsets of the pins each stage needs, so a runtime-only pin change does not
# recompile the extensions), base (CUDA runtime + Python + C toolchain), hf (huggingface_hub and the
# weights script), build (CUDA devel: the native extensions and trellis2 as wheels), runtime (the
# image: the weights in five layers of at most 5 GB first, then the Python set, wheels, project).

ARG VARIANT=cu124

# One stage per variant and kind; the stages below start from the one VARIANT names (hadolint cannot
# see through the variable: DL3006 is ignored there), and BuildKit pulls only that one.
FROM nvidia/cuda:12.4.1-runtime-ubuntu22.04 AS cuda-runtime-cu124
FROM nvidia/cuda:12.4.1-devel-ubuntu22.04 AS cuda-devel-cu124
FROM nvidia/cuda:12.8.1-runtime-ubuntu22.04 AS cuda-runtime-cu128
FROM nvidia/cuda:12.8.1-devel-ubuntu22.04 AS cuda-devel-cu128

# hadolint ignore=DL3006
FROM cuda-runtime-${VARIANT} AS pins
ARG VARIANT
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /pins
COPY builder/versions.env versions.env
COPY builder/variants/ variants/
# The variant's pins first: the builder scripts keep the first value of a key.
RUN test -r "variants/${VARIANT}.env" || { echo "unknown VARIANT=${VARIANT}; see builder/variants/" >&2; exit 1; } \
 && { echo "VARIANT=${VARIANT}"; cat "variants/${VARIANT}.env"; grep -v '^VARIANT=' versions.env; } >all.env \
 && grep -E '^(VARIANT|PYTHON_VERSION)=' all.env >base.env \
 && grep -E '^([A-Z0-9_]+_REVISION=|[A-Z0-9_]+_REPO=[^:]*$|GATED_REPOS=|PYTHON_VERSION=|VARIANT=)' all.env >weights.env \
 && grep -E '^(VARIANT|PYTHON_VERSION|CUDA_VERSION|TORCH_CUDA_ARCH_LIST|[A-Z0-9_]+_COMMIT|[A-Z0-9_]+_REPO)=' all.env \
      >build.env \
 && grep -E '^(VARIANT|PYTHON_VERSION|CUDA_VERSION|TORCH_VERSION|TORCHVISION_VERSION|XFORMERS_VERSION|TRANSFORMERS_VERSION|PILLOW_VERSION|FLASH_ATTN_URL|FLASH_ATTN_SHA256)=' \
      all.env >runtime.env

# ---- base: CUDA runtime libraries, Python and a C toolchain, shared by the hf and runtime stages
# hadolint ignore=DL3006
FROM cuda-runtime-${VARIANT} AS base
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY builder/lib.sh builder/install_system.sh /opt/builder/
COPY --from=pins /pins/base.env /opt/builder/versions.env
RUN /opt/builder/install_system.sh runtime

# ---- hf: the locked huggingface_hub and the weights script, mounted by the runtime stage's weight
# steps (never copied into the image). Its inputs are the Hub pins, the manifest and the script.
FROM base AS hf
COPY builder/lib.sh builder/install_python.sh /opt/builder/
COPY builder/locks/weights.txt /opt/builder/locks/
COPY --from=pins /pins/base.env /opt/builder/versions.env
RUN /opt/builder/install_python.sh weights /opt/weights/venv
COPY --from=pins /pins/weights.env /opt/weights/versions.env
COPY builder/pins.py builder/download_weights.py builder/weights_manifest.json builder/bake_layer.sh /opt/weights/

# ---- build: FlexGEMM, CuMesh and o_voxel compiled for the variant's GPU generations
# hadolint ignore=DL3006
FROM cuda-devel-${VARIANT} AS build
ARG VARIANT
ARG TORCH_CUDA_ARCH_LIST
ARG MAX_JOBS
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY builder/lib.sh builder/install_system.sh builder/install_python.sh /opt/builder/
COPY builder/locks/build-${VARIANT}.txt /opt/builder/locks/
COPY --from=pins /pins/build.env /opt/builder/versions.env
RUN /opt/builder/install_system.sh build \
 && /opt/builder/install_python.sh build /opt/venv
COPY builder/fetch_sources.sh /opt/builder/
RUN /opt/builder/fetch_sources.sh /src
COPY builder/build_extensions.sh builder/package_trellis2.sh /opt/builder/
RUN PYTHON=/opt/venv/bin/python /opt/builder/build_extensions.sh /src /wheels \
 && PYTHON=/opt/venv/bin/python /opt/builder/package_trellis2.sh /src /wheels \
 && rm -rf /wheels/logs

# ---- runtime: the image RunPod runs
FROM base AS runtime
ARG VARIANT
ARG BAKE_WEIGHTS=auto
ARG WITH_RMBG=0
# The weights first: 16.6 GB that change only with their pins, so a code change rebuilds and pushes
# only the small layers after them. One RUN per layer of builder/weights_manifest.json, each at most
# 5 GB (ghcr.io refuses layers over 10 GB); download_weights.py checks the files it wrote against the
# manifest's sizes and that limit. tests/test_image_layers.py sums the layers from the manifest.
RUN --mount=type=bind,from=hf,source=/opt/weights,target=/opt/weights \
    --mount=type=secret,id=hf_token,required=false /opt/weights/bake_layer.sh 1
# hadolint ignore=DL3059
RUN --mount=type=bind,from=hf,source=/opt/weights,target=/opt/weights \
    --mount=type=secret,id=hf_token,required=false /opt/weights/bake_layer.sh 2
# hadolint ignore=DL3059
RUN --mount=type=bind,from=hf,source=/opt/weights,target=/opt/weights \
    --mount=type=secret,id=hf_token,required=false /opt/weights/bake_layer.sh 3
# hadolint ignore=DL3059
RUN --mount=type=bind,from=hf,source=/opt/weights,target=/opt/weights \
    --mount=type=secret,id=hf_token,required=false /opt/weights/bake_layer.sh 4
# hadolint ignore=DL3059
RUN --mount=type=bind,from=hf,source=/opt/weights,target=/opt/weights \
    --mount=type=secret,id=hf_token,required=false /opt/weights/bake_layer.sh 5
COPY builder/lib.sh builder/install_python.sh builder/check_image.py builder/pins.py /opt/builder/
COPY builder/locks/runtime-${VARIANT}.txt /opt/builder/locks/
COPY --from=pins /pins/runtime.env /opt/builder/versions.env
RUN /opt/builder/install_python.sh runtime /opt/venv
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
COPY builder/install_wheels.sh /opt/builder/
RUN --mount=type=bind,from=build,source=/wheels,target=/tmp/wheels \
    PYTHON=/opt/venv/bin/python /opt/builder/install_wheels.sh /tmp/wheels
# What the extensions were compiled for, read by the worker's start-up check (trellis_mv.startup).
COPY --from=build /wheels/build-info.json /opt/trellis-mv/build-info.json
# FlexGEMM's setup.py writes its shipped autotune cache (A100, MI300X) to the build stage's home;
# the image keeps it at a fixed path with our entries (builder/flex_gemm_autotune/) merged in and
# every size bucket the worker's kernels can meet filled from its nearest tuned one (no job tunes
# where its GPU has entries); other GPUs add theirs on first use (the worker warms up at start
# where it holds none).
COPY --from=build /src/FlexGEMM/autotune_cache.json /opt/flex_gemm/autotune_cache.json
COPY builder/autotune_flexgemm.py /opt/builder/
COPY builder/flex_gemm_autotune/ /opt/builder/flex_gemm_autotune/
RUN python /opt/builder/autotune_flexgemm.py merge /opt/flex_gemm/autotune_cache.json \
      /opt/flex_gemm/autotune_cache.json /opt/builder/flex_gemm_autotune
ENV FLEX_GEMM_AUTOTUNE_CACHE_PATH=/opt/flex_gemm/autotune_cache.json
WORKDIR /app
# The project is installed from a read-write bind mount of the context (the build's scratch files
# are thrown away with it), without dependencies: they are the lock's. Only handler.py and the
# sample job stay in /app, so `import trellis_mv` always finds the installed package.
RUN --mount=type=bind,target=/tmp/project,rw \
    pip install --no-cache-dir --no-deps --no-build-isolation /tmp/project
COPY handler.py test_input.json ./
# No network at run time: every model is read from /models, a RunPod cached model or a network
# volume (trellis_mv/weights.py, docs/image.md).
ENV HF_HUB_OFFLINE=1
RUN python /opt/builder/check_image.py --python --extensions --toolchain \
      --build-info /opt/trellis-mv/build-info.json --weights "$BAKE_WEIGHTS"
CMD ["python", "-u", "handler.py"]
