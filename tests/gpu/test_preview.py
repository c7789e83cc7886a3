"""Previews and the per-view fit on the GPU: our rasterizer held to nvdiffrast (where the device has
it), known cameras recovered, the sheets of a textured test mesh and of a generated mesh, and what the
fit costs.

The CPU tests run the same code (tests/test_raster.py, tests/test_render*.py); here it runs on CUDA.
Sheets go to ``out_dir`` as ``preview_*.png`` for a person to look at. Record keys:
``preview_ours_vs_nvdiffrast``, ``preview_shaded_gpu_vs_cpu``, ``preview_fit_recovery``,
``preview_chair``, ``views_fit_seconds_86016_faces``, ``views_fit_seconds_344064_faces``,
``preview_generated_512``, ``preview_worker_cpu_generator``. tests/gpu/test_raster_gpu.py times the
rasterizers against each other.
"""

from __future__ import annotations

import base64
import io
import time

import numpy as np
import pytest
import torch
import trimesh
from harness import rgba_view
from PIL import Image
from render_scenes import KNOWN_CAMERAS, angle_error, chair, ellipsoid, photo

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _cameras(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(count, generator=generator) * 360, torch.rand(count, generator=generator) * 120 - 45,
            torch.rand(count, generator=generator) * 60 + 10)


def _coverage(png: bytes, tiles: int, size: int) -> list[float]:
    """Share of each of the first ``tiles`` sheet tiles that differs from the background."""
    with Image.open(io.BytesIO(png)) as image:
        picture = np.asarray(image.convert("RGB")).astype(float)
    shares = []
    for index in range(tiles):
        top, left = 4 + (index // 4) * (size + 4), 4 + (index % 4) * (size + 4)
        tile = picture[top + 16:top + size, left:left + size]  # below the caption
        shares.append(float((np.abs(tile - 0.94 * 255).sum(axis=2) > 30).mean()))
    return shares


def _timed_fit(mesh, views) -> float:
    from trellis_mv.preview.views_fit import fit_views

    torch.cuda.synchronize()
    start = time.perf_counter()
    fit_views(mesh, views)
    torch.cuda.synchronize()
    return round(time.perf_counter() - start, 4)


def test_our_rasterizer_agrees_with_nvdiffrast(record):
    dr = pytest.importorskip("nvdiffrast.torch")  # no longer in the image: compared against where the device has it
    from trellis_mv.preview.cameras import clip_space, frame_to_square
    from trellis_mv.preview.render import RenderMesh
    from trellis_mv.raster import coverage, rasterize

    mesh = RenderMesh.from_trimesh(chair(), "cuda")
    azimuth, elevation, fov = _cameras(32, seed=0)
    clip = frame_to_square(clip_space(mesh.vertices, azimuth, elevation, fov, radius=mesh.radius), margin=0.05)
    theirs, _ = dr.rasterize(dr.RasterizeCudaContext(device="cuda"), clip.contiguous(), mesh.faces, (96, 96))
    ours = rasterize(clip, mesh.faces, (96, 96))
    covered_theirs, covered_ours = theirs[..., 3] > 0, ours[..., 3] > 0
    both = covered_theirs & covered_ours
    same = both & (theirs[..., 3] == ours[..., 3])
    bary = (theirs[same][:, :2] - ours[same][:, :2]).abs().amax(dim=1)
    depth = (theirs[same][:, 2] - ours[same][:, 2]).abs()
    result = {
        "covered_pixels": int(covered_theirs.sum()),
        "coverage_mismatch_pixels": int((covered_theirs != covered_ours).sum()),
        "coverage_vs_rasterize_mismatch_pixels": int((coverage(clip, mesh.faces, (96, 96)) != covered_ours).sum()),
        "same_triangle_share": round(float(same.sum() / both.sum()), 5),
        "barycentric_max_diff": float(bary.max()), "barycentric_p999_diff": float(torch.quantile(bary, 0.999)),
        "depth_max_diff": float(depth.max()),
    }
    record("preview_ours_vs_nvdiffrast", result)
    assert result["covered_pixels"] > 32 * 96 * 96 * 0.2
    # Coverage may differ only at pixel centres within 1/32 px of an edge: nvdiffrast snaps vertices to
    # 1/16 px (CR_SUBPIXEL_LOG2) and has its own fill rule. A flipped image or a wrong clip-space
    # convention would differ on a third of the pixels or more.
    assert result["coverage_mismatch_pixels"] <= 0.01 * result["covered_pixels"], result
    assert result["coverage_vs_rasterize_mismatch_pixels"] == 0, result  # one span computation behind both
    assert result["same_triangle_share"] >= 0.97, result
    # where both pick the same triangle, barycentrics and depth come from the same float formula (rasterize.cu)
    assert result["barycentric_p999_diff"] < 1e-3 and result["depth_max_diff"] < 1e-3, result


def test_shaded_renders_match_the_cpu_path(record):
    from trellis_mv.preview.render import RenderMesh, shaded

    azimuth, elevation, fov = _cameras(8, seed=1)
    pictures = {device: shaded(RenderMesh.from_trimesh(chair(), device), azimuth, elevation, fov, 128).cpu() for device in ("cuda", "cpu")}
    difference = (pictures["cuda"] - pictures["cpu"]).abs()
    record("preview_shaded_gpu_vs_cpu", {"mean_abs": float(difference.mean()), "share_above_0.1": float((difference > 0.1).float().mean())})
    # the same code on both devices: only float rounding differs (one pixel centre on an edge may flip)
    assert float(difference.mean()) < 0.01
    assert float((difference > 0.1).float().mean()) < 0.02


def test_the_fit_recovers_known_cameras_on_the_gpu(record):
    from trellis_mv.preview.render import RenderMesh
    from trellis_mv.preview.views_fit import fit_views

    mesh = chair()
    views = [photo(mesh, camera, device="cuda") for camera in KNOWN_CAMERAS]
    views.append(photo(ellipsoid(), (10.0, 10.0, 40.0), device="cuda"))
    *found, other = fit_views(RenderMesh.from_trimesh(mesh, "cuda"), views)
    errors = [
        {"camera": camera, "found": fit.answer(), "azimuth_error": round(angle_error(fit.azimuth, camera[0]), 2),
         "elevation_error": round(abs(fit.elevation - camera[1]), 2), "fov_error": round(abs(fit.fov - camera[2]), 2)}
        for camera, fit in zip(KNOWN_CAMERAS, found)
    ]
    record("preview_fit_recovery", {"views": errors, "other_shape_iou": round(other.iou, 4)})
    for error in errors:
        assert error["azimuth_error"] <= 1.5 and error["elevation_error"] <= 2.0 and error["fov_error"] <= 10.0, error
        assert error["found"]["iou"] >= 0.95, error
    assert other.iou < 0.8 and other.iou < min(fit.iou for fit in found) - 0.15


def test_the_sheet_of_a_textured_mesh(out_dir, record):
    from trellis_mv.preview import PreviewOptions, make_preview

    mesh = chair()
    views = [photo(mesh, camera, device="cuda") for camera in KNOWN_CAMERAS[:4]]
    make_preview(mesh, views[:1], device="cuda")  # warm-up: CUDA context, kernels
    preview = make_preview(mesh, views, device="cuda")
    (out_dir / "preview_chair.png").write_bytes(preview.png)
    coverage = _coverage(preview.png, 12, PreviewOptions.for_device(torch.device("cuda")).tile)
    record("preview_chair", {"timings": preview.timings, "bytes": len(preview.png), "tile_coverage": coverage,
                             "views_fit": preview.views_fit})
    assert all(0.1 < share < 0.8 for share in coverage), coverage
    assert all(fit["iou"] >= 0.95 for fit in preview.views_fit)


@pytest.mark.parametrize("subdivisions", [4, 5])
def test_views_fit_time_at_export_sizes(record, subdivisions):
    """The fit's cost for 1 and 4 views on meshes of 86k and 344k faces (the default export keeps about 175k)."""
    from trellis_mv.preview.render import RenderMesh

    base = chair()
    vertices, faces = base.vertices, base.faces
    for _ in range(subdivisions):
        vertices, faces = trimesh.remesh.subdivide(vertices, faces)
    mesh = RenderMesh.from_trimesh(trimesh.Trimesh(vertices, faces, process=False), "cuda")
    views = [photo(base, camera, device="cuda") for camera in KNOWN_CAMERAS[:4]]
    _timed_fit(mesh, views[:1])  # warm-up
    seconds = {"1 view": _timed_fit(mesh, views[:1]), "4 views": _timed_fit(mesh, views)}
    record(f"views_fit_seconds_{len(faces)}_faces", seconds)
    assert seconds["4 views"] < 30


def test_the_sheet_of_a_generated_mesh(pipeline_bf16, out_dir, record):
    from trellis_mv.export import GlbOptions, export_glb
    from trellis_mv.generator import GenerationRequest, StageOptions
    from trellis_mv.pipeline import TrellisGenerator
    from trellis_mv.preview import PreviewOptions, make_preview
    from trellis_mv.preview.render import RenderMesh

    few = StageOptions(steps=4)
    request = GenerationRequest(images=tuple(rgba_view(20 + index) for index in range(4)), seed=7, pipeline_type="512",
                                sparse_structure=few, shape_slat=few, tex_slat=few)
    result = TrellisGenerator(pipeline_bf16).generate(request)
    assert [view.mode for view in result.views] == ["RGBA"] * 4
    glb = export_glb(result.mesh, GlbOptions(decimation_target=200_000, texture_size=1024, remesh=False))
    mesh = RenderMesh.of(glb.mesh, "cuda")  # a TexturedMesh (what the GLB holds), not a trimesh
    _timed_fit(mesh, result.views[:1])  # warm-up
    seconds = {"1 view": _timed_fit(mesh, result.views[:1]), "4 views": _timed_fit(mesh, result.views)}
    preview = make_preview(glb.mesh, result.views, device="cuda")
    (out_dir / "preview_generated_512.png").write_bytes(preview.png)
    coverage = _coverage(preview.png, 8, PreviewOptions.for_device(torch.device("cuda")).tile)
    record("preview_generated_512", {"faces": glb.faces, "views_fit_seconds": seconds, "timings": preview.timings,
                                     "generate_timings": result.timings, "views_fit": preview.views_fit, "tile_coverage": coverage})
    assert all(share > 0.05 for share in coverage), coverage
    assert len(preview.views_fit) == 4 and all(0 < fit["iou"] <= 1 for fit in preview.views_fit)


def test_the_worker_answers_a_preview_rendered_on_the_gpu(out_dir, record):
    from cpu_generator import CpuGenerator
    from helpers import png_b64

    from trellis_mv.config import Settings
    from trellis_mv.preview import PreviewOptions
    from trellis_mv.worker import run_job

    job = {"id": "preview-gpu", "input": {"images": [png_b64((32, 32), (200, 40, 40, 255)), png_b64((48, 32), (40, 40, 200, 255))],
                                          "seed": 7, "output": {"type": "base64", "preview": True}}}
    answer = run_job(job, settings=Settings(), generator=CpuGenerator(), store=None)
    assert "error" not in answer, answer
    data = base64.b64decode(answer["preview"]["base64"])
    (out_dir / "preview_worker_cpu_generator.png").write_bytes(data)
    record("preview_worker_cpu_generator", {"timings": answer["timings"], "views_fit": answer["views_fit"]})
    # the CPU generator's sphere seen against its opaque, rectangular views
    assert answer["views_fit"][0]["iou"] == pytest.approx(np.pi / 4, abs=0.08)
    assert all(share > 0.1 for share in _coverage(data, 8, PreviewOptions.for_device(torch.device("cuda")).tile))
