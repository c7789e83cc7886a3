"""The fast unwrap's parameterisation (trellis_mv.export.charts, lscm) on meshes with known answers, on the CPU.

Charts come from known partitions (CuMesh's clustering needs CUDA). Every case checks the contract
the packer relies on (compact chart ids, no vertex in two charts, UV area = surface area per chart)
and that no face is flipped; the table says what else is known: how many charts, and which needed
the conformal solve or a split.
"""

from __future__ import annotations

import math

import pytest
import torch
import unwrap_meshes as meshes

from trellis_mv.export.charts import Limits, parameterize
from trellis_mv.export.clean import degenerate_faces
from trellis_mv.export.lscm import lscm
from trellis_mv.export.segments import segment_sum
from trellis_mv.export.pack import pack_charts
from trellis_mv.export.uv_quality import atlas_quality, chart_stretch, face_stretch


@pytest.fixture(autouse=True)
def one_thread():
    """These tests run thousands of small tensor operations; on a busy shared machine each parallel one
    waits for its slowest thread (82k faces: 4 s on one thread, 80 s on two under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _two_grids():
    vertices, faces, chart = meshes.grid(4)
    return torch.cat([vertices, vertices + torch.tensor([3.0, 0, 0])]), torch.cat([faces, faces + len(vertices)]), torch.cat([chart, chart])


def _bowtie():
    vertices = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0.5]])
    return vertices, torch.tensor([[0, 1, 2], [0, 3, 4]]), torch.tensor([7, 7])


CASES = [  # (name, mesh, charts, projected, solved, split)
    ("plane", lambda: meshes.grid(8), 1, 1, 0, 0),
    ("cube", lambda: meshes.cube(), 6, 6, 0, 0),
    ("a chart with a hole", lambda: meshes.annulus(), 1, 1, 0, 0),
    ("one cluster in two pieces", _two_grids, 2, 2, 0, 0),
    ("one cluster touching itself at a vertex", _bowtie, 2, 2, 0, 0),
    # the hemisphere's rim stands at 90° to its plane: the projection fails, LSCM passes
    ("hemisphere", lambda: meshes.sphere(3, above=0.0), 1, 0, 1, 0),
    ("half cylinder", lambda: meshes.grid(12, bend=math.pi), 1, 0, 1, 0),
    # a closed tube folds under projection and LSCM alike: cut across its normals, then each half solves
    ("cylinder", lambda: meshes.cylinder(), 4, 2, 2, 1),
    ("sphere", lambda: meshes.sphere(3), 2, 0, 2, 1),
    # every face faces up, yet from above the ramp covers itself: cut until no piece does
    ("spiral ramp", meshes.helicoid, 4, 4, 0, 1),
]


def _check_contract(vertices, faces, charts):
    """What pack_charts relies on, and what the export needs: see CONTRACTS.md."""
    assert charts.faces.shape == faces.shape and charts.chart.shape == (len(faces),)
    assert sorted(charts.chart.unique().tolist()) == list(range(charts.count))
    assert torch.equal(charts.vmap[charts.faces], faces)  # same faces, same corners, split vertices
    vertex_chart = torch.full((len(charts.uvs),), -1)
    vertex_chart[charts.faces.reshape(-1)] = charts.chart.repeat_interleave(3)
    for corner in range(3):
        assert torch.equal(vertex_chart[charts.faces[:, corner]], charts.chart)  # no vertex in two charts
    stretch = face_stretch(vertices[charts.vmap], charts.uvs, charts.faces)
    counted = ~degenerate_faces(vertices, faces)
    assert not bool(((stretch.uv_area <= 0) & counted).any()), "a flipped face"
    surface = segment_sum(torch.where(counted, stretch.area, 0.0), charts.chart, charts.count)
    flat = segment_sum(torch.where(counted, stretch.uv_area, 0.0), charts.chart, charts.count)
    assert torch.allclose(flat, surface, rtol=1e-4)  # one texel density for every chart
    return stretch, counted


@pytest.mark.parametrize(("name", "make", "count", "projected", "solved", "split"), CASES)
def test_known_charts(name, make, count, projected, solved, split):
    vertices, faces, chart = make()
    charts = parameterize(vertices, faces, chart)
    stretch, counted = _check_contract(vertices, faces, charts)
    assert charts.count == count
    assert {k: charts.stats[k] for k in ("projected", "solved", "split", "single_faces")} == {
        "projected": projected, "solved": solved, "split": split, "single_faces": 0}
    l2, _ = chart_stretch(stretch, charts.chart, charts.count, counted)
    assert bool((l2 <= Limits().l2).all())


@pytest.mark.parametrize("make", [meshes.cube, lambda: meshes.grid(6, bend=math.pi), meshes.cylinder])
def test_developable_charts_come_out_isometric(make):
    vertices, faces, chart = make()
    charts = parameterize(vertices, faces, chart)
    stretch = face_stretch(vertices[charts.vmap], charts.uvs, charts.faces)
    l2, linf = chart_stretch(stretch, charts.chart, charts.count, torch.ones(len(faces), dtype=torch.bool))
    assert float(l2.max()) == pytest.approx(1.0, abs=1e-3) and float(linf.max()) == pytest.approx(1.0, abs=2e-2)


def test_lscm_unrolls_a_rolled_grid_from_a_poor_start_and_keeps_its_pins():
    vertices, faces, _ = meshes.grid(16, bend=math.pi)
    start = vertices[:, [0, 1]].clone()  # seen from above: the rim squashed to nothing
    uv, iterations = lscm(vertices, faces, torch.zeros(len(vertices), dtype=torch.long), 1, start,
                          torch.ones(len(faces), dtype=torch.bool))
    moved = (uv - start).norm(dim=1)
    assert int((moved == 0).sum()) == 2  # the two pins
    stretch = face_stretch(vertices, uv, faces)
    assert bool((stretch.uv_area > 0).all())
    l2, _ = chart_stretch(stretch, torch.zeros(len(faces), dtype=torch.long), 1, torch.ones(len(faces), dtype=torch.bool))
    assert float(l2) == pytest.approx(1.0, abs=1e-3) and iterations < 1000


def test_degenerate_faces_neither_fail_a_chart_nor_stop_the_solve():
    vertices, faces, chart = meshes.sphere(2, above=0.0)
    middle = (vertices[faces[0, 0]] + vertices[faces[0, 1]]) / 2
    vertices = torch.cat([vertices, middle[None]])
    sliver = torch.tensor([[faces[0, 0], len(vertices) - 1, faces[0, 1]]])  # three points on one line
    faces, chart = torch.cat([faces, sliver]), torch.cat([chart, chart[:1]])
    charts = parameterize(vertices, faces, chart)
    _check_contract(vertices, faces, charts)
    assert charts.count == 1 and charts.stats["solved"] == 1 and bool(torch.isfinite(charts.uvs).all())


def test_a_face_wound_the_other_way_leaves_its_chart_as_a_chart_of_its_own():
    vertices, faces, chart = meshes.grid(8)
    faces[40] = faces[40].flip(0)  # no flattening of the grid keeps this face's winding without overlap
    charts = parameterize(vertices, faces, chart)
    _check_contract(vertices, faces, charts)
    assert charts.stats["mended"] == 1 and 1 <= charts.stats["single_faces"] <= 12
    assert charts.count == 1 + charts.stats["single_faces"] and charts.chart[40] != charts.chart[0]
    positions = vertices[charts.vmap]
    # what is left of the grid lies flat without overlap: every vertex's UV angles make at most a turn
    assert atlas_quality(positions, charts.faces, pack_charts(charts.uvs, charts.faces, charts.chart, 256, 2), 256)[
        "overlap_share"] == 0.0


def test_the_last_round_keeps_a_chart_that_is_only_too_stretched():
    vertices, faces, chart = meshes.sphere(3, above=0.0)
    strict = Limits(l2=1.01)
    assert parameterize(vertices, faces, chart, strict).stats["split"] >= 1  # with rounds to spare, it is cut
    last = parameterize(vertices, faces, chart, strict, rounds=1)
    _check_contract(vertices, faces, last)
    assert (last.count, last.stats["mended"], last.stats["single_faces"]) == (1, 1, 0)


@pytest.mark.parametrize(("rounds", "single_faces"), [(0, 1280), (1, 1280)])
def test_what_still_fails_after_the_last_round_becomes_single_faces(rounds, single_faces):
    vertices, faces, chart = meshes.sphere(3)  # one chart: fails in round 1, its halves would pass in round 2
    charts = parameterize(vertices, faces, chart, rounds=rounds)
    _check_contract(vertices, faces, charts)
    assert charts.stats["single_faces"] == single_faces and charts.count == single_faces


def test_a_dense_bumpy_mesh():
    vertices, faces, chart = meshes.bumpy_sphere(6, cells=2)
    charts = parameterize(vertices, faces, chart)
    stretch, counted = _check_contract(vertices, faces, charts)
    assert len(faces) == 81_920 and charts.stats["solved"] > 0
    l2, _ = chart_stretch(stretch, torch.zeros(len(faces), dtype=torch.long), 1, counted)
    assert float(l2) < 1.02


def test_charts_beyond_one_eigensolver_slice_come_out_as_in_one_call(monkeypatch):
    import trellis_mv.export.charts as charts_module

    vertices, faces, _ = meshes.sphere(4)
    chart = torch.arange(len(faces)) // 2  # 2,560 charts of two faces: three slices of the eigensolver
    eigh_slice = charts_module.EIGH_SLICE
    sliced = parameterize(vertices, faces, chart)
    monkeypatch.setattr(charts_module, "EIGH_SLICE", len(faces))
    whole = parameterize(vertices, faces, chart)
    assert sliced.count == whole.count > len(faces) // 2 > 2 * eigh_slice
    assert torch.equal(sliced.faces, whole.faces) and torch.allclose(sliced.uvs, whole.uvs, atol=1e-6)
