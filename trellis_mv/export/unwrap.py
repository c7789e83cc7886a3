"""The unwrap phase: UV charts and one atlas for CuMesh's mesh, two ways (the contract's ``glb.unwrap``).

- ``"fast"`` (default): CuMesh clusters the surface on the GPU (``Clustering``); ``charts.parameterize``
  flattens every cluster at once in torch; ``pack.pack_charts`` places them in the atlas.
- ``"xatlas"``: CuMesh's ``uv_unwrap`` as o_voxel's ``to_glb`` calls it: the same GPU clustering, then
  xatlas re-segments, parameterises and packs every cluster on the CPU. Kept unchanged, to compare.

Either way the phase ends in ``clean.tidy_unwrapped`` (no degenerate face, unit normals).

Why xatlas was slow, and what ``CLUSTER_FACES``/``CHART_FACES`` are: xatlas re-segments each CuMesh
cluster as one serial task, and every face it adds to a chart re-fits and re-checks the whole chart,
quadratic in chart size (87% of its CPU time). o_voxel's clusters stop only at a 90° normal cone, so
one can hold much of the mesh: on a 176k-face stand-in its largest cluster (73.6k faces) alone took
24.7 s. Capping clusters at the area of 2000 mean faces (CuMesh's own area penalty: cone half angle +
penalty x area must stay under 90°) and xatlas's charts at 200 cut that unwrap from 29.4 to 4.5 s of
CPU, for 9% more vertices and 62% instead of 74% of the atlas used. On the H200
it still took 9-10 s of a default job (issue 18). xatlas's packing options barely mattered there
(default 0.4 s; at 2048² 1.0 s; brute force 3.1 s).

Every function imports CuMesh inside itself, and the fast path never touches CuMesh's xatlas.
"""

from __future__ import annotations

import logging
import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, ContextManager

import torch

from .charts import Limits, parameterize
from .clean import UnwrappedMesh, mean_face_area, tidy_unwrapped
from .options import UnwrapMethod
from .pack import pack_charts

__all__ = ["CHART_FACES", "CLUSTER_FACES", "PADDING", "XATLAS_CLUSTERING", "Clustering", "cluster", "unwrap", "unwrap_xatlas"]

log = logging.getLogger(__name__)

Phase = Callable[[str], ContextManager[None]]

CHART_FACES = 200
CLUSTER_FACES = 2000
PADDING = 2  # texels between charts: the bake's push-pull band needs two


@dataclass(frozen=True)
class Clustering:
    """CuMesh's ``compute_charts`` for the fast path (``src/atlas.cu``), sizes in mean faces.

    Two neighbouring clusters merge while ``cone half angle of the union + area penalty x its area +
    compactness x perimeter² / area`` stays at most ``cone``; merges go cheapest first, in parallel.
    The trade: a larger chart is fewer seams and less padding in the atlas, but more curvature to
    flatten (stretch, LSCM, splits) and more conjugate-gradient iterations (they grow with a chart's
    diameter in faces, about 600 for 3000 faces; every chart solves at once, so the largest sets the
    time). A 90° cone keeps every cluster within a hemisphere of normals, which a hemisphere's LSCM
    still flattens at L2 stretch 1.07; the area cap ``chart_faces`` is twice that of the xatlas path,
    whose clusters were sized for xatlas's serial cost, not ours. Refinement moves faces between
    clusters by normal; it smooths boundaries but ignores the area cap, so none by default. Compactness
    is CuMesh's default (a disk's perimeter²/area is 4π: it barely counts).
    """

    cone: float = math.pi / 2
    chart_faces: int = 4000
    refine_iterations: int = 0
    global_iterations: int = 1
    smooth_strength: float = 1.0
    compactness: float = 1e-4

    def arguments(self, face_area: float) -> dict[str, float | int]:
        """``compute_charts``'s keyword arguments for a mesh whose mean face has ``face_area``."""
        return {
            "threshold_cone_half_angle_rad": self.cone,
            "refine_iterations": self.refine_iterations,
            "global_iterations": self.global_iterations,
            "smooth_strength": self.smooth_strength,
            "area_penalty_weight": self.cone / (self.chart_faces * face_area),
            "perimeter_area_ratio_weight": self.compactness,
        }


# o_voxel's clustering, capped for xatlas; compactness at CuMesh's default, which o_voxel leaves unset
XATLAS_CLUSTERING = Clustering(cone=math.pi / 2, chart_faces=CLUSTER_FACES, refine_iterations=0, global_iterations=1,
                               smooth_strength=1.0, compactness=1e-4)


def unwrap(cu: Any, method: UnwrapMethod = "fast", texture_size: int = 2048, phase: Phase | None = None,
           clustering: Clustering = Clustering(), limits: Limits = Limits()) -> UnwrappedMesh:
    """UV charts and atlas for ``cu``'s mesh, then degenerate faces dropped and unit normals (``clean``).

    ``phase(name)`` times the fast path's steps (``unwrap_cluster``, ``unwrap_charts``, ``unwrap_pack``).
    """
    if method == "xatlas":
        return unwrap_xatlas(cu)
    step = phase or (lambda name: nullcontext())
    # 1. cluster: CuMesh's GPU clustering
    with step("unwrap_cluster"):
        vertices, faces, chart = cluster(cu, clustering)
    # 2. charts: flattened all at once
    with step("unwrap_charts"):
        charts = parameterize(vertices, faces, chart, limits)
    log.info("unwrap: %d faces, %d clusters, %d charts; %s", len(faces), int(chart.max()) + 1, charts.count, charts.stats)
    # 3. pack: one atlas, one texel density
    with step("unwrap_pack"):
        uvs = pack_charts(charts.uvs, charts.faces, charts.chart, texture_size, PADDING)
    # 4. tidy: no degenerate face, unit normals
    return tidy_unwrapped(vertices, charts.faces.int(), uvs, charts.vmap)


def cluster(cu: Any, clustering: Clustering = Clustering()) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``cu``'s mesh without degenerate faces (as ``uv_unwrap`` starts), and CuMesh's cluster id per face."""
    cu.remove_degenerate_faces()
    vertices, faces = cu.read()
    cu.compute_charts(**clustering.arguments(mean_face_area(vertices, faces)))
    _, chart, *_ = cu.read_atlas_charts()
    return vertices, faces, chart.long()


def unwrap_xatlas(cu: Any) -> UnwrappedMesh:
    """CuMesh's clustering capped at ``CLUSTER_FACES``, then xatlas per cluster on the CPU (``uv_unwrap``), as before."""
    face_area = mean_face_area(*cu.read())
    _, split_faces, uvs, vmap = cu.uv_unwrap(
        compute_charts_kwargs=XATLAS_CLUSTERING.arguments(face_area),
        xatlas_compute_charts_kwargs={"max_chart_area": CHART_FACES * face_area},
        xatlas_pack_charts_kwargs={},
        return_vmaps=True,
    )
    welded, _ = cu.read()  # after uv_unwrap's own removal of exact-zero faces; vmap indexes it
    device = welded.device
    return tidy_unwrapped(welded, split_faces.to(device).int(), uvs.to(device).float(), vmap.to(device).long())
