"""The fast unwrap phase end to end on the CPU (trellis_mv.export.unwrap): charts, packing, tidy, measured.

CuMesh needs CUDA, so a stand-in takes its place at that seam only: it holds the mesh and answers
``compute_charts`` with a known partition; everything after (``charts``, ``pack``, ``clean``) is the
real code. Every atlas must have every triangle inside [0, 1]², no texel covered twice, no flipped
face, and developable charts must keep the surface's proportions.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
import torch
import unwrap_meshes as meshes

from trellis_mv.export.clean import mean_face_area
from trellis_mv.export.unwrap import Clustering, unwrap
from trellis_mv.export.uv_quality import atlas_quality


@pytest.fixture(autouse=True)
def one_thread():
    """Thousands of small tensor operations: on a busy shared machine more threads only wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass
class ClusteredMesh:
    """CuMesh's part of the unwrap, on the CPU: the mesh, and a known cluster per face as ``compute_charts``' answer."""

    vertices: torch.Tensor
    faces: torch.Tensor
    chart: torch.Tensor
    asked: dict = field(default_factory=dict)

    def remove_degenerate_faces(self) -> None:
        pass

    def read(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vertices, self.faces.int()

    def compute_charts(self, *, threshold_cone_half_angle_rad, refine_iterations, global_iterations, smooth_strength,
                       area_penalty_weight, perimeter_area_ratio_weight) -> None:
        self.asked = dict(locals())
        del self.asked["self"]

    def read_atlas_charts(self):
        return int(self.chart.max()) + 1, self.chart.int(), None, None, None, None


MESHES = [  # (name, mesh, stretch: the atlas's L2 mean at most)
    ("cube", meshes.cube, 1.0001),
    ("cylinder", meshes.cylinder, 1.0001),
    ("sphere", lambda: meshes.sphere(3), 1.09),
    ("spiral ramp", meshes.helicoid, 1.0001),
    ("bumpy sphere", lambda: meshes.bumpy_sphere(5, cells=2), 1.02),
]


@pytest.mark.parametrize(("name", "make", "stretch"), MESHES)
@pytest.mark.parametrize("size", [512, 2048])
def test_the_fast_unwrap_packs_every_chart_apart_inside_the_atlas(name, make, stretch, size):
    phases = []

    @contextmanager
    def phase(step):
        phases.append(step)
        yield

    mesh = unwrap(ClusteredMesh(*make()), "fast", size, phase)
    assert phases == ["unwrap_cluster", "unwrap_charts", "unwrap_pack"]
    assert float(mesh.uvs.min()) >= 0 and float(mesh.uvs.max()) <= 1
    assert torch.allclose(mesh.normals.norm(dim=1), torch.ones(len(mesh.normals)))
    quality = atlas_quality(mesh.vertices, mesh.faces, mesh.uvs, size)
    assert quality["flipped_faces"] == 0 and quality["overlap_share"] == 0.0
    assert quality["stretch_l2_mean"] <= stretch and quality["density_spread"] == pytest.approx(1.0, abs=0.01)
    assert quality["packing_efficiency"] > 0.3


def test_the_clusters_are_asked_for_at_the_mean_faces_scale():
    vertices, faces, chart = meshes.cube()
    cu = ClusteredMesh(vertices, faces, chart)
    unwrap(cu, "fast", 512, clustering=Clustering(cone=math.pi / 3, chart_faces=100))
    face_area = mean_face_area(vertices, faces)
    assert cu.asked == {"threshold_cone_half_angle_rad": math.pi / 3, "refine_iterations": 0, "global_iterations": 1,
                        "smooth_strength": 1.0, "area_penalty_weight": pytest.approx(math.pi / 3 / (100 * face_area)),
                        "perimeter_area_ratio_weight": 1e-4}
