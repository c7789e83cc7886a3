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
(a check waits for the GPU). On CUDA those iterations are captured once as a CUDA graph and
replayed: an iteration is about thirty small kernels, whose launches from Python would otherwise
cost more than the work (torch.cuda.graphs, "CUDA Graphs" in PyTorch's notes on CUDA semantics).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch

from ..gpu_random import RANDOM_OR_CAPTURE
from .segments import segment_sum

log = logging.getLogger(__name__)

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
    system = _System(coefficients, faces, free, inverse, chart, count)
    x = torch.view_as_complex(start.float().contiguous()).clone()
    r = -system.normal_matrix(x)
    z = inverse * r
    state = _State(x=x, r=r, p=z.clone(), rz=system.per_chart(r, z))
    goal = state.rz * TOLERANCE**2
    iterations, step = 0, partial(_iterate, system, state, CHECK_EVERY)
    if x.is_cuda:
        try:
            step = _replayable(step)
        except RuntimeError as error:  # a capture refused by this torch or driver costs speed, not the job
            log.warning("lscm: CUDA graph capture failed, iterating from Python: %s", error)
        iterations = CHECK_EVERY  # the capture's warm-up ran one round of iterations
    while iterations < MAX_ITERATIONS and not bool((state.rz <= goal).all()):
        step()
        iterations += CHECK_EVERY
    return torch.view_as_real(state.x).clone(), iterations


@dataclass(frozen=True)
class _System:
    """``AᴴA`` restricted to the free vertices, the Jacobi preconditioner, and per-chart inner products."""

    coefficients: torch.Tensor  # (F, 3) complex: D per face and corner
    faces: torch.Tensor
    free: torch.Tensor  # (N,) bool: neither pinned nor without a face that counts
    inverse: torch.Tensor  # (N,) 1 / diagonal of AᴴA on free vertices, else 0
    chart: torch.Tensor
    count: int

    def normal_matrix(self, x: torch.Tensor) -> torch.Tensor:
        """``AᴴA x`` on the free vertices: A is a gather, Aᴴ a scatter-add."""
        residual = (self.coefficients * x[self.faces]).sum(1)
        corners = torch.view_as_real(self.coefficients.conj() * residual[:, None]).reshape(-1, 2)
        return torch.view_as_complex(segment_sum(corners, self.faces.reshape(-1), x.shape[0])) * self.free

    def per_chart(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The real inner product of two complex vectors, chart by chart."""
        return segment_sum((a.conj() * b).real, self.chart, self.count)


@dataclass(frozen=True)
class _State:
    """Conjugate gradients' vectors, updated in place (a CUDA graph replays on fixed memory)."""

    x: torch.Tensor
    r: torch.Tensor
    p: torch.Tensor
    rz: torch.Tensor  # (C,) preconditioned residual, per chart


def _iterate(system: _System, state: _State, count: int) -> None:
    """``count`` iterations of preconditioned conjugate gradients, one step length per chart."""
    for _ in range(count):
        q = system.normal_matrix(state.p)
        alpha = _ratio(state.rz, system.per_chart(state.p, q))[system.chart]
        state.x.add_(alpha * state.p)
        state.r.sub_(alpha * q)
        z = system.inverse * state.r
        rz = system.per_chart(state.r, z)
        state.p.mul_(_ratio(rz, state.rz)[system.chart]).add_(z)
        state.rz.copy_(rz)


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """``numerator / denominator``, 0 where the denominator is not positive (a chart already solved)."""
    return torch.where(denominator > 0, numerator / denominator.clamp_min(torch.finfo(denominator.dtype).tiny), 0.0)


def _replayable(run: Callable[[], None]) -> Callable[[], None]:
    """``run`` (in-place work on fixed tensors) captured as a CUDA graph; returns its replay.

    As torch.cuda.graphs asks, ``run`` first runs once on a side stream (its work is real and kept),
    then is captured; capturing executes nothing. The capture is thread-local: the worker's warm-up
    exports while another thread loads models onto the same GPU, and CUDA's default (global) capture
    mode would fail that thread's allocations for as long as the capture lasts; its random numbers
    would fail in any mode (``trellis_mv.gpu_random``).
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        run()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with RANDOM_OR_CAPTURE, torch.cuda.graph(graph, capture_error_mode="thread_local"):
        run()
    return graph.replay


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
