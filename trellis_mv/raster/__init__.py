"""Triangle rasterization of our own, in torch on every device: camera views for the previews, UV space
for the export's bake, and the atlas-overlap count for the unwrap.

Outputs keep the conventions of ``nvdiffrast.torch``, which the export and previews were first built
on (the GPU tests still compare against it where the device has it): :func:`rasterize` returns per
pixel ``(b0, b1, z/w, triangle + 1)``, row 0 at the bottom (y = -1); :func:`interpolate` reads
per-vertex attributes there; :func:`coverage` says only whether a pixel is covered.
:func:`rasterize_uv` does the same for a UV atlas (v = 0 on row 0) without a depth test, and
:func:`texel_counts` counts the triangles over each texel. How, in ``spans``. On CUDA the UV path runs
as two Triton kernels (``uv_kernel``) and :func:`coverage` as one (``coverage_kernel``): the same
steps (``triton_spans``) to the same bits, in one launch each, for the bake's budget and the per-view
fit's (about 1500 silhouettes a job).

The package sits beside ``export/`` and ``preview/`` rather than inside either: the bake and the
previews both use it, and ``preview`` already depends on ``export`` (it renders what the GLB holds).
"""

from .rasterize import coverage, interpolate, rasterize, rasterize_uv, texel_counts

__all__ = ["coverage", "interpolate", "rasterize", "rasterize_uv", "texel_counts"]
