"""The Khronos glTF validator on a device run's GLBs, here (the device has no node): per file, and summed.

    python benchmarks/validate_glbs.py RUN_DIR... [--out checks.json]

Each RUN_DIR (one per device call; a later call's GLB of the same name wins) holds the ``glbs.tgz.NN`` parts tests/gpu/device_run.sh returns (one gzipped tar cut into
pieces under the device tool's file-size cap; parts it could not return are missing from the end,
so a cut archive still yields every GLB it holds whole, and says which one it lost), or loose
``*.glb`` files. Each GLB goes through ``node tests/gltf_validate.mjs`` (npm ``gltf-validator``,
installed by ``npm ci``). ``default_glb_validator_errors`` sums the errors of the default-request
GLBs (``default_*.glb``, tests/gpu/test_default_job.py).
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import tarfile
import tempfile
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PARTS = "glbs.tgz.*"


def unpack(parts: list[Path], dest: Path) -> dict[str, Any]:
    """Extract the ``.glb`` members of the joined ``parts`` into ``dest``; names extracted and whether the archive was cut."""
    stream = io.BytesIO(b"".join(part.read_bytes() for part in sorted(parts)))
    names: list[str] = []
    cut = None
    try:
        with tarfile.open(fileobj=stream, mode="r|gz") as archive:
            for member in archive:
                name = Path(member.name).name
                if member.isfile() and name.endswith(".glb"):
                    cut = name  # until it is written whole
                    (dest / name).write_bytes(archive.extractfile(member).read())
                    names.append(name)
                    cut = None
    except (tarfile.ReadError, EOFError, zlib.error):
        return {"extracted": names, "cut_short": True, "lost_at": cut}
    return {"extracted": names, "cut_short": False}


def validate(glb: Path) -> dict[str, Any]:
    """The validator's counts for one GLB, and how often each issue code came up."""
    report = json.loads(subprocess.run(["node", str(ROOT / "tests" / "gltf_validate.mjs"), str(glb)],
                                       capture_output=True, text=True, check=True).stdout)
    issues = report["issues"]
    return {"bytes": glb.stat().st_size, "errors": issues["numErrors"], "warnings": issues["numWarnings"],
            "infos": issues["numInfos"], "hints": issues["numHints"], "truncated": issues.get("truncated", False),
            "codes": dict(Counter(message["code"] for message in issues["messages"]))}


def check_runs(run_dirs: list[Path]) -> dict[str, Any]:
    """Every GLB of the runs, validated (a later run's file of the same name wins); the archives' state
    (every GLB extracted, and the one lost where a run's archive was cut) and the default-request sum."""
    archive: dict[str, Any] = {"extracted": [], "cut_short": False}
    checks: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for index, run_dir in enumerate(run_dirs):
            folder = Path(scratch) / str(index)
            folder.mkdir()
            parts = list(run_dir.glob(PARTS))
            if parts:
                state = unpack(parts, folder)
                archive["extracted"] += state["extracted"]
                if state["cut_short"]:
                    archive.update(cut_short=True, lost_at=state["lost_at"])
            for glb in sorted(folder.glob("*.glb")) + sorted(run_dir.glob("*.glb")):
                checks[glb.name] = validate(glb)
    defaults = {name: check for name, check in checks.items() if name.startswith("default_")}
    return {"archive": archive, "glbs": checks, "default_glbs": sorted(defaults),
            "default_glb_validator_errors": sum(check["errors"] for check in defaults.values()) if defaults else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, help="write the checks here as JSON (default: print them)")
    args = parser.parse_args()
    text = json.dumps(check_runs(args.run_dirs), indent=1)
    if args.out:
        args.out.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
