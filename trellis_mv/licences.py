"""What the worker tells its users about licences: which loaded components forbid commercial use.

README.md's licence table (``builder/licences.py`` from ``builder/licences.json``) says what every
component allows. At run time only weights can be non-commercial, known by their Hugging Face
repository: RMBG-2.0, when ``TRELLIS_MV_BACKGROUND_MODEL`` points to it. (CuMesh's package still
carries cubvh's BVH, research-only code that ``import cumesh`` loads, but nothing runs it: the export
finds closest points itself, ``export/closest.py``; README's table says so.) :data:`NON_COMMERCIAL` lists them;
tests/test_licences.py keeps it equal to the rows of builder/licences.json whose commercial use is "no".

The worker logs :func:`startup_line` once, after its generator is built: what it loaded that may not
be used commercially, or that nothing is. Each job's answer carries :func:`job_warnings`: one
``licence: ...`` line per non-commercial component the job ran (its generator reports the weights).
"""

from __future__ import annotations

from typing import Iterable

from . import revisions

__all__ = ["NON_COMMERCIAL", "WARNING_PREFIX", "job_warnings", "non_commercial", "startup_line"]

# Hugging Face repository -> what it is and its licence.
NON_COMMERCIAL = {
    "briaai/RMBG-2.0": "RMBG-2.0 (briaai/RMBG-2.0, CC BY-NC 4.0)",
}
WARNING_PREFIX = "licence: "


def non_commercial(components: Iterable[str]) -> list[str]:
    """What each non-commercial component among ``components`` is."""
    present = set(components)
    return [label for name, label in NON_COMMERCIAL.items() if name in present]


def startup_line(components: Iterable[str]) -> str:
    """The one start-up log line: the non-commercial components loaded, or that there are none.

    ``components`` are the weights the generator loaded; one the image does not pin (a folder of
    the user's own) is named as of unknown licence.
    """
    components = list(components)
    found = non_commercial(components)
    text = ("licences: non-commercial components loaded: " + "; ".join(found) +
            ": what this worker makes with them may not be used commercially") if found else \
        "licences: no non-commercial component loaded"
    unknown = [name for name in components if name not in revisions.PINNED and name not in NON_COMMERCIAL]
    if unknown:
        text += f"; licence unknown to this image: {', '.join(unknown)}"
    return text + " (README.md, Licences)"


def job_warnings(components: Iterable[str]) -> list[str]:
    """One answer warning per non-commercial component a job ran."""
    return [f"{WARNING_PREFIX}this job used {label}: its output may not be used commercially"
            for label in non_commercial(components)]
