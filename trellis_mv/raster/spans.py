"""The rasterizer's core, in torch: per triangle its corners and box, per pixel row its span.

``rasterize.cu`` (nvdiffrast) evaluates, at pixel centre f, the edge functions ``a_i = p_j × p_k``
with ``p = (x - fx·w, y - fy·w)``; the fx·fy terms cancel, so each ``a_i`` is affine in (fx, fy), and
so are ``Σ z_i a_i`` and ``Σ w_i a_i``, whose ratio is the depth z/w. Within one pixel row an edge
function changes sign once, where the edge crosses the row, so the three edges bound the row's
covered columns to one span. The fill rule: a centre on an edge belongs to the triangle on the edge's
left, or above a horizontal edge; the two triangles of a shared edge compute its crossing from the
same floats (``_edges_on_row``), so they split the row there, with neither gap nor double count.

Every path of the package (camera views, UV atlas, counts; and, step for step, the CUDA kernels of
``uv_kernel`` and ``coverage_kernel``, through ``triton_spans``) goes through :func:`triangles` and
:func:`spans`. Work is chunked by the memory the device has free (:func:`scratch_bytes`), with a few
host synchronisations per call, not one per chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

__all__ = [
    "BYTES_PER_PIXEL",
    "INDEX_BITS",
    "Triangles",
    "counts",
    "depth_at",
    "expand",
    "image_groups",
    "scratch_bytes",
    "spans",
    "triangles",
    "winners",
]

# Scratch memory a step may use at once: an eighth of what the device has free, within these bounds;
# the cap keeps the bake's peak about where nvdiffrast's was (issue 20: within +1 GiB).
_MIN_SCRATCH, _MAX_SCRATCH, _CPU_SCRATCH = 32 * 2**20, 512 * 2**20, 64 * 2**20
# Bytes held per unit of work at the peak of each step, torch's temporaries included (estimated).
_BYTES_PER_TRIANGLE, _BYTES_PER_ROW, BYTES_PER_PIXEL = 400, 200, 160
INDEX_BITS = 31  # the triangle index in a key's low bits (rasterize.py puts depth above them)


@dataclass(frozen=True)
class Triangles:
    """Instance t is triangle t % F seen in image t // F. ``depth`` ``[T, 2, 3]``: rows Σ z·a, Σ w·a,
    columns c, a, b of ``c + a·fx + b·fy``, whose ratio is the depth test's z/w (``depth_at``). ``x``,
    ``y`` ``[T, 3]``: the corners in clip space divided by w, and ``winding`` ``[T]`` the sign of the
    triangle's area: the spans come from these. ``y0``: first pixel row of the bounding box; ``rows``,
    ``columns``: its size (rows 0: the triangle covers no pixel centre, or is skipped)."""

    depth: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    winding: torch.Tensor
    y0: torch.Tensor
    rows: torch.Tensor
    columns: torch.Tensor
    face_count: int


def scratch_bytes(device: torch.device) -> int:
    """Memory one step may take: an eighth of what is free (the driver's free memory and torch's cache)."""
    if device.type != "cuda":
        return _CPU_SCRATCH
    free, _ = torch.cuda.mem_get_info(device)
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return min(_MAX_SCRATCH, max(_MIN_SCRATCH, free // 8))


def image_groups(batch: int, face_count: int, scratch: int) -> list[slice]:
    """Consecutive images whose triangles' setup fits ``scratch`` together (at least one image each)."""
    step = max(1, scratch // (_BYTES_PER_TRIANGLE * max(1, face_count)))
    return [slice(start, min(batch, start + step)) for start in range(0, batch, step)]


def triangles(clip: torch.Tensor, faces: torch.Tensor, resolution: tuple[int, int]) -> Triangles:
    """Corners, depth coefficients and bounding boxes of every triangle in every image of ``clip`` ``[B, V, 4]``.

    ``Σ w_i·a_i = det[x; y; w]`` is the same at every pixel (its fx, fy terms cancel): its sign is the
    winding, which the depth coefficients are multiplied by (their ratio does not change). The sum of the
    ``a_i`` alone is not: with unequal w it can change sign across the image, and a triangle so judged
    from the centre got no pixels (1 pixel of 144k on a preview; 86 of 222 for random w).
    Triangles with a corner at or behind the camera (w <= 0) are skipped, where nvdiffrast would clip
    them: the previews' cameras keep the whole object in front of them.
    """
    height, width = resolution
    batch, vertex_count, face_count = clip.shape[0], clip.shape[1], faces.shape[0]
    index = torch.arange(batch, device=clip.device)[:, None, None] * vertex_count + faces.to(clip.device).long()
    # component, corner, instance: instances last keeps each quantity one contiguous row
    x, y, z, w = clip.float().reshape(-1, 4)[index.reshape(-1, 3)].permute(2, 1, 0)
    (xj, yj, wj), (xk, yk, wk) = [[value.roll(-shift, dims=0) for value in (x, y, w)] for shift in (1, 2)]
    edges = torch.stack([xj * yk - yj * xk, yj * wk - wj * yk, wj * xk - xj * wk])  # [3 terms, 3 edges, T]
    depth = torch.stack([(z * edges).sum(dim=1), (w * edges).sum(dim=1)], dim=1)  # [3 terms, 2, T]
    winding = torch.sign(w[0] * edges[0, 0] + w[1] * edges[0, 1] + w[2] * edges[0, 2])  # in triton_spans' order too
    depth = (depth * winding).permute(2, 1, 0).contiguous()
    # pixel centre (i, j) sits at x = (2i + 1) / W - 1, y = (2j + 1) / H - 1
    in_front = (w > 0).all(dim=0) & (winding != 0)
    w = torch.where(w > 0, w, torch.ones_like(w))
    px, py = (x / w + 1) * width / 2 - 0.5, (y / w + 1) * height / 2 - 0.5
    x0, y0 = px.amin(dim=0).ceil().clamp(0, width).long(), py.amin(dim=0).ceil().clamp(0, height).long()
    columns = (px.amax(dim=0).floor().clamp(-1, width - 1).long() - x0 + 1).clamp(min=0) * in_front
    rows = (py.amax(dim=0).floor().clamp(-1, height - 1).long() - y0 + 1).clamp(min=0) * in_front * (columns > 0)
    return Triangles(depth, (x / w).t().contiguous(), (y / w).t().contiguous(), winding, y0, rows, columns, face_count)


def spans(
    triangles: Triangles, resolution: tuple[int, int], weights: torch.Tensor, budget: int
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Per chunk of instances (``weights`` adding up to about ``budget``): every (instance, row) of their
    boxes with the columns ``first <= column < end`` whose centres are inside (the fill rule above)."""
    height, width = resolution
    rows = triangles.rows
    row_starts = torch.cumsum(torch.cat([rows.new_zeros(1), rows]), 0)
    for start, stop, row_count in _chunks(weights, row_starts, budget):
        which, offset = expand(rows[start:stop], row_count)
        instance = which + start
        row = triangles.y0[instance] + offset
        fy = _centres(row, height)
        x, y, winding = triangles.x[instance], triangles.y[instance], triangles.winding[instance, None]
        crossing, slope, flat_level, flat_b = _edges_on_row(x.roll(-1, 1), y.roll(-1, 1), x.roll(-2, 1), y.roll(-2, 1),
                                                           winding, fy[:, None])
        low = torch.where(slope > 0, crossing, torch.full_like(crossing, -torch.inf)).amax(dim=1)  # fx >= low
        high = torch.where(slope < 0, crossing, torch.full_like(crossing, torch.inf)).amin(dim=1)  # fx < high
        # an edge along the row takes all of it or none; on it, the triangle above it takes it
        open_row = ((slope != 0) | (flat_level > 0) | ((flat_level == 0) & (flat_b > 0))).all(dim=1)
        first = _column_at(low, width)
        end = torch.where(open_row, torch.maximum(_column_at(high, width), first), first)
        yield instance, row, first, end


def counts(clip: torch.Tensor, faces: torch.Tensor, resolution: tuple[int, int]) -> torch.Tensor:
    """How many triangles cover each pixel centre ``[B, H, W]`` (int32), from clip-space vertices ``[B, V, 4]``:
    each span adds +1 at its first column and -1 past its last into a difference buffer, whose running
    sum along the row is the count. ``rasterize.coverage``'s torch path (``> 0``) and ``texel_counts``'."""
    batch, height, width = clip.shape[0], *resolution
    scratch = scratch_bytes(clip.device)
    total = torch.zeros(batch, height, width, dtype=torch.int32, device=clip.device)
    for images in image_groups(batch, faces.shape[0], scratch):
        setup = triangles(clip[images], faces, resolution)
        difference = torch.zeros((images.stop - images.start) * height * (width + 1), dtype=torch.int32, device=clip.device)
        for instance, row, first, end in spans(setup, resolution, setup.rows, scratch // _BYTES_PER_ROW):
            start = (torch.div(instance, setup.face_count, rounding_mode="floor") * height + row) * (width + 1)
            ones = (end > first).int()
            difference.index_add_(0, start + first, ones)
            difference.index_add_(0, start + end, -ones)
        running = torch.cumsum(difference.reshape(-1, width + 1)[:, :width], dim=1, dtype=torch.int32)
        total[images] = running.reshape(-1, height, width)
    return total


def _edges_on_row(xj: torch.Tensor, yj: torch.Tensor, xk: torch.Tensor, yk: torch.Tensor, winding: torch.Tensor,
                  fy: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Edge j→k (of a triangle of that ``winding``) on the row at ``fy``: where it crosses the row, the
    sign of its edge function's slope along the row (inside lies at fx >= crossing where positive),
    and, for an edge along the row, the signs of its edge function on the row and across it.

    The crossing is taken from the edge's lower end (then its left one) whatever the triangle's
    order, so two triangles sharing an edge compute it from the same floats to the same bound, and
    in relative terms: accurate to the corners' own rounding, where an affine ``c + a·fx + b·fy``
    of whole clip coordinates loses float32 precision against small triangles.
    """
    swap = (yj > yk) | ((yj == yk) & (xj > xk))
    xp, yp = torch.where(swap, xk, xj), torch.where(swap, yk, yj)
    xq, yq = torch.where(swap, xj, xk), torch.where(swap, yj, yk)
    flat = yp == yq
    t = (fy - yp) / torch.where(flat, torch.ones_like(yq), yq - yp)
    crossing = xp + t * (xq - xp)
    slope = torch.sign(yj - yk) * winding
    return crossing, slope, torch.sign(yp - fy) * torch.sign(xj - xk) * winding, torch.sign(xk - xj) * winding


def expand(sizes: torch.Tensor, total: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each index repeated ``sizes[i]`` times, with its running offset 0..size-1 (``total``: their sum, if known)."""
    total = int(sizes.sum()) if total is None else total
    which = torch.repeat_interleave(torch.arange(sizes.shape[0], device=sizes.device), sizes, output_size=total)
    offset = torch.arange(total, device=sizes.device) - (torch.cumsum(sizes, 0) - sizes)[which]
    return which, offset


def depth_at(depth: torch.Tensor, column: torch.Tensor, row: torch.Tensor, resolution: tuple[int, int]) -> torch.Tensor:
    """z/w of N triangles (their ``Triangles.depth`` rows ``[N, 2, 3]``) at N pixel centres."""
    height, width = resolution
    fx, fy = _centres(column, width), _centres(row, height)
    values = depth[..., 0] + depth[..., 1] * fx[:, None] + depth[..., 2] * fy[:, None]
    return values[:, 0] / values[:, 1]


def winners(nearest: torch.Tensor, empty: int, clip: torch.Tensor, faces: torch.Tensor, resolution: tuple[int, int],
            scratch: int) -> torch.Tensor:
    """Per pixel ``[P, 4]``: the winning key's barycentrics, depth and index + 1, as nvdiffrast lays
    them out (clamped the same way); zeros where ``nearest`` is ``empty``.

    The edge functions are evaluated as ``rasterize.cu`` does, on the corners taken relative to the
    pixel centre (``p - f·w``), not as affine functions of the pixel centre: their coefficients hold
    products of whole clip coordinates, whose float32 rounding is large against a triangle of a few
    pixels (measured on random 2048² atlases: barycentric errors of 0.03 at the 99.9th percentile,
    against 1e-5 this way).
    """
    height, width = resolution
    pixels = height * width
    rast = torch.zeros(nearest.shape[0], 4, dtype=torch.float32, device=nearest.device)
    vertex_count = clip.shape[1]
    flat = clip.float().reshape(-1, 4)
    for pixel in torch.nonzero(nearest != empty).flatten().split(scratch // BYTES_PER_PIXEL):
        face = nearest[pixel].long() & ((1 << INDEX_BITS) - 1)
        image, within = torch.div(pixel, pixels, rounding_mode="floor"), pixel % pixels
        x, y, z, w = flat[image[:, None] * vertex_count + faces[face].long()].unbind(-1)  # [N, 3] each
        fx, fy = _centres(within % width, width), _centres(torch.div(within, width, rounding_mode="floor"), height)
        px, py = x - fx[:, None] * w, y - fy[:, None] * w
        a0 = px[:, 1] * py[:, 2] - py[:, 1] * px[:, 2]
        a1 = px[:, 2] * py[:, 0] - py[:, 2] * px[:, 0]
        a2 = px[:, 0] * py[:, 1] - py[:, 0] * px[:, 1]
        total = a0 + a1 + a2
        inverse = 1.0 / torch.where(total == 0, torch.ones_like(total), total)
        b0 = torch.where(total == 0, 0.0, a0 * inverse).clamp(0, 1)
        b1 = torch.where(total == 0, 0.0, a1 * inverse).clamp(0, 1)
        scale = torch.clamp(b0 + b1, min=1)
        depth = z[:, 0] * a0 + z[:, 1] * a1 + z[:, 2] * a2
        weight = w[:, 0] * a0 + w[:, 1] * a1 + w[:, 2] * a2
        zw = torch.where(weight == 0, 0.0, depth / torch.where(weight == 0, torch.ones_like(weight), weight))
        rast[pixel] = torch.stack([b0 / scale, b1 / scale, zw.clamp(-1, 1), (face + 1).float()], dim=1)
    return rast


def _centres(index: torch.Tensor, size: int) -> torch.Tensor:
    """Clip x (or y) of pixel centres ``index`` across ``size`` pixels: ``(2i + 1) / size - 1``.

    The same bits on every device, as the kernels' ``pixel_centre``: the size is divided by as a tensor,
    because CUDA divides by a Python number as a multiplication by its float reciprocal, which
    rounds differently (for a third of the rows at 96, none at powers of two).
    """
    odd = 2 * index.float() + 1
    return odd / odd.new_full((), size) - 1


def _column_at(fx: torch.Tensor, width: int) -> torch.Tensor:
    """The first column whose centre lies at or right of ``fx`` (clip x), clamped to 0..width."""
    return torch.ceil(((fx + 1) * width - 1) / 2).clamp(0, width).long()


def _chunks(weights: torch.Tensor, row_starts: torch.Tensor, budget: int) -> list[tuple[int, int, int]]:
    """(first instance, end instance, rows in between) of consecutive instances whose ``weights`` add up
    to about ``budget`` (or one instance alone), from two host synchronisations for the whole call."""
    running = torch.cumsum(weights, 0)
    total = int(running[-1]) if running.numel() else 0
    cuts = torch.arange(1, max(1, -(-total // budget)), device=weights.device) * budget
    marks = torch.searchsorted(running, cuts, right=True)
    bounds = torch.cat([marks.new_zeros(1), marks, marks.new_full((1,), weights.shape[0])])
    starts, row_starts = bounds.tolist(), row_starts[bounds].tolist()
    return [(a, b, rows_b - rows_a) for a, b, rows_a, rows_b in zip(starts, starts[1:], row_starts, row_starts[1:]) if rows_b > rows_a]
