"""The unwrap's yardsticks (trellis_mv.export.uv_quality) and segment ops (segments) on hand-made cases with exact answers."""

from __future__ import annotations

import math

import pytest
import torch
from unwrap_meshes import cube

from trellis_mv.export.segments import components, edge_neighbours
from trellis_mv.export.uv_quality import (
    atlas_quality,
    chart_stretch,
    face_stretch,
    overlapping_charts,
    seam_length,
    vertex_charts,
)

TRIANGLE = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
ONE = torch.tensor([[0, 1, 2]])
# (name, UVs of TRIANGLE, L2, L∞): Sander's stretch of the map from UV space onto the triangle
STRETCHES = [
    ("isometry", [[0.0, 0], [1, 0], [0, 1]], 1.0, 1.0),
    ("turned", [[0.0, 0], [0, 1], [-1, 0]], 1.0, 1.0),
    ("twice as large", [[0.0, 0], [2, 0], [0, 2]], 0.5, 0.5),  # one UV unit covers half a unit of surface
    ("u doubled", [[0.0, 0], [2, 0], [0, 1]], math.sqrt((0.25 + 1) / 2), 1.0),
    ("v halved", [[0.0, 0], [1, 0], [0, 0.5]], math.sqrt((1 + 4) / 2), 2.0),
]


@pytest.mark.parametrize(("name", "uvs", "l2", "linf"), STRETCHES)
def test_face_stretch_is_sanders(name, uvs, l2, linf):
    stretch = face_stretch(TRIANGLE, torch.tensor(uvs), ONE)
    assert stretch.area.item() == pytest.approx(0.5)
    assert stretch.uv_area.item() > 0
    assert (stretch.l2.item(), stretch.linf.item()) == (pytest.approx(l2), pytest.approx(linf))


def test_a_mirrored_face_has_negative_uv_area_and_a_collapsed_one_infinite_stretch():
    mirrored = face_stretch(TRIANGLE, torch.tensor([[0.0, 0], [-1, 0], [0, 1]]), ONE)
    assert mirrored.uv_area.item() == pytest.approx(-0.5) and mirrored.l2.item() == pytest.approx(1.0)
    collapsed = face_stretch(TRIANGLE, torch.tensor([[0.0, 0], [1, 0], [2, 0]]), ONE)
    assert collapsed.uv_area.item() == 0 and collapsed.l2.item() == math.inf


def test_chart_stretch_is_measured_at_the_charts_own_scale():
    # two charts of one triangle each: one uniformly 3x too large (no distortion), one squashed in v
    vertices = torch.cat([TRIANGLE, TRIANGLE])
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    uvs = torch.tensor([[0.0, 0], [3, 0], [0, 3], [0, 0], [1, 0], [0, 0.5]])
    stretch = face_stretch(vertices, uvs, faces)
    l2, linf = chart_stretch(stretch, torch.tensor([0, 1]), 2, torch.tensor([True, True]))
    assert l2[0].item() == pytest.approx(1.0) and linf[0].item() == pytest.approx(1.0)
    # v halved: singular values 1 and 2, times sqrt(UV area / area) = sqrt(1/2)
    assert l2[1].item() == pytest.approx(math.sqrt(2.5) * math.sqrt(0.5))
    assert linf[1].item() == pytest.approx(2 * math.sqrt(0.5))


def test_components_join_chains_in_any_order():
    pairs = torch.tensor([[5, 4], [3, 4], [0, 2], [2, 1], [7, 8]])
    assert components(pairs, 9).tolist() == [0, 0, 0, 3, 3, 3, 6, 7, 7]


def test_edge_neighbours_stay_inside_a_chart():
    # a square of two triangles, and a third triangle on its edge 1-2 but in another chart
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [1, 4, 2]])
    assert edge_neighbours(faces, torch.tensor([0, 0, 1])).tolist() == [[0, 1]]
    assert sorted(map(sorted, edge_neighbours(faces, torch.tensor([0, 0, 0])).tolist())) == [[0, 1], [0, 2]]


def _split_cube(subdivisions: int = 0):
    """The unit cube's 6 sides as 6 UV-split charts, each side its own unit square."""
    vertices, faces, chart = cube(subdivisions)
    keys, split = torch.unique(chart[:, None] * len(vertices) + faces, return_inverse=True)
    positions = vertices[keys % len(vertices)]
    side = keys // len(vertices)
    normal_axis = torch.tensor([0, 0, 1, 1, 2, 2])[side]
    planar = torch.stack([positions[torch.arange(len(keys)), (normal_axis + 1) % 3],
                          positions[torch.arange(len(keys)), (normal_axis + 2) % 3]], dim=1) + 0.5
    return positions, split, planar, side


def test_a_cube_has_six_charts_and_twelve_unit_seams():
    positions, faces, planar, side = _split_cube()
    chart, count = vertex_charts(faces, len(positions))
    assert count == 6
    assert seam_length(positions, faces, chart) == pytest.approx(12.0)
    # one chart: no seams
    assert seam_length(positions, faces, torch.zeros(len(faces), dtype=torch.long)) == 0.0


def test_atlas_quality_of_six_squares_in_a_row():
    positions, faces, planar, side = _split_cube()
    # side k's unit square at [k, k+1] x [0, 1] of a 6 x 6 box, then into [0, 1]²; mirrored sides stay unflipped
    uvs = (planar + torch.stack([side.double(), torch.zeros_like(side.double())], dim=1)) / 6
    quality = atlas_quality(positions, faces, uvs.float(), 60)
    assert quality["charts"] == 6 and quality["flipped_faces"] == 0
    assert quality["overlap_share"] == 0.0
    assert quality["packing_efficiency"] == pytest.approx(1 / 6, abs=0.01)
    assert quality["stretch_l2_mean"] == pytest.approx(1.0) and quality["stretch_l2_max"] == pytest.approx(1.0)
    assert quality["density_spread"] == pytest.approx(1.0)
    assert quality["seam_length"] == pytest.approx(12.0)


def test_atlas_quality_counts_overlap_and_a_face_turned_over():
    positions, faces, planar, side = _split_cube(subdivisions=1)
    uvs = (planar / 6).float()  # every side on the same square: covered six times
    quality = atlas_quality(positions, faces, uvs, 60)
    assert quality["overlap_share"] == 1.0 and quality["flipped_faces"] == 0
    turned = faces.clone()
    turned[0] = turned[0].flip(0)
    assert atlas_quality(positions, turned, uvs, 60)["flipped_faces"] == 1


def test_overlapping_charts_finds_a_chart_drawn_over_itself():
    square = [[0.0, 0], [1, 0], [1, 1], [0, 1]]
    triangle = [[0.0, 0], [2, 0], [0, 2]]
    uvs = torch.tensor(square + triangle + [[0.5, 0.5], [2.5, 0.5], [0.5, 2.5]] + triangle)  # chart 1: two triangles, one over the other
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]])
    vertex_chart = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2])
    assert overlapping_charts(uvs, faces, vertex_chart, 3).tolist() == [False, True, False]


def test_overlapping_charts_in_more_than_one_grid():
    # a noisy mesh's ~50k charts are drawn a grid of CHARTS_PER_GRID at a time; the overlapping chart
    # sits in the second grid, among thousands of single triangles
    from trellis_mv.export.uv_quality import CHARTS_PER_GRID

    singles = CHARTS_PER_GRID + 10
    triangle = torch.tensor([[0.0, 0], [2, 0], [0, 2]])
    uvs = torch.cat([triangle.repeat(singles, 1), torch.tensor([[0.0, 0], [2, 0], [0, 2], [0.5, 0.5], [2.5, 0.5], [0.5, 2.5]])])
    faces = torch.arange(3 * singles + 6).reshape(-1, 3)
    vertex_chart = torch.cat([torch.arange(singles).repeat_interleave(3), torch.full((6,), singles)])
    overlapping = overlapping_charts(uvs, faces, vertex_chart, singles + 1)
    assert overlapping.nonzero().flatten().tolist() == [singles]
