"""``pack_charts``: finished charts into one atlas, checked by exact texel-centre counts and by geometry.

Both packers (xatlas's on outlines, our shelves) face every case; ``auto`` picks by chart count.

Known answers on synthetic chart sets: unit squares (their packed boxes must keep the padding, in
exact arithmetic), blobs of many sizes, one chart, many tiny ones, one giant among small ones, a
chart of zero area. What must hold for every set: inside [0, 1]², no texel centre covered by two charts,
no texel of one chart within ``padding`` texels of another's, one scale for all charts (UV area /
chart area equal), no mirror (every triangle's signed area keeps its sign), the same answer twice.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trellis_mv.export import pack, pack_xatlas
from trellis_mv.export.pack import XATLAS_CHARTS, pack_charts

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from pack_charts import padding_violations, texel_labels  # noqa: E402  (benchmarks/ is scripts, not a package)

Charts = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def squares(sides: list[float]) -> Charts:
    """One square chart of each side length, every one with its corner at the origin (chart-local)."""
    corners = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    uvs = torch.cat([corners * side for side in sides])
    faces = torch.cat([torch.tensor([[0, 1, 2], [0, 2, 3]]) + 4 * index for index in range(len(sides))])
    return uvs, faces, torch.arange(len(sides)).repeat_interleave(2)


def blobs(radii: list[float], seed: int = 0) -> Charts:
    """Star-shaped charts (a fan around a centre, bumpy rims, some of them mirrored in the input), centred on 0."""
    generator = torch.Generator().manual_seed(seed)
    uvs, faces, chart, start = [], [], [], 0
    for index, radius in enumerate(radii):
        rim = 12 + int(torch.randint(0, 20, (1,), generator=generator))
        angle = torch.linspace(0, 2 * math.pi, rim + 1)[:-1]
        bumps = 1 + 0.3 * torch.sin(3 * angle + float(torch.rand(1, generator=generator)) * 6)
        points = torch.stack([angle.cos() * 1.6, angle.sin()], dim=1) * (radius * bumps[:, None])
        if index % 3 == 1:
            points[:, 0] = -points[:, 0]  # clockwise triangles: their orientation must survive too
        uvs.append(torch.cat([torch.zeros(1, 2), points]))
        ring = torch.arange(rim)
        faces.append(torch.stack([torch.zeros(rim, dtype=torch.int64), 1 + ring, 1 + (ring + 1) % rim], dim=1) + start)
        chart.append(torch.full((rim,), index))
        start += rim + 1
    return torch.cat(uvs), torch.cat(faces), torch.cat(chart)


def signed_areas(uvs: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    a, b, c = uvs.double()[faces].unbind(dim=1)
    return ((b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0]) / 2


def check_atlas(charts: Charts, packed: torch.Tensor, size: int, padding: int) -> None:
    """Everything the contract promises for every chart set (see the module docstring)."""
    uvs, faces, chart = charts
    assert packed.shape == uvs.shape and packed.dtype == torch.float32 and packed.device == uvs.device
    assert bool(((packed >= 0) & (packed <= 1)).all())
    low, high = texel_labels(packed, faces, chart, size)
    assert torch.equal(low, high)
    assert padding_violations(high, padding) == 0
    before, after = signed_areas(uvs, faces), signed_areas(packed, faces)
    real = before.abs() > 1e-9 * before.abs().max()
    assert bool((torch.sign(before[real]) == torch.sign(after[real])).all())
    area_before = torch.zeros(int(chart.max()) + 1, dtype=torch.float64).index_add_(0, chart[real], before[real].abs())
    area_after = torch.zeros_like(area_before).index_add_(0, chart[real], after[real].abs())
    ratio = area_after[area_before > 0] / area_before[area_before > 0]
    assert float(ratio.max() / ratio.min()) == pytest.approx(1, abs=1e-4)
    geometry = packed[faces[real].reshape(-1)] * size
    assert float(geometry.min()) >= padding - 1e-3 and float(geometry.max()) <= size - padding + 1e-3


CASES = {
    "equal squares": (squares([1.0] * 30), 128, 2),
    "squares of many sizes": (squares([0.2 + 0.1 * (index % 9) for index in range(60)]), 256, 2),
    "blobs": (blobs([0.5 + 0.2 * (index % 7) for index in range(80)]), 256, 2),
    "one chart": (blobs([1.0]), 64, 2),
    "many tiny charts": (squares([0.01] * 400), 256, 1),
    "a giant among small charts": (blobs([20.0] + [0.5] * 40), 256, 3),
    "no padding": (blobs([0.5 + 0.2 * (index % 7) for index in range(40)]), 128, 0),
}


PACKERS = ["xatlas", "shelves"]


@pytest.mark.parametrize("packer", PACKERS)
@pytest.mark.parametrize(("charts", "size", "padding"), CASES.values(), ids=CASES.keys())
def test_charts_pack_inside_apart_unmirrored_at_one_scale(charts, size, padding, packer):
    check_atlas(charts, pack_charts(*charts, size, padding, packer=packer), size, padding)


@pytest.mark.parametrize("packer", PACKERS)
@pytest.mark.parametrize("padding", [1, 2, 4])
def test_squares_keep_the_padding_between_their_boxes_and_to_the_border(padding, packer):
    size = 128
    charts = squares([1.0] * 24)
    packed = pack_charts(*charts, size, padding, packer=packer).double().view(24, 4, 2) * size
    low, high = packed.amin(dim=1), packed.amax(dim=1)
    assert float(low.min()) >= padding - 1e-4 and float(high.max()) <= size - padding + 1e-4
    gap = torch.maximum(low[:, None] - high[None], low[None] - high[:, None]).amax(dim=2)  # per pair, the widest axis gap
    assert float(gap[~torch.eye(24, dtype=torch.bool)].min()) >= padding - 1e-4


@pytest.mark.parametrize("packer", PACKERS)
def test_a_chart_in_two_pieces_moves_as_one(packer):
    uvs, faces, chart = squares([1.0] * 12)
    uvs[4:8] += torch.tensor([3.0, 2.5])  # the second square of chart 0, apart from the first in both axes
    chart[2:4] = 0
    chart = torch.unique(chart, return_inverse=True)[1]
    packed = pack_charts(uvs, faces, chart, 128, 2, packer=packer).double()
    check_atlas((uvs, faces, chart), packed.float(), 128, 2)
    distances = torch.cdist(packed[:8], packed[:8]) / torch.cdist(uvs[:8].double(), uvs[:8].double()).clamp_min(1e-12)
    off_diagonal = distances[~torch.eye(8, dtype=torch.bool)]
    assert float(off_diagonal.max() / off_diagonal.min()) == pytest.approx(1, abs=1e-5)


@pytest.mark.parametrize("packer", PACKERS)
def test_one_chart_fills_the_atlas_up_to_the_padding(packer):
    packed = pack_charts(*squares([3.0]), 64, 2, packer=packer) * 64
    assert torch.allclose(packed.amin(dim=0), torch.tensor([2.0, 2.0]), atol=1e-4)
    assert float(packed.amax()) == pytest.approx(62, abs=1e-4)


@pytest.mark.parametrize("packer", PACKERS)
def test_a_chart_of_zero_area_goes_to_the_corner_and_the_others_pack(packer):
    uvs, faces, chart = blobs([0.5] * 10)
    line = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    charts = (torch.cat([uvs, line]), torch.cat([faces, torch.tensor([[0, 1, 2]]) + uvs.shape[0]]),
              torch.cat([chart, torch.tensor([10])]))
    packed = pack_charts(*charts, 128, 2, packer=packer)
    assert torch.equal(packed[-3:], torch.zeros(3, 2))
    check_atlas(charts, packed, 128, 2)


def test_only_zero_area_charts_all_go_to_the_corner():
    charts = (torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]]), torch.tensor([[0, 1, 2]]), torch.tensor([0]))
    assert torch.equal(pack_charts(*charts, 64, 2), torch.zeros(3, 2))


def test_a_vertex_no_face_uses_goes_to_the_corner():
    uvs, faces, chart = squares([1.0, 2.0])
    packed = pack_charts(torch.cat([uvs, torch.tensor([[5.0, 5.0]])]), faces, chart, 64, 2)
    assert torch.equal(packed[-1], torch.zeros(2))


@pytest.mark.parametrize("packer", PACKERS)
def test_the_same_charts_pack_the_same_way(packer):
    charts = blobs([0.3 + 0.1 * (index % 5) for index in range(50)])
    assert torch.equal(pack_charts(*charts, 256, 2, packer=packer), pack_charts(*charts, 256, 2, packer=packer))


@pytest.mark.parametrize(("count", "packer"), [(XATLAS_CHARTS, "xatlas"), (XATLAS_CHARTS + 1, "shelves")])
def test_auto_picks_the_packer_by_the_chart_count(count, packer):
    charts = squares([1.0] * count)
    assert torch.equal(pack_charts(*charts, 512, 1), pack_charts(*charts, 512, 1, packer=packer))


def test_the_public_names():
    assert pack.__all__ == ["XATLAS_CHARTS", "pack_charts"] and pack_xatlas.__all__ == ["xatlas_layout"]


def test_too_small_a_texture_for_the_padding_is_refused():
    with pytest.raises(ValueError, match="size: 8 leaves no room inside a padding of 3 texels"):
        pack_charts(*squares([1.0]), 8, 3)


def test_the_module_imports_without_loading_xatlas():
    code = "import sys, trellis_mv.export.pack; sys.exit('xatlas' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60).returncode == 0
