#!/usr/bin/env bash
# Install the system packages of one image stage on Ubuntu (22.04 in the image), as root.
#
#   builder/install_system.sh runtime|build
#
# runtime: Python $PYTHON_VERSION with venv, libgomp (FlexGEMM is built with -fopenmp), CA
#          certificates and curl (flash-attn's wheel is fetched by URL), and a C compiler with the
#          C library headers and Python's: Triton compiles a small launcher module the first time
#          it launches a kernel (builder/check_image.py --toolchain proves it works).
# build:   runtime's packages plus a C++ toolchain and git, which the extensions' setup.py and
#          fetch_sources.sh need (nvcc comes with the CUDA devel image).
# On Ubuntu, Python comes from the deadsnakes PPA: 22.04's own archive has 3.10 and only a 3.11.0
# release candidate in universe. Idempotent: the PPA is added once and apt-get installs only what
# is missing. Environment: PYTHON_VERSION (default from versions.env).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=builder/lib.sh
source "$here/lib.sh"
load_versions

role=${1:?usage: install_system.sh runtime|build}
py=python$PYTHON_VERSION
packages=(ca-certificates curl libgomp1 "$py" "$py-venv" "$py-dev" gcc libc6-dev)
case $role in
  runtime) ;;
  build) packages+=(build-essential git) ;;
  *) echo "install_system.sh: unknown role '$role' (expected runtime or build)" >&2; exit 2 ;;
esac

export DEBIAN_FRONTEND=noninteractive
apt-get update
. /etc/os-release
if [ "$ID" = ubuntu ] && ! grep -rqs deadsnakes /etc/apt/sources.list /etc/apt/sources.list.d; then
  apt-get install -y --no-install-recommends software-properties-common gpg-agent
  add-apt-repository -y ppa:deadsnakes/ppa
  apt-get update
fi
apt-get install -y --no-install-recommends "${packages[@]}"
rm -rf /var/lib/apt/lists/*
"$py" --version
