"""Truthful answers on the GPU: ``1536_cascade`` answers the resolution it really ran at.

The random sparse-structure decoder answers a spherical shell (``ShellOccupancy``). At its default
radius the 1536 pass is over the cascade's 49,152-token limit and the cascade lowers the resolution:
the answer says which, with a warning. With radius 0.2 the 1536 pass fits and really runs at 1536.
Either answer also carries the licence warning of CuMesh's cuBVH, which every GPU export runs.
"""

from __future__ import annotations

import time

import pytest
from jobs import glb_of, gpu_handler, job

from trellis_mv import licences


@pytest.mark.timeout(600)  # new token counts: FlexGEMM tunes its kernels again
@pytest.mark.parametrize(("radius", "runs_at_1536"), [(0.2, True), (0.4, False)])
def test_1536_cascade_answers_the_resolution_it_ran_at(pipeline_bf16, out_dir, record, radius, runs_at_1536):
    run = gpu_handler(pipeline_bf16)
    shell = pipeline_bf16.models["sparse_structure_decoder"]
    start = time.perf_counter()
    with shell.with_radius(radius):
        answer = run(job(f"cascade-1536-r{radius}", pipeline_type="1536_cascade", views=1, mode="stochastic"))
    seconds = time.perf_counter() - start
    assert "error" not in answer, answer
    (out_dir / f"1536_cascade_shell_r{radius}.glb").write_bytes(glb_of(answer))
    record(f"cascade_1536_shell_r{radius}", {"resolution": answer["resolution"], "warnings": answer["warnings"],
                                             "seconds": round(seconds, 2), "mesh": answer["mesh"],
                                             "timings": answer["timings"]})
    assert answer["pipeline_type"] == "1536_cascade"
    # Every GPU export runs CuMesh's cuBVH, which is not for commercial use: the answer says so.
    licence = [warning for warning in answer["warnings"] if warning.startswith(licences.WARNING_PREFIX)]
    assert licence == licences.job_warnings(()) and licences.NON_COMMERCIAL["cumesh._cubvh"] in licence[0]
    cascade = [warning for warning in answer["warnings"] if warning not in licence]
    if runs_at_1536:
        assert (answer["resolution"], cascade) == (1536, [])
    else:
        assert answer["resolution"] in (1408, 1280, 1152, 1024)
        (warning,) = cascade
        assert warning.startswith(f"pipeline_type 1536_cascade ran at resolution {answer['resolution']}, not 1536: "
                                  "the shape has ")
