"""What the worker tells its users about licences: which loaded components forbid commercial use.

README.md's licence table (``builder/licences.py`` from ``builder/licences.json``) says what every
component allows. At run time two kinds of them can be non-commercial: weights, known by their
Hugging Face repository (RMBG-2.0, when ``TRELLIS_MV_BACKGROUND_MODEL`` points to it), and compiled
code, known by the Python module that loads it (CuMesh's cuBVH, from cubvh, whose BVH derives from
NVIDIA's instant-ngp). :data:`NON_COMMERCIAL` lists both; tests/test_licences.py keeps it equal to
the rows of builder/licences.json whose commercial use is "no".

The worker logs :func:`startup_line` once, after its generator is built: what it loaded that may not
be used commercially, or that nothing is. Each job's answer carries :func:`job_warnings`: one
``licence: ...`` line per non-commercial component the job ran (its generator reports the weights;
compiled code counts once its module is imported, as every GPU export imports CuMesh).
"""

from __future__ import annotations

import sys
from typing import Iterable, Mapping

from . import revisions

__all__ = ["NON_COMMERCIAL", "WARNING_PREFIX", "job_warnings", "non_commercial", "startup_line"]

# Hugging Face repository or Python module -> what it is and its licence.
NON_COMMERCIAL = {
    "briaai/RMBG-2.0": "RMBG-2.0 (briaai/RMBG-2.0, CC BY-NC 4.0)",
    "cumesh._cubvh": "cubvh, CuMesh's cuBVH (NVIDIA Source Code License of instant-ngp, research or evaluation only)",
}
WARNING_PREFIX = "licence: "


def non_commercial(components: Iterable[str], modules: Mapping[str, object] | None = None) -> list[str]:
    """What each non-commercial component among ``components`` and the imported ``modules`` is."""
    modules = sys.modules if modules is None else modules
    present = set(components) | {name for name in NON_COMMERCIAL if name in modules}
    return [label for name, label in NON_COMMERCIAL.items() if name in present]


def startup_line(components: Iterable[str], modules: Mapping[str, object] | None = None) -> str:
    """The one start-up log line: the non-commercial components loaded, or that there are none.

    ``components`` are the weights the generator loaded; one the image does not pin (a folder of
    the user's own) is named as of unknown licence.
    """
    components = list(components)
    found = non_commercial(components, modules)
    text = ("licences: non-commercial components loaded: " + "; ".join(found) +
            ": what this worker makes with them may not be used commercially") if found else \
        "licences: no non-commercial component loaded"
    unknown = [name for name in components if name not in revisions.PINNED and name not in NON_COMMERCIAL]
    if unknown:
        text += f"; licence unknown to this image: {', '.join(unknown)}"
    return text + " (README.md, Licences)"


def job_warnings(components: Iterable[str], modules: Mapping[str, object] | None = None) -> list[str]:
    """One answer warning per non-commercial component a job ran."""
    return [f"{WARNING_PREFIX}this job used {label}: its output may not be used commercially"
            for label in non_commercial(components, modules)]
