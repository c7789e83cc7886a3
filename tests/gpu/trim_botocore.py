"""Trim a botocore wheel, in place, to the service models the worker uses: S3's and the shared files.

botocore ships the model of every AWS service (about 12 of its 14 MB, compressed JSON read only when a
client for that service is made); the worker and runpod make S3 clients alone, and what travels to the
device machine is size-limited. RECORD loses the removed files' rows; a wheel already trimmed is left.

    python3 tests/gpu/trim_botocore.py botocore-X-py3-none-any.whl
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

__all__ = ["KEPT_SERVICES", "kept", "trim"]

KEPT_SERVICES = ("s3",)


def kept(name: str) -> bool:
    """Whether a wheel member stays: everything but the models under ``botocore/data/<service>/`` of other services."""
    parts = name.split("/")
    return not (parts[:2] == ["botocore", "data"] and len(parts) > 3 and parts[2] not in KEPT_SERVICES)


def trim(wheel: Path) -> int:
    """Rewrite ``wheel`` without the other services' models; returns how many members were removed."""
    with zipfile.ZipFile(wheel) as source:
        members = source.infolist()
        dropped = {info.filename for info in members if not kept(info.filename)}
        if not dropped:
            return 0
        trimmed = wheel.with_suffix(".part")
        with zipfile.ZipFile(trimmed, "w", zipfile.ZIP_DEFLATED) as target:
            for info in members:
                if info.filename in dropped:
                    continue
                data = source.read(info)
                if info.filename.endswith(".dist-info/RECORD"):
                    rows = data.decode().splitlines(keepends=True)
                    data = "".join(row for row in rows if row.split(",", 1)[0] not in dropped).encode()
                target.writestr(info, data)
    trimmed.replace(wheel)
    return len(dropped)


if __name__ == "__main__":
    for path in sys.argv[1:]:
        print(f"{path}: {trim(Path(path))} service model files removed")
