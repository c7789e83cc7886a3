"""The rasterizer's UV side on the CPU: how many triangles cover each texel (the atlas-overlap metric).

Layouts are built on a 64² atlas with every corner on a texel centre, so that edges run exactly
through texel centres: the case a fill rule exists for.
"""

from __future__ import annotations

import pytest
import torch

from trellis_mv.raster import texel_counts

pytestmark = pytest.mark.timeout(30)

SIZE = 64


def centre(column: float, row: float) -> tuple[float, float]:
    """(u, v) of a texel centre; fractional indices lie between centres."""
    return ((column + 0.5) / SIZE, (row + 0.5) / SIZE)


def grid_chart(left: int, bottom: int, cells: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A square chart of ``cells``² quads, ``step`` texels each, corners on texel centres, each quad cut
    along alternating diagonals: horizontal, vertical and diagonal edges through texel centres."""
    points = [centre(left + i * step, bottom + j * step) for j in range(cells + 1) for i in range(cells + 1)]
    faces = []
    for j in range(cells):
        for i in range(cells):
            a, b = j * (cells + 1) + i, j * (cells + 1) + i + 1
            c, d = a + cells + 1, b + cells + 1
            faces += [[a, b, d], [a, d, c]] if (i + j) % 2 else [[a, b, c], [b, d, c]]
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
