#!/usr/bin/env bash
# Package TRELLIS.2's trellis2/ directory as a wheel, so pip installs (and can uninstall) it.
#
#   builder/package_trellis2.sh SRC WHEELS
#
# SRC is the layout fetch_sources.sh writes (a git checkout or an unpacked archive of it at
# TRELLIS2_COMMIT); the wheel trellis2-0.0.0+g<commit>-py3-none-any.whl goes to WHEELS. TRELLIS.2 ships no packaging for trellis2 (its setup.sh only installs
# dependencies), and copying the directory into site-packages or adding a .pth would leave pip
# unaware of it, or put the whole repository (app.py, train.py, ...) on sys.path. The wheel holds
# trellis2/ alone, including its namespace subpackages (trellis2/modules has no __init__.py), with
# the commit in its version. Dependencies are installed from versions.env, not declared here.
# Environment: PYTHON (default python3; needs setuptools >= 70 and wheel), TRELLIS2_COMMIT.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=builder/lib.sh
source "$here/lib.sh"
load_versions

src=$(cd "${1:?usage: package_trellis2.sh SRC WHEELS}" && pwd)/TRELLIS.2
mkdir -p "${2:?usage: package_trellis2.sh SRC WHEELS}"
wheels=$(cd "$2" && pwd)
python=${PYTHON:-python3}
commit=$TRELLIS2_COMMIT
if [ -d "$src/.git" ] && [ "$(git -C "$src" rev-parse HEAD)" != "$commit" ]; then
  echo "package_trellis2.sh: $src is not at TRELLIS2_COMMIT $commit" >&2
  exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cp -r "$src/trellis2" "$work/trellis2"
find "$work/trellis2" -name __pycache__ -prune -exec rm -rf {} +
cat >"$work/pyproject.toml" <<TOML
[build-system]
requires = ["setuptools>=70"]
build-backend = "setuptools.build_meta"

[project]
name = "trellis2"
version = "0.0.0+g${commit:0:12}"
description = "microsoft/TRELLIS.2 @ ${commit}: the trellis2 package, packaged by trellis-mv"
license = { text = "MIT" }

[tool.setuptools.packages.find]
include = ["trellis2", "trellis2.*"]
namespaces = true
TOML
rm -f "$wheels"/trellis2-*.whl
"$python" -m pip wheel --no-build-isolation --no-deps --disable-pip-version-check -q -w "$wheels" "$work"
ls "$wheels"/trellis2-*.whl
