"""Least squares conformal maps for many charts at once, solved on the charts' device in float32.

Lévy, Petitjean, Ray and Maillot, "Least squares conformal maps for automatic texture atlas
generation" (SIGGRAPH 2002): per triangle, the map's gradients should obey Cauchy-Riemann,
``∇v = R90 ∇u``; the squared residual times the triangle's area, summed, is a quadratic in the UVs
whose minimum with two vertices pinned per chart is the conformal map closest to the surface.
Written per triangle in its own 2D frame with the edge opposite corner j as the complex number
``d_j``, the residual is ``Σ_j D_j·U_j`` with ``D_j = d_j / (2·sqrt(area))`` and ``U_j = u_j + i·v_j``.

The system is never assembled. ``A`` and ``Aᴴ`` are a gather and a scatter-add over the faces, and
conjugate gradients on the normal equations ``AᴴA x = 0`` (pins fixed, Jacobi preconditioner) run
with one step length per chart: every chart is its own independent solve inside one batch, so a
large chart does not slow the convergence of a small one. The start is the caller's guess (the
planar projection), which holds the pins; convergence is checked every ``CHECK_EVERY`` iterations
(a check waits for the GPU).
"""

from __future__ import annotations

import torch

from .segments import segment_sum

__all__ = ["CHECK_EVERY", "MAX_ITERATIONS", "TOLERANCE", "lscm"]

TOLERANCE = 1e-4  # preconditioned residual relative to the start's, per chart
MAX_ITERATIONS = 1000  # a chart still short of it is checked as it is, and split if it fails
CHECK_EVERY = 25


def lscm(positions: torch.Tensor, faces: torch.Tensor, chart: torch.Tensor, count: int, start: torch.Tensor,
         solved: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Conformal UVs ``(N, 2)`` for the vertices of ``count`` charts, and the iterations it took.

    ``positions`` (N, 3) and ``start`` (N, 2) are per vertex, ``chart`` (N,) the vertex's chart; no
    vertex is shared by two charts. Faces marked false in ``solved`` (degenerate ones) do not
    constrain the map. Each chart's two pins are its vertices of least and greatest ``u`` in ``start``
    and keep their place, so the result has the start's position, rotation and rough scale.
    """
    coefficients = _coefficients(positions, faces, solved)
    diagonal = segment_sum(coefficients.abs().square().reshape(-1), faces.reshape(-1), positions.shape[0])
    free = (diagonal > 0) & ~_pins(start[:, 0], chart, count)
    inverse = torch.where(free, 1 / diagonal.clamp_min(torch.finfo(diagonal.dtype).tiny), 0.0)

    def normal_matrix(x: torch.Tensor) -> torch.Tensor:
        residual = (coefficients * x[faces]).sum(1)
        corners = torch.view_as_real(coefficients.conj() * residual[:, None]).reshape(-1, 2)
        return torch.view_as_complex(segment_sum(corners, faces.reshape(-1), x.shape[0])) * free

    def per_chart(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return segment_sum((a.conj() * b).real, chart, count)

    x = torch.view_as_complex(start.float().contiguous())
    r = -normal_matrix(x)
    z = inverse * r
    p = z
    rz = per_chart(r, z)
    goal = rz * TOLERANCE**2
    for iteration in range(1, MAX_ITERATIONS + 1):
        q = normal_matrix(p)
        pq = per_chart(p, q)
        alpha = torch.where(pq > 0, rz / pq.clamp_min(torch.finfo(pq.dtype).tiny), 0.0)[chart]
        x = x + alpha * p
        r = r - alpha * q
        z = inverse * r
        rz_next = per_chart(r, z)
        beta = torch.where(rz > 0, rz_next / rz.clamp_min(torch.finfo(rz.dtype).tiny), 0.0)[chart]
        p = z + beta * p
        rz = rz_next
        if iteration % CHECK_EVERY == 0 and bool((rz <= goal).all()):
            break
    return torch.view_as_real(x).clone(), iteration


def _coefficients(positions: torch.Tensor, faces: torch.Tensor, solved: torch.Tensor) -> torch.Tensor:
    """``D`` per face and corner ``(F, 3)``, complex64, from float64 geometry."""
    corners = positions.double()[faces]
    first = corners[:, 1] - corners[:, 0]
    normal = torch.linalg.cross(first, corners[:, 2] - corners[:, 0])
    twice_area = normal.norm(dim=1)
    keep = solved & (twice_area > 0)
    safe = torch.where(keep, twice_area, 1.0)
    e1 = first / first.norm(dim=1, keepdim=True).clamp_min(torch.finfo(first.dtype).tiny)
    e2 = torch.linalg.cross(normal / safe[:, None], e1)
    opposite = corners.roll(-2, dims=1) - corners.roll(-1, dims=1)  # corner j: P[j+2] - P[j+1]
    weight = torch.where(keep, 1 / (2 * (safe / 2).sqrt()), 0.0)[:, None]
    return torch.complex((opposite * e1[:, None]).sum(-1) * weight, (opposite * e2[:, None]).sum(-1) * weight).to(torch.complex64)


def _pins(u: torch.Tensor, chart: torch.Tensor, count: int) -> torch.Tensor:
    """Each chart's vertices of least and greatest ``u`` (the first in index order where tied)."""
    pinned = torch.zeros_like(chart, dtype=torch.bool)
    index = torch.arange(chart.shape[0], device=chart.device)
    for reduce in ("amin", "amax"):
        extreme = torch.full((count,), torch.inf if reduce == "amin" else -torch.inf, dtype=u.dtype, device=u.device)
        extreme = extreme.scatter_reduce(0, chart, u, reduce=reduce)
        hit = u == extreme[chart]
        first = torch.full((count,), chart.shape[0], device=chart.device).scatter_reduce(0, chart[hit], index[hit], "amin")
        pinned[first[first < chart.shape[0]]] = True
    return pinned
