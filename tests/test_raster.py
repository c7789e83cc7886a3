"""The rasterizer on the CPU: camera views held to geometry worked out by hand, UV space held to the
camera path, and how many triangles cover each texel (the atlas-overlap metric).

Its outputs keep nvdiffrast's layout and conventions; tests/gpu/test_raster_gpu.py compares the two
on the GPU. UV layouts are built on a 64² atlas with corners on texel centres, so that edges run
exactly through texel centres: the case a fill rule exists for.
"""

from __future__ import annotations

import math

import pytest
import torch
import trimesh
from render_scenes import chair, grid_faces

from trellis_mv.preview.cameras import clip_space, frame_to_square, perspective
from trellis_mv.preview.render import RenderMesh
from trellis_mv.raster import coverage, interpolate, rasterize, rasterize_uv, spans, texel_counts

pytestmark = pytest.mark.timeout(30)

SIZE = 64


def centre(column: float, row: float) -> tuple[float, float]:
    """(u, v) of a texel centre; fractional indices lie between centres."""
    return ((column + 0.5) / SIZE, (row + 0.5) / SIZE)


def grid_chart(left: int, bottom: int, cells: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A square chart of ``cells``² quads, ``step`` texels each, corners on texel centres, each quad cut
    along alternating diagonals: horizontal, vertical and diagonal edges through texel centres."""
    points = [centre(left + i * step, bottom + j * step) for j in range(cells + 1) for i in range(cells + 1)]
    faces = grid_faces(cells)
    return torch.tensor(points), torch.tensor(faces)


def layout(*charts: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    uvs, faces, offset = [], [], 0
    for chart_uvs, chart_faces in charts:
        uvs.append(chart_uvs)
        faces.append(chart_faces + offset)
        offset += len(chart_uvs)
    return torch.cat(uvs), torch.cat(faces)


def expected_square(left: int, bottom: int, side: int) -> torch.Tensor:
    """Texel centres in [left, left + side) x [bottom, bottom + side): a chart's own texels under a
    half-open fill rule (its left and lower edges in, its right and upper edges out)."""
    counts = torch.zeros(SIZE, SIZE, dtype=torch.int32)
    counts[bottom:bottom + side, left:left + side] = 1
    return counts


TRIANGLE = (torch.tensor([centre(0, 0), centre(8, 0), centre(0, 8)]), torch.tensor([[0, 1, 2]]))


def test_the_package_offers_the_five_functions():
    import trellis_mv.raster

    assert trellis_mv.raster.__all__ == ["coverage", "interpolate", "rasterize", "rasterize_uv", "texel_counts"]


def test_one_triangle_counts_the_texel_centres_inside_it():
    counts = texel_counts(*TRIANGLE, SIZE)
    assert counts.shape == (SIZE, SIZE) and counts.dtype == torch.int32
    # row r (v = 0 is row 0) holds columns 0 .. 7 - r: the hypotenuse's own centres belong to the other side
    expected = torch.zeros(SIZE, SIZE, dtype=torch.int32)
    for row in range(8):
        expected[row, :8 - row] = 1
    assert torch.equal(counts, expected)
    # winding does not matter
    assert torch.equal(texel_counts(TRIANGLE[0], TRIANGLE[1].flip(1), SIZE), expected)


def test_two_overlapping_triangles_count_two_where_they_overlap():
    shifted = TRIANGLE[0] + torch.tensor([3 / SIZE, 2 / SIZE])
    uvs, faces = layout(TRIANGLE, (shifted, TRIANGLE[1]))
    counts = texel_counts(uvs, faces, SIZE)
    first, second = texel_counts(*TRIANGLE, SIZE), texel_counts(shifted, TRIANGLE[1], SIZE)
    assert torch.equal(counts, first + second)
    assert int((counts == 2).sum()) == int(((first == 1) & (second == 1)).sum()) > 0
    # a chart laid twice on itself counts 2 on every one of its texels
    chart = grid_chart(4, 4, 3, 4)
    twice = texel_counts(*layout(chart, chart), SIZE)
    assert torch.equal(twice, 2 * expected_square(4, 4, 12))


@pytest.mark.parametrize(("cells", "step"), [(1, 8), (3, 4), (6, 2), (5, 1)])
def test_a_chart_counts_each_of_its_texels_once_edges_and_corners_included(cells, step):
    """Every inner edge and corner of these charts runs through texel centres: each is counted once."""
    counts = texel_counts(*grid_chart(10, 20, cells, step), SIZE)
    assert torch.equal(counts, expected_square(10, 20, cells * step))


def test_charts_apart_count_at_most_one():
    charts = [grid_chart(2, 2, 4, 3), grid_chart(20, 2, 2, 5), grid_chart(2, 30, 8, 2), grid_chart(40, 40, 3, 7)]
    counts = texel_counts(*layout(*charts), SIZE)
    assert int(counts.max()) == 1
    expected = expected_square(2, 2, 12) + expected_square(20, 2, 10) + expected_square(2, 30, 16) + expected_square(40, 40, 21)
    assert torch.equal(counts, expected)


def test_degenerate_and_outside_triangles_count_nothing():
    uvs = torch.tensor([centre(5, 5), centre(9, 5), centre(13, 5), (1.5, 1.5), (1.9, 1.5), (1.5, 1.9)])
    assert not texel_counts(uvs, torch.tensor([[0, 1, 2], [3, 4, 5]]), SIZE).any()
    assert not texel_counts(uvs, torch.zeros((0, 3), dtype=torch.int64), SIZE).any()


def clip(points) -> torch.Tensor:
    """One image's clip-space vertices from (x, y, z, w) rows."""
    return torch.tensor([points], dtype=torch.float32)


ONE = torch.tensor([[0, 1, 2]], dtype=torch.int32)


def test_one_triangle_covers_the_pixel_centres_inside_it_bottom_row_first():
    # the lower-left half of the frame; centres on the diagonal belong to the triangle beyond it
    rast = rasterize(clip([(-1, -1, 0, 1), (1, -1, 0, 1), (-1, 1, 0, 1)]), ONE, (4, 4))[0]
    assert rast[..., 3].tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    # pixel (0, 0) is centred at (-0.75, -0.75) = 0.75 v0 + 0.125 v1 + 0.125 v2
    assert rast[0, 0].tolist() == pytest.approx([0.75, 0.125, 0.0, 1.0])
    assert rast[1, 1].tolist() == pytest.approx([0.25, 0.375, 0.0, 1.0])
    # the other half takes the diagonal: the two cover every pixel once
    other = rasterize(clip([(1, -1, 0, 1), (1, 1, 0, 1), (-1, 1, 0, 1)]), ONE, (4, 4))[0]
    assert ((rast[..., 3] > 0) ^ (other[..., 3] > 0)).all()


def test_the_nearest_triangle_wins_whatever_the_order():
    near = [(-1, -1, -0.5, 1), (3, -1, -0.5, 1), (-1, 3, -0.5, 1)]
    far = [(-1, -1, 0.5, 1), (3, -1, 0.5, 1), (-1, 3, 0.5, 1)]
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.int32)
    for points, winner in [(near + far, 1), (far + near, 2)]:
        rast = rasterize(clip(points), faces, (8, 8))[0]
        assert (rast[..., 3] == winner).all() and torch.allclose(rast[..., 2], torch.tensor(-0.5))


def test_barycentrics_are_perspective_correct():
    # a plane receding in depth: interpolating world positions must land on the plane, where the pixel's ray meets it
    vertices = torch.tensor([[-1.0, -1.0, 0.0], [1.0, -1.0, -3.0], [-1.0, 1.0, 0.0], [1.0, 1.0, -3.0]])
    faces = torch.tensor([[0, 1, 2], [2, 1, 3]], dtype=torch.int32)
    projection = perspective(torch.tensor([60.0]), torch.tensor([0.1]), torch.tensor([10.0]))[0]
    camera = vertices - torch.tensor([0.0, 0.0, 2.0])  # camera at z = 2 looking down -z
    points = torch.cat([camera, torch.ones(4, 1)], dim=1) @ projection.T
    rast = rasterize(points[None], faces, (32, 32))
    hit = interpolate(camera, rast, faces)[0]
    covered = rast[0, ..., 3] > 0
    # on the plane z = -2 - 1.5 (x + 1): check every covered pixel's point against it
    assert covered.sum() > 300
    assert torch.allclose(hit[covered][:, 2], -2 - 1.5 * (hit[covered][:, 0] + 1), atol=1e-4)
    # and on its pixel's ray: x/z and y/z are fixed by the pixel centre
    rows, columns = torch.nonzero(covered, as_tuple=True)
    focal = 1 / math.tan(math.radians(30))
    ndc_x = (2 * columns + 1) / 32 - 1
    assert torch.allclose(-focal * hit[covered][:, 0] / hit[covered][:, 2], ndc_x.float(), atol=1e-4)
    assert not hit[~covered].any()


def views_of(mesh: RenderMesh, count: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    azimuth, elevation = torch.rand(count, generator=generator) * 360, torch.rand(count, generator=generator) * 120 - 45
    return frame_to_square(clip_space(mesh.vertices, azimuth, elevation, torch.full((count,), 40.0), radius=mesh.radius))


def test_coverage_is_what_the_full_rasterizer_covers():
    mesh = RenderMesh.from_trimesh(chair(), "cpu")
    views = views_of(mesh, 24)
    full = rasterize(views, mesh.faces, (64, 64))[..., 3] > 0
    assert torch.equal(coverage(views, mesh.faces, (64, 64)), full)  # one span computation behind both
    assert int(full.sum()) > 24 * 64 * 64 * 0.2


def test_batches_chunks_and_image_groups_do_not_change_the_result():
    base = chair()
    mesh = RenderMesh.from_trimesh(trimesh.Trimesh(*trimesh.remesh.subdivide(base.vertices, base.faces), process=False), "cpu")
    views = views_of(mesh, 6, seed=1)
    together = rasterize(views, mesh.faces, (256, 256))
    apart = torch.cat([rasterize(views[i:i + 1], mesh.faces, (256, 256)) for i in range(6)])
    assert torch.equal(together, apart)
    assert torch.equal(coverage(views, mesh.faces, (256, 256)), together[..., 3] > 0)
    # two images of more triangles than one group holds: 100k copies of one that covers no pixel centre, then one that does
    faces = torch.cat([ONE.repeat(100_000, 1), ONE + 3])
    points = clip([(-0.1, -0.1, 0, 1), (0.1, -0.1, 0, 1), (-0.1, 0.1, 0, 1), (-0.5, -0.5, 0, 1), (0.5, -0.5, 0, 1), (-0.5, 0.5, 0, 1)])
    points = torch.cat([points, points * torch.tensor([-1.0, 1.0, 1.0, 1.0])])  # mirrored: wound the other way
    assert len(spans.image_groups(2, len(faces), spans.scratch_bytes(torch.device("cpu")))) == 2
    drawn = rasterize(points, faces, (8, 8))
    alone = rasterize(points[:, 3:], ONE, (8, 8))
    assert torch.equal(drawn[..., :3], alone[..., :3]) and torch.equal(drawn[..., 3], alone[..., 3] * len(faces))
    assert (alone[..., 3] > 0).any(dim=(1, 2)).all()


def test_triangles_behind_the_camera_are_skipped():
    behind = clip([(-1, -1, 0, 1), (1, -1, 0, -1), (-1, 1, 0, 1)])
    assert not (rasterize(behind, ONE, (4, 4))[..., 3] > 0).any()
    assert not coverage(behind, ONE, (4, 4)).any()


def uv_layout() -> tuple[torch.Tensor, torch.Tensor]:
    """Grid charts with edges through texel centres, jittered small triangles, and two that overlap a chart."""
    generator = torch.Generator().manual_seed(3)
    corners = torch.rand(60, 1, 2, generator=generator) * 0.8 + 0.1
    scattered = corners + (torch.rand(60, 3, 2, generator=generator) - 0.5) * 0.08
    overlapping = torch.tensor([[centre(3, 3), centre(14, 5), centre(5, 14)], [centre(40, 40), centre(60, 42), centre(41, 60)]])
    return layout(grid_chart(2, 2, 4, 3), grid_chart(40, 40, 3, 7), *[(triangle, torch.tensor([[0, 1, 2]])) for triangle in scattered],
                  *[(triangle, torch.tensor([[0, 1, 2]])) for triangle in overlapping])


def test_the_uv_path_gives_the_camera_paths_texels_and_barycentrics():
    uvs, faces = uv_layout()
    flat = torch.cat([uvs * 2 - 1, torch.zeros(len(uvs), 1), torch.ones(len(uvs), 1)], dim=1)
    uv = rasterize_uv(uvs, faces, SIZE)
    camera = rasterize(flat[None], faces, (SIZE, SIZE))[0]
    assert uv.shape == (SIZE, SIZE, 4) and int((uv[..., 3] > 0).sum()) > 600
    assert torch.equal(uv, camera)  # z = 0 everywhere: the depth key ties, the lowest index wins in both
    assert torch.equal(uv[..., 3] > 0, texel_counts(uvs, faces, SIZE) > 0)
    # where the last two triangles overlap the charts, the charts (lower indices) keep their texels
    assert int(uv[..., 3].max()) < len(faces) - 1
    # row 0 is v = 0: the texel centre at (u, v) of chart 1's corner quad sits at row 40, column 40
    assert int(uv[40, 40, 3]) > 0 and int(uv[39, 40, 3]) == 0 and int(uv[40, 39, 3]) == 0
    positions = interpolate(torch.cat([uvs, torch.zeros(len(uvs), 1)], dim=1), uv, faces)
    rows, columns = torch.nonzero(uv[..., 3] > 0, as_tuple=True)
    assert torch.allclose(positions[rows, columns, :2], torch.stack([(columns + 0.5) / SIZE, (rows + 0.5) / SIZE], dim=1), atol=1e-6)


def test_coverage_and_barycentrics_of_triangles_a_few_texels_wide_are_exact_to_float32():
    # Default atlases hold ~180k triangles of a few texels in 2048²: computed from whole clip
    # coordinates (affine edge functions), barycentrics were off by 0.03 at the 99.9th percentile
    # there, and 0.3% of the covered texel centres lay outside their triangle, up to 0.36 beyond an edge.
    size, count = 2048, 2000
    generator = torch.Generator().manual_seed(0)
    centres = torch.rand(count, 2, generator=generator) * 0.9 + 0.05
    uvs = (centres[:, None] + torch.randn(count, 3, 2, generator=generator) * 2.0 / size).reshape(-1, 2)
    faces = torch.arange(3 * count).reshape(-1, 3)
    rast = rasterize_uv(uvs, faces, size)
    rows, columns = (rast[..., 3] > 0).nonzero().unbind(1)
    corners = uvs.double()[faces[rast[rows, columns, 3].long() - 1]]
    point = torch.stack([(columns.double() + 0.5) / size, (rows.double() + 0.5) / size], dim=1)

    def cross(a, b):
        return a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]

    area = cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    exact = torch.stack([cross(corners[:, 1] - point, corners[:, 2] - point) / area,
                         cross(corners[:, 2] - point, corners[:, 0] - point) / area], dim=1)
    weights = torch.cat([exact, 1 - exact.sum(dim=1, keepdim=True)], dim=1)
    error = (rast[rows, columns, :2].double() - exact).abs().amax(dim=1)
    assert len(rows) > 5000
    assert float(-weights.amin(dim=1).min()) < 1e-4  # a covered centre lies inside, to float rounding
    assert float(torch.quantile(error.float(), 0.999)) < 2e-4 and float(error.max()) < 2e-3
