# syntax=docker/dockerfile:1.7
# trellis-mv: the RunPod serverless worker image (docs/image.md). BuildKit is required:
#
#   DOCKER_BUILDKIT=1 docker build --secret id=hf_token,env=HF_TOKEN -t trellis-mv .
#
# The Hugging Face token (DINOv3 is gated) is a BuildKit secret: never an ARG or ENV, never in a
# layer or the history. Build arguments:
#   BAKE_WEIGHTS=0          leave /models empty: weights come from a network volume (docs/image.md)
#   WITH_RMBG=1             also bake RMBG-2.0 (gated; its licence is non-commercial)
#   TORCH_CUDA_ARCH_LIST=9.0  compile the extensions for one GPU generation only (faster builds)
# Every version lives in builder/versions.env; the ARG defaults below repeat a few of them so a
# build can override them, and tests/test_image_build.py keeps the two equal.
#
# Stages: pins (the subsets of versions.env each stage needs, so a runtime-only pin change does not
# recompile the extensions or download the weights again), base (CUDA runtime + Python), weights,
# build (CUDA devel: the native extensions and trellis2 as wheels), runtime (the image).

ARG CUDA_VERSION=12.4.1
ARG UBUNTU_VERSION=22.04

FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu${UBUNTU_VERSION} AS pins
WORKDIR /pins
COPY builder/versions.env versions.env
RUN grep -E '^PYTHON_VERSION=' versions.env >base.env \
 && grep -E '^([A-Z0-9_]+_REVISION=|[A-Z0-9_]+_REPO=[^:]*$)' versions.env >weights.env \
 && grep -E '^(PYTHON_VERSION|TORCH_[A-Z_]+|TORCHVISION_VERSION|SETUPTOOLS_VERSION|BUILD_PACKAGES|[A-Z0-9_]+_COMMIT|[A-Z0-9_]+_REPO)=' \
      versions.env >build.env

# ---- base: CUDA 12.4 runtime libraries and Python, shared by the weights and runtime stages
FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu${UBUNTU_VERSION} AS base
ARG PYTHON_VERSION=3.11
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY builder/lib.sh builder/install_system.sh /opt/builder/
COPY --from=pins /pins/base.env /opt/builder/versions.env
RUN /opt/builder/install_system.sh runtime

# ---- weights: huggingface_hub at pinned revisions. Its only inputs are the Hub pins and the script
# (huggingface_hub is installed here, not by install_python.sh, so that editing that script does
# not download 16 GB again).
FROM base AS weights
ARG PYTHON_VERSION=3.11
ARG HF_HUB_VERSION=0.36.2
ARG BAKE_WEIGHTS=1
ARG WITH_RMBG=0
RUN "python${PYTHON_VERSION}" -m venv /opt/hf \
 && /opt/hf/bin/pip install --no-cache-dir "huggingface_hub==${HF_HUB_VERSION}"
COPY --from=pins /pins/weights.env /opt/builder/versions.env
COPY builder/download_weights.py /opt/builder/
RUN --mount=type=secret,id=hf_token,required=false \
    mkdir -p /models \
 && if [ "$BAKE_WEIGHTS" = 1 ]; then \
      if [ "$WITH_RMBG" = 1 ]; then set -- --rmbg; fi; \
      /opt/hf/bin/python /opt/builder/download_weights.py /models "$@"; \
    fi

# ---- build: FlexGEMM, CuMesh, nvdiffrast and o_voxel compiled for every GPU generation RunPod rents
FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu${UBUNTU_VERSION} AS build
ARG PYTHON_VERSION=3.11
ARG TORCH_VERSION=2.6.0
ARG TORCHVISION_VERSION=0.21.0
ARG TORCH_CUDA_ARCH_LIST="8.0 8.6 8.9 9.0"
ARG MAX_JOBS
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY builder/lib.sh builder/install_system.sh builder/install_python.sh /opt/builder/
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
ARG TORCH_VERSION=2.6.0
ARG TORCHVISION_VERSION=0.21.0
ARG BAKE_WEIGHTS=1
# Unset: versions.env's sha256 of the flash-attn wheel is checked; set, this value is checked instead.
ARG FLASH_ATTN_SHA256
# The weights first: 16 GB that change only with their pins, so a code change rebuilds and pushes
# only the small layers after them.
COPY --from=weights /models /models
COPY builder/ /opt/builder/
RUN /opt/builder/install_python.sh runtime /opt/venv
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN --mount=type=bind,from=build,source=/wheels,target=/tmp/wheels \
    PYTHON=/opt/venv/bin/python /opt/builder/install_wheels.sh /tmp/wheels
# FlexGEMM's setup.py writes its shipped autotune cache (A100, MI300X) to the build stage's home;
# the image keeps it at a fixed path, where other GPUs add their entries on first use.
COPY --from=build /src/FlexGEMM/autotune_cache.json /opt/flex_gemm/autotune_cache.json
ENV FLEX_GEMM_AUTOTUNE_CACHE_PATH=/opt/flex_gemm/autotune_cache.json
WORKDIR /app
# The project is installed from a read-write bind mount of the context (the build's scratch files
# are thrown away with it); only handler.py and the sample job stay in /app, so `import trellis_mv`
# always finds the installed package.
RUN --mount=type=bind,target=/tmp/project,rw \
    pip install --no-cache-dir --no-build-isolation /tmp/project
COPY handler.py test_input.json ./
# No network at run time: every model is read from /models (or a network volume, docs/image.md).
ENV HF_HUB_OFFLINE=1
RUN python /opt/builder/check_image.py --python --extensions \
 && if [ "$BAKE_WEIGHTS" = 1 ]; then python /opt/builder/check_image.py --weights; fi
CMD ["python", "-u", "handler.py"]
