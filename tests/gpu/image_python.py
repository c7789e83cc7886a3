"""A Python with the image's packages alone, made from the device's: a start measured as the image imports.

The device's python3 holds some 200 distributions the image lacks (pandas, pyarrow, scikit-learn,
scipy, jax, ...), and libraries import optional packages where they find them: transformers imports
scikit-learn's metrics for its generation utilities, trimesh imports scipy. A cold start measured
there imports seconds more than the image does. This script makes a virtual environment without
the system's packages and links into its site-packages, from the device's, every distribution the
image's runtime lock names and what those need (torch's CUDA libraries are named for the device's
CUDA there, so they come as torch's requirements, not by name). What ``device_run.sh`` installs
into ``/tmp/site`` (the lock's versions of the pure-Python packages) stays first on ``PYTHONPATH``.

    python3 tests/gpu/image_python.py DIR LOCK   # prints DIR/bin/python3

A folder several distributions install into (``nvidia/``, a namespace package) is made in DIR and
only the chosen distributions' entries are linked inside it.
"""

from __future__ import annotations

import argparse
import re
import site
import subprocess
import sys
from collections import defaultdict
from importlib import metadata
from pathlib import Path, PurePosixPath

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

__all__ = ["chosen", "lock_names", "make", "owners"]

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==")


def lock_names(lock: Path) -> set[str]:
    """The canonical names a pip-compile lock pins (``name==version`` lines)."""
    return {canonicalize_name(match.group(1)) for line in lock.read_text().splitlines() if (match := _PIN.match(line))}


def chosen(installed: dict[str, metadata.Distribution], names: set[str]) -> set[str]:
    """``names`` that are installed, and what they require, recursively (markers evaluated, extras not taken)."""
    todo = [name for name in names if name in installed]
    found: set[str] = set()
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        for text in installed[name].requires or ():
            try:
                requirement = Requirement(text)
            except InvalidRequirement:
                continue
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            if canonicalize_name(requirement.name) in installed:
                todo.append(canonicalize_name(requirement.name))
    return found


def owners(installed: dict[str, metadata.Distribution]) -> dict[PurePosixPath, set[str]]:
    """Every path prefix a distribution installed into site-packages, with the distributions under it."""
    under: dict[PurePosixPath, set[str]] = defaultdict(set)
    for name, dist in installed.items():
        for file in dist.files or ():
            parts = PurePosixPath(str(file)).parts
            if not parts or parts[0] == ".." or parts[0] == "__pycache__":
                continue
            for depth in range(1, len(parts) + 1):
                under[PurePosixPath(*parts[:depth])].add(name)
    return under


def make(target: Path, lock: Path, packages: Path) -> Path:
    """The virtual environment at ``target`` with the lock's distributions from ``packages`` linked in; its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--clear", str(target)], check=True)
    python = target / "bin" / "python3"
    site_dir = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                   check=True, capture_output=True, text=True).stdout.strip())
    installed = {canonicalize_name(dist.metadata["Name"]): dist for dist in metadata.distributions(path=[str(packages)])}
    keep = chosen(installed, lock_names(lock))
    under = owners(installed)

    def link(path: PurePosixPath) -> None:
        if under[path] <= keep or not (packages / path).is_dir():
            (site_dir / path).symlink_to(packages / path)
            return
        (site_dir / path).mkdir()
        for child in sorted({PurePosixPath(*entry.parts[: len(path.parts) + 1]) for entry in under
                             if len(entry.parts) > len(path.parts) and entry.parts[: len(path.parts)] == path.parts}):
            if under[child] & keep:
                link(child)

    for top in sorted(entry for entry in under if len(entry.parts) == 1 and under[entry] & keep):
        if (packages / top).exists() and not (site_dir / top).exists():
            link(top)
    missing = sorted(lock_names(lock) - set(installed))
    print(f"{len(keep)} distributions linked from {packages}; the lock's not there: {', '.join(missing) or 'none'}",
          file=sys.stderr)
    return python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", type=Path, help="the virtual environment to make (replaced)")
    parser.add_argument("lock", type=Path, help="the image's runtime lock, e.g. builder/locks/runtime-cu124.txt")
    parser.add_argument("--packages", type=Path, default=Path(site.getsitepackages()[0]),
                        help="the site-packages to link from (default: this Python's)")
    args = parser.parse_args()
    print(make(args.target, args.lock, args.packages))


if __name__ == "__main__":
    main()
