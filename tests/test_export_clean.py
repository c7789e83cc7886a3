"""Mesh hygiene (trellis_mv.export.clean) on small tensors with exact expected values."""

from __future__ import annotations

import pytest
import torch

from trellis_mv.export.clean import (
    SLIVER,
    degenerate_faces,
    drop_faces,
    mean_face_area,
    tidy_unwrapped,
    vertex_normals,
    y_up,
)

SQUARE = torch.tensor([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
SQUARE_FACES = torch.tensor([[0, 1, 2], [0, 2, 3]], dtype=torch.int32)


def triangle(c):
    """Triangle (0,0,0), (1,0,0), c."""
    return torch.tensor([[0.0, 0, 0], [1, 0, 0], c]), torch.tensor([[0, 1, 2]], dtype=torch.int32)


DEGENERATE = [  # (vertices, faces, expected)
    (*triangle([0.0, 1, 0]), [False]),
    (*triangle([0.5, 1e-4, 0]), [False]),  # thin but a real triangle: area/longest² = 5e-5
    (*triangle([0.5, 0, 0]), [True]),  # collinear: zero area
    (*triangle([0.5, 2e-11, 0]), [True]),  # area/longest² = 1e-11 < SLIVER
    (*triangle([0.0, 0, 0]), [True]),  # two corners at one point
    (SQUARE, torch.tensor([[0, 1, 1], [0, 1, 2], [3, 3, 3]], dtype=torch.int32), [True, False, True]),  # repeated corners
]


@pytest.mark.parametrize(("vertices", "faces", "expected"), DEGENERATE)
def test_degenerate_faces(vertices, faces, expected):
    assert degenerate_faces(vertices, faces).tolist() == expected


def test_the_sliver_threshold_is_relative_to_the_face_size():
    tiny = triangle([0.5, 1e-4, 0])[0] * 1e-6  # the same shape a million times smaller
    assert not degenerate_faces(tiny, triangle([0, 0, 0])[1]).item()
    assert SLIVER < 5e-5


def test_drop_faces_compacts_vertices_and_their_attributes():
    faces = torch.tensor([[0, 1, 2], [2, 3, 4], [4, 5, 0]], dtype=torch.int32)
    values = torch.arange(6) * 10
    labels = torch.tensor([5, 4, 3, 2, 1, 0])
    kept, kept_values, kept_labels = drop_faces(faces, torch.tensor([False, True, False]), values, labels)
    assert kept.tolist() == [[0, 1, 2], [3, 4, 0]]  # vertex 3 is gone; 4 and 5 move down
    assert kept.dtype == torch.int32
    assert kept_values.tolist() == [0, 10, 20, 40, 50]
    assert kept_labels.tolist() == [5, 4, 3, 1, 0]


def test_a_flat_square_has_up_normals():
    assert vertex_normals(SQUARE, SQUARE_FACES).tolist() == [[0.0, 0.0, 1.0]] * 4


def test_normals_are_area_weighted():
    vertices = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 3]])
    faces = torch.tensor([[0, 1, 2], [0, 3, 1]])  # area 0.5 facing +z and area 1.5 facing +y, sharing 0 and 1
    normals = vertex_normals(vertices, faces)
    torch.testing.assert_close(normals[0], torch.tensor([0.0, 3.0, 1.0]) / 10**0.5)  # (0,0,1) + (0,3,0)
    assert normals[2].tolist() == [0.0, 0.0, 1.0]
    assert normals[3].tolist() == [0.0, 1.0, 0.0]


def test_where_normals_cancel_the_largest_face_decides():
    # Two faces on one edge folded flat onto each other: their normals cancel at the shared corners.
    vertices = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 2, 0]])
    faces = torch.tensor([[0, 1, 2], [0, 3, 1]])  # areas 0.5 (+z) and 1.0 (-z)
    normals = vertex_normals(vertices, faces)
    # corner 0 and 1: sum (0,0,0.5·2) + (0,0,-1·2) = (0,0,-1): not cancelled, points down
    assert normals[:2].tolist() == [[0.0, 0.0, -1.0]] * 2
    equal = torch.tensor([[0, 1, 2], [0, 2, 1]])  # the same face twice, opposite windings: exact cancel
    assert vertex_normals(vertices[:3], equal).tolist() == [[0.0, 0.0, -1.0]] * 3  # face 1 (the later one)


def test_a_vertex_without_area_gets_plus_z_and_nothing_is_nan():
    vertices = torch.tensor([[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [5, 5, 5]])
    normals = vertex_normals(vertices, torch.tensor([[0, 1, 2]]))  # zero-area face; vertex 3 unused
    assert normals.tolist() == [[0.0, 0.0, 1.0]] * 4
    assert vertex_normals(vertices, torch.zeros((0, 3), dtype=torch.long)).tolist() == [[0.0, 0.0, 1.0]] * 4


def test_normals_of_a_random_mesh_are_unit():
    generator = torch.Generator().manual_seed(0)
    vertices = torch.rand(300, 3, generator=generator)
    faces = torch.randint(0, 300, (600, 3), generator=generator)
    lengths = vertex_normals(vertices, faces).double().norm(dim=1)
    assert torch.all((lengths - 1).abs() < 1e-6)


def test_tidy_unwrapped_drops_slivers_and_keeps_normals_smooth_across_seams():
    welded = torch.tensor([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0.5, 0, 0]])
    # split vertices 0..5 -> welded 0,1,2,3,2,4: welded 2 appears twice (a UV seam)
    vmap = torch.tensor([0, 1, 2, 3, 2, 4])
    uvs = torch.tensor([[0.0, 0], [1, 0], [1, 1], [0, 1], [0.9, 0.9], [0.5, 0]])
    faces = torch.tensor([[0, 1, 2], [0, 4, 3], [0, 5, 1]], dtype=torch.int32)  # the last is a line
    mesh = tidy_unwrapped(welded, faces, uvs, vmap)
    assert mesh.faces.tolist() == [[0, 1, 2], [0, 4, 3]]
    assert mesh.uvs.tolist() == uvs[:5].tolist()
    assert mesh.vertices.tolist() == welded[[0, 1, 2, 3, 2]].tolist()
    assert mesh.normals.tolist() == [[0.0, 0.0, 1.0]] * 5


def test_mean_face_area():
    assert mean_face_area(SQUARE, SQUARE_FACES) == 0.5
    assert mean_face_area(SQUARE, torch.tensor([[0, 1, 2], [0, 1, 1]])) == 0.25
    assert mean_face_area(SQUARE, torch.zeros((0, 3), dtype=torch.long)) == 0.0


def test_y_up_turns_z_up_into_gltf_axes():
    assert y_up(torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]])).tolist() == [[1.0, 3.0, -2.0], [0.0, 1.0, -0.0]]
