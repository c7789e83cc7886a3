"""Closest points on a surface (trellis_mv.export.closest) against brute force in float64.

The reference takes, for every point and every face, the nearest of the face's plane projection
(when it falls inside) and of its three edges' nearest points: a different method from Ericson's
regions. Meshes: a sphere, a cube, two sheets 1e-4 apart, a triangle soup with degenerate faces and
slivers; points near the surfaces and far from them. Then the narrow band of CuMesh's
``remesh_narrow_band_dc`` (its level loop, replayed here) comes out the same as with exact distances.
"""

from __future__ import annotations

import math

import pytest
import torch

from trellis_mv.export.closest import build, closest_on_triangles

RADIUS = 0.08


def square(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The square [-1, 1]^2 at z = 1 as an n x n grid of squares, each cut in two triangles."""
    t = torch.linspace(-1, 1, n + 1)
    u, v = torch.meshgrid(t, t, indexing="ij")
    i = torch.arange(n)[:, None] * (n + 1) + torch.arange(n)[None, :]
    quads = torch.stack([i, i + n + 1, i + n + 2, i + 1], dim=-1).reshape(-1, 4)
    return torch.stack([u, v, torch.ones_like(u)], dim=-1).reshape(-1, 3), torch.cat([quads[:, :3], quads[:, [0, 2, 3]]])


def box_surface(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The surface of the cube [-1, 1]^3: six squares (rolled onto each axis, mirrored), not welded."""
    grid, side = square(n)
    sides = [(grid.roll(axis + 1, dims=1) * sign, side if sign > 0 else side.flip(1)) for axis in range(3) for sign in (1, -1)]
    return torch.cat([v for v, _ in sides]), torch.cat([f + k * len(grid) for k, (_, f) in enumerate(sides)])


def sphere(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    vertices, faces = box_surface(n)
    return 0.4 * vertices / vertices.norm(dim=1, keepdim=True), faces


def cube() -> tuple[torch.Tensor, torch.Tensor]:
    vertices, faces = box_surface(4)
    return 0.3 * vertices, faces


def sheets() -> tuple[torch.Tensor, torch.Tensor]:
    """Two parallel 0.6-wide sheets 1e-4 apart: which one is nearer is a 1e-4 question."""
    grid, side = square(8)
    top = grid * 0.3
    return torch.cat([top, top - torch.tensor([0, 0, 1e-4])]), torch.cat([side, side + len(top)])


def soup() -> tuple[torch.Tensor, torch.Tensor]:
    """Random triangles of many sizes, plus a collinear one, one with two equal corners, a sliver."""
    generator = torch.Generator().manual_seed(3)
    centres = torch.rand(300, 1, 3, generator=generator) - 0.5
    sizes = 0.002 * 50 ** torch.rand(300, 1, 1, generator=generator)
    corners = centres + sizes * torch.randn(300, 3, 3, generator=generator)
    special = torch.tensor([
        [[0.0, 0, 0], [0.05, 0.05, 0], [0.1, 0.1, 0]],  # collinear
        [[0.1, 0, 0], [0.1, 0, 0], [0.1, 0.05, 0.02]],  # two corners at one point
        [[-0.1, 0, 0], [0.1, 0, 0], [0.0, 1e-6, 0]],  # sliver
    ])
    corners = torch.cat([corners, special])
    return corners.reshape(-1, 3), torch.arange(len(corners) * 3).reshape(-1, 3)


MESHES = {"sphere": sphere, "cube": cube, "sheets": sheets, "soup": soup}


def points_near(vertices: torch.Tensor, faces: torch.Tensor, count: int, spread: float, seed: int) -> torch.Tensor:
    """Points on random faces moved by up to ``spread`` in random directions, and points anywhere around."""
    generator = torch.Generator().manual_seed(seed)
    corners = vertices[faces[torch.randint(len(faces), (count,), generator=generator)]]
    weights = torch.rand(count, 3, generator=generator)
    on = (corners * (weights / weights.sum(dim=1, keepdim=True))[..., None]).sum(dim=1)
    near = on + spread * torch.rand(count, 1, generator=generator) * torch.nn.functional.normalize(
        torch.randn(count, 3, generator=generator), dim=1)
    anywhere = torch.rand(count // 2, 3, generator=generator) * 1.6 - 0.8
    return torch.cat([on, near, anywhere])


def reference(points: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every point's distance to every face (P, M), and the closest points (P, M, 3), in float64."""
    parts = [_reference(points[i:i + 64], vertices, faces) for i in range(0, len(points), 64)]
    return torch.cat([d for d, _ in parts]), torch.cat([q for _, q in parts])


def _reference(points: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    p = points.double()[:, None]
    a, b, c = vertices.double()[faces.long()].unbind(dim=1)
    normal = torch.cross(b - a, c - a, dim=1)
    area = (normal * normal).sum(dim=1)
    projected = p - (((p - a) * normal).sum(-1) / area.clamp(min=1e-300))[..., None] * normal
    inside = area > 0
    for x, y in ((a, b), (b, c), (c, a)):
        inside = inside & ((torch.cross((y - x).expand_as(projected), projected - x, dim=-1) * normal).sum(-1) >= 0)
    options = [torch.where(inside[..., None], projected, math.inf)]
    for x, y in ((a, b), (b, c), (c, a)):
        edge = y - x
        length = (edge * edge).sum(-1)
        t = (((p - x) * edge).sum(-1) / length.clamp(min=1e-300)).clamp(0, 1)
        options.append(x + t[..., None] * edge)
    options = torch.stack(options)
    distances = (p - options).norm(dim=-1).nan_to_num(math.inf)
    nearest = distances.argmin(dim=0)
    return distances.min(dim=0).values, options.gather(0, nearest[None, ..., None].expand(1, *nearest.shape, 3))[0]


@pytest.mark.parametrize("name", MESHES)
def test_distances_faces_and_weights_match_brute_force(name):
    vertices, faces = MESHES[name]()
    points = points_near(vertices, faces, 300, 1.5 * RADIUS, seed=len(name))
    distances, face_id, uvw = build(vertices, faces, RADIUS).unsigned_distance(points, return_uvw=True)
    every, closest = reference(points, vertices, faces)
    nearest, order = every.sort(dim=1)
    best = nearest[:, 0]
    within = best < RADIUS * (1 - 1e-6)
    assert within.sum() > 300 and (~within).sum() > 50
    assert torch.allclose(distances[within].double(), best[within], rtol=0, atol=1e-7)
    # the face found is a nearest one; where one face is nearer than all others by 1e-6, it is that face
    found = face_id[within]
    assert torch.allclose(every[within].gather(1, found[:, None])[:, 0], best[within], rtol=0, atol=1e-7)
    unique = (nearest[:, 1] - nearest[:, 0] > 1e-6)[within]
    assert unique.sum() > 100
    assert torch.equal(found[unique], order[within, 0][unique])
    # the weights sum to one and give the closest point of that face
    assert torch.allclose(uvw[within].sum(dim=1), torch.ones(int(within.sum())), atol=1e-6)
    assert (uvw[within] >= -1e-6).all()
    on_face = (vertices[faces[found]] * uvw[within][..., None]).sum(dim=1)
    expected = closest[within].gather(1, found[:, None, None].expand(-1, 1, 3))[:, 0]
    assert torch.allclose(on_face.double(), expected, rtol=0, atol=1e-6)
    # beyond the radius: a lower bound of the distance, at least the radius, no face
    far = best > RADIUS * (1 + 1e-6)
    assert (face_id[far] == -1).all() and (uvw[far] == 0).all()
    assert (distances[far] >= RADIUS).all() and (distances[far].double() <= best[far] + 1e-7).all()


def test_far_points_get_more_than_the_radius_from_the_occupancy_pyramid():
    vertices, faces = sphere()
    points = torch.tensor([[0.0, 0, 0], [0.0, 0, 0.52], [2.0, 0, 0], [0.0, -5, 5]])
    distances, face_id, _ = build(vertices, faces, 0.01).unsigned_distance(points)
    best = reference(points, vertices, faces)[0].min(dim=1).values
    assert (face_id == -1).all()
    assert (distances.double() <= best).all()
    assert (distances >= 0.01).all() and (distances.double() >= best / 5).all()  # within 5x here: coarse remeshing levels stay lean


def test_slices_of_any_size_give_the_same_answer():
    vertices, faces = soup()
    points = points_near(vertices, faces, 200, RADIUS, seed=1)
    whole = build(vertices, faces, RADIUS).unsigned_distance(points, return_uvw=True)
    sliced = build(vertices, faces, RADIUS, max_pairs=2000).unsigned_distance(points, return_uvw=True)
    for one, other in zip(whole, sliced):
        assert torch.equal(one, other)


def test_cubvhs_conventions():
    vertices, faces = cube()
    points = torch.zeros(2, 5, 3)
    points[..., 0] = torch.linspace(0.25, 0.35, 5)
    distances, face_id, uvw = build(vertices, faces.int(), RADIUS).unsigned_distance(points.double())
    assert (distances.dtype, face_id.dtype, uvw) == (torch.float32, torch.int64, None)
    assert distances.shape == face_id.shape == (2, 5)
    _, _, uvw = build(vertices, faces, RADIUS).unsigned_distance(points, return_uvw=True)
    assert uvw.shape == (2, 5, 3) and uvw.dtype == torch.float32
    assert torch.allclose(distances[0], torch.tensor([0.05, 0.025, 0.0, 0.025, 0.05]), atol=1e-7)


A, B, C = [0.0, 0, 0], [1.0, 0, 0], [0.0, 1, 0]
TRIANGLE_CASES = [  # (point, triangle, squared distance, weights of its corners)
    ([0.25, 0.25, 2], (A, B, C), 4.0, [0.5, 0.25, 0.25]),  # above the face
    ([-1, -1, 0], (A, B, C), 2.0, [1, 0, 0]),  # vertex A
    ([2, -1, 0], (A, B, C), 2.0, [0, 1, 0]),  # vertex B
    ([-1, 3, 1], (A, B, C), 6.0, [0, 0, 1]),  # vertex C
    ([0.5, -1, 0], (A, B, C), 1.0, [0.5, 0.5, 0]),  # edge AB
    ([-1, 0.25, 0], (A, B, C), 1.0, [0.75, 0, 0.25]),  # edge AC
    ([1, 1, 0], (A, B, C), 0.5, [0, 0.5, 0.5]),  # edge BC
    ([0.5, 1, 0], (A, [1.0, 0, 0], [2.0, 0, 0]), 1.0, [0.5, 0.5, 0]),  # collinear corners: nearest edge point
    ([3, 1, 0], (A, [1.0, 0, 0], [2.0, 0, 0]), 2.0, [0, 0, 1]),
    ([0, 0, 1], (B, B, B), 2.0, [1, 0, 0]),  # one point
]


@pytest.mark.parametrize(("point", "triangle", "squared", "weights"), TRIANGLE_CASES)
def test_closest_on_triangles_by_region(point, triangle, squared, weights):
    a, b, c = (torch.tensor([corner], dtype=torch.float64) for corner in triangle)
    got, got_weights = closest_on_triangles(torch.tensor([point], dtype=torch.float64), a, b, c)
    assert got.item() == pytest.approx(squared)
    on = got_weights[0] @ torch.cat([a, b, c])
    assert torch.allclose(on, torch.tensor(weights, dtype=torch.float64) @ torch.cat([a, b, c]))


class Exact:
    """Brute-force distances with cuBVH's method name, for the narrow band's reference."""

    def __init__(self, vertices, faces):
        self.vertices, self.faces = vertices, faces

    def unsigned_distance(self, points):
        return reference(points, self.vertices, self.faces)[0].min(dim=1).values.float(), None, None


def narrow_band(bvh, resolution: int, base: int, band: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``remesh_narrow_band_dc``'s steps 3 and 4 (CuMesh @ the pin), base resolution given: the active
    voxels, their corners and the corners' UDF minus the band, what dual contouring reads."""
    scale = (resolution + 3 * band) / resolution
    eps = band * scale / resolution
    offsets = torch.stack(torch.meshgrid(*[torch.arange(2)] * 3, indexing="ij"), dim=-1).reshape(-1, 3)
    coords = torch.stack(torch.meshgrid(*[torch.arange(base)] * 3, indexing="ij"), dim=-1).reshape(-1, 3)
    while True:
        centres = ((coords.float() + 0.5) / base - 0.5) * scale
        coords = coords[(bvh.unsigned_distance(centres)[0] - eps).abs() < 0.87 * scale / base]
        if base >= resolution:
            break
        base, coords = base * 2, (coords[:, None] * 2 + offsets).reshape(-1, 3)
    corners = torch.unique((coords[:, None] + offsets).reshape(-1, 3), dim=0)
    return coords, corners, bvh.unsigned_distance((corners.float() / resolution - 0.5) * scale)[0] - eps


def test_the_narrow_band_is_the_one_exact_distances_give():
    """Coarse levels get lower bounds beyond the radius (a superset of cells, tested again at the next
    level); the finest level and the corners that place vertices need exact distances up to
    (band + 1) cells, the radius the export uses. The same voxels come out, and the same corner values
    wherever an edge changes sign."""
    vertices, faces = sphere(4)
    resolution = 16
    ours = build(vertices, faces, radius=2 * (resolution + 3) / resolution / resolution)
    voxels, corners, values = narrow_band(ours, resolution, base=2)
    exact_voxels, exact_corners, exact_values = narrow_band(Exact(vertices, faces), resolution, base=2)
    assert len(voxels) > 500
    assert torch.equal(voxels, exact_voxels) and torch.equal(corners, exact_corners)
    assert torch.equal(values < 0, exact_values < 0)
    changes_sign = exact_values < ours.radius - (resolution + 3) / resolution / resolution  # within a cell of the band
    assert changes_sign.sum() > 500
    assert torch.allclose(values[changes_sign], exact_values[changes_sign], rtol=0, atol=1e-6)
