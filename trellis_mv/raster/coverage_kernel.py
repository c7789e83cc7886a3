"""``coverage`` on CUDA: the torch path's steps as one Triton kernel, one launch for every image.

Why: the per-view fit (``preview.views_fit``) renders about 1500 silhouettes at 128² for four views,
on the exported mesh (a default job: 150k to 200k faces), and must cost at most a tenth of a
generation. The torch path takes tens of eager launches per image group and a few host
synchronisations per call: 162 ms for views_fit's first batch (216 cameras, 179k faces) on the
H200, where nvdiffrast took 12.4 ms and this kernel takes 1.07 ms. Silhouettes need no depth, no
index and no barycentrics: whether any triangle covers a pixel centre is all the kernel writes.

How: ``_cover`` runs one lane per (image, triangle): the setup of ``spans.triangles`` (winding from
``det[x; y; w]`` of the clip coordinates, skipped where a corner has w <= 0 or the triangle no area;
the box of pixel centres of x/w, y/w), then, row by row of the box, the span ``spans.spans``
computes, and a 1 stored on each of its pixels. Every writer of a pixel writes the same 1, so plain
stores do, with no atomics. At 128² a default mesh's triangles cover 0 to 2 pixel centres: most
lanes do the setup alone, and the loops run to the longest box and span among a program's lanes.
The steps come from ``triton_spans`` (shared with ``uv_kernel``), which takes the torch path's float
operations in torch's order: the pixels are bit for bit those of ``spans.counts(...) > 0``.

Triton comes with torch's CUDA builds, not with its CPU builds: there the kernel is not defined, and
``coverage`` takes the torch path.
"""

from __future__ import annotations

import importlib.util

import torch

from .triton_spans import launch_device

__all__ = ["coverage_cuda", "warm_up"]

# Lanes per program, one (image, triangle) each (a lane per thread of four warps): a program's loops
# run to its largest box, so fewer lanes wait less on the rare triangle that covers many pixels.
_FACES = 128
_MAX_IMAGES = 65535  # CUDA's limit on a grid's second dimension, which counts the images


def coverage_cuda(clip: torch.Tensor, faces: torch.Tensor, resolution: tuple[int, int]) -> torch.Tensor:
    """``rasterize.coverage`` for CUDA tensors: ``[B, H, W]`` bool, one kernel launch (per 65535 images),
    no host synchronisation."""
    height, width = resolution
    clip = clip.float().contiguous()
    faces = faces.to(device=clip.device, dtype=torch.int32).contiguous()
    batch, vertex_count, face_count = clip.shape[0], clip.shape[1], faces.shape[0]
    covered = torch.zeros((batch, height, width), dtype=torch.uint8, device=clip.device)
    with launch_device(clip):
        for start in range(0, batch if face_count else 0, _MAX_IMAGES):
            images = slice(start, start + _MAX_IMAGES)
            _cover[(triton.cdiv(face_count, _FACES), covered[images].shape[0])](
                clip[images], faces, covered[images], vertex_count, face_count, height, width,
                FACES=_FACES, enable_fp_fusion=False,
            )
    return covered.view(torch.bool)


def warm_up(device: torch.device | str = "cuda") -> None:
    """Launch the kernel once on one triangle, so that its compilation lands in Triton's cache
    (``TRITON_CACHE_DIR``) before a job needs it: a fresh worker's first preview then finds it there.
    The per-job integers (image, vertex and face counts, sizes) are not specialised on, so this one
    compilation serves every job. Nothing to do where Triton is absent (the torch path compiles nothing)."""
    if importlib.util.find_spec("triton") is None:
        return
    clip = torch.tensor([[[-1.0, -1.0, 0.0, 1.0], [1.0, -1.0, 0.0, 1.0], [-1.0, 1.0, 0.0, 1.0]]], device=device)
    coverage_cuda(clip, torch.tensor([[0, 1, 2]], device=device), (4, 4))
    torch.cuda.synchronize(device)


if importlib.util.find_spec("triton") is not None:
    import triton
    import triton.language as tl

    from .triton_spans import box, pixel_centre, row_span, winding

    @triton.jit
    def _corner(vertices, index, mask):
        """Clip x, y and w of the vertices at ``index`` (rows of four floats)."""
        x = tl.load(vertices + index * 4, mask=mask, other=0.0)
        y = tl.load(vertices + index * 4 + 1, mask=mask, other=0.0)
        w = tl.load(vertices + index * 4 + 3, mask=mask, other=0.0)
        return x, y, w

    # Triton compiles a variant per integer argument divisible by 16 or not: the counts and sizes
    # vary per job, and a job should not wait for a compilation the warm-up did not do.
    @triton.jit(do_not_specialize=["vertex_count", "face_count", "height", "width"])
    def _cover(clip, faces, covered, vertex_count, face_count, height, width, FACES: tl.constexpr):
        face = tl.program_id(0) * FACES + tl.arange(0, FACES)
        image = tl.program_id(1).to(tl.int64)
        mine = face < face_count
        vertices = clip + image * vertex_count * 4
        x0, y0, w0 = _corner(vertices, tl.load(faces + face * 3, mask=mine, other=0), mine)
        x1, y1, w1 = _corner(vertices, tl.load(faces + face * 3 + 1, mask=mine, other=0), mine)
        x2, y2, w2 = _corner(vertices, tl.load(faces + face * 3 + 2, mask=mine, other=0), mine)
        # skipped, where nvdiffrast would clip: a corner at or behind the camera
        sign = winding(x0, y0, w0, x1, y1, w1, x2, y2, w2) * (mine & (w0 > 0.0) & (w1 > 0.0) & (w2 > 0.0))
        # on the image plane; a skipped corner's w as 1, as the torch path (its box is empty either way)
        u0, v0 = tl.math.div_rn(x0, tl.where(w0 > 0.0, w0, 1.0)), tl.math.div_rn(y0, tl.where(w0 > 0.0, w0, 1.0))
        u1, v1 = tl.math.div_rn(x1, tl.where(w1 > 0.0, w1, 1.0)), tl.math.div_rn(y1, tl.where(w1 > 0.0, w1, 1.0))
        u2, v2 = tl.math.div_rn(x2, tl.where(w2 > 0.0, w2, 1.0)), tl.math.div_rn(y2, tl.where(w2 > 0.0, w2, 1.0))
        _, top, _, rows = box(u0, v0, u1, v1, u2, v2, sign, width, height)
        pixels = covered + image * height * width
        ones = tl.full([FACES], 1, tl.uint8)
        # the span of each row of the box, exactly as the torch path takes it (its columns may reach
        # past the box by a rounding): every lane to its own rows, the program to its longest box
        for r in range(tl.max(rows, axis=0)):
            row = top + r
            first, end = row_span(u0, v0, u1, v1, u2, v2, sign, pixel_centre(row.to(tl.float32), height), width)
            end = tl.where(r < rows, end, first)
            line = pixels + row * width
            for c in range(tl.max(end - first, axis=0)):
                tl.store(line + first + c, ones, mask=first + c < end)
