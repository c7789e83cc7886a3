"""Synthetic meshes with known charts for the unwrap tests (CPU): what CuMesh's GPU clustering would hand over.

Each function returns float32 vertices (V, 3), int64 faces (F, 3) and a chart id per face.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import trimesh

Mesh = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _mesh(vertices, faces, chart) -> Mesh:
    return (torch.as_tensor(np.asarray(vertices), dtype=torch.float32), torch.as_tensor(np.asarray(faces), dtype=torch.long),
            torch.as_tensor(np.asarray(chart), dtype=torch.long))


def grid(n: int, bend: float = 0.0, width: float = 1.0) -> Mesh:
    """An n×n grid of squares (two triangles each), ``width`` on a side, rolled onto a cylinder over ``bend`` radians; one chart."""
    i, j = torch.meshgrid(torch.arange(n + 1), torch.arange(n + 1), indexing="ij")
    x, y = i.double() / n * width, j.double() / n * width
    if bend:
        radius = width / bend
        angle = x / radius - bend / 2
        points = torch.stack([radius * torch.sin(angle), y, radius * torch.cos(angle)], dim=-1)
    else:
        points = torch.stack([x, y, torch.zeros_like(x)], dim=-1)
    k = (i * (n + 1) + j)[:-1, :-1].reshape(-1)
    faces = torch.cat([torch.stack([k, k + n + 1, k + 1], 1), torch.stack([k + 1, k + n + 1, k + n + 2], 1)])
    return _mesh(points.reshape(-1, 3), faces, torch.zeros(len(faces), dtype=torch.long))


def by_normal(mesh: trimesh.Trimesh) -> Mesh:
    """``mesh`` with one chart per axis direction (±x, ±y, ±z) its faces' normals point most along."""
    normals = np.asarray(mesh.face_normals)
    axis = np.abs(normals).argmax(axis=1)
    return _mesh(mesh.vertices, mesh.faces, axis * 2 + (normals[np.arange(len(axis)), axis] > 0))


def cube(subdivisions: int = 2) -> Mesh:
    """A unit cube, each side split ``subdivisions`` times, one chart per side."""
    mesh = trimesh.creation.box()
    for _ in range(subdivisions):
        mesh = mesh.subdivide()
    return by_normal(mesh)


def cylinder(sections: int = 48) -> Mesh:
    """Radius 1, height 1: the side as ONE chart (a closed tube) and each cap a chart of its own."""
    mesh = trimesh.creation.cylinder(radius=1.0, height=1.0, sections=sections)
    z = np.asarray(mesh.face_normals)[:, 2]
    return _mesh(mesh.vertices, mesh.faces, np.where(z > 0.5, 1, np.where(z < -0.5, 2, 0)))


def sphere(subdivisions: int = 3, above: float | None = None) -> Mesh:
    """A unit icosphere as one chart, or only its faces whose centre lies above ``z = above`` (a cap)."""
    mesh = trimesh.creation.icosphere(subdivisions=subdivisions)
    faces = np.asarray(mesh.faces)
    if above is not None:
        faces = faces[np.asarray(mesh.triangles_center)[:, 2] > above]
    return _mesh(mesh.vertices, faces, np.zeros(len(faces), dtype=np.int64))


def bumpy_sphere(subdivisions: int = 6, cells: int = 2) -> Mesh:
    """A displaced icosphere (81,920 faces at 6), charts by normal axis and a ``cells``³ grid of space, as clusters come."""
    mesh = trimesh.creation.icosphere(subdivisions=subdivisions)
    unit = torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float64)
    x, y, z = unit.unbind(1)
    radius = 1 + 0.08 * torch.sin(7 * x) * torch.sin(6 * y + 1) * torch.sin(5 * z + 2) + 0.03 * torch.sin(23 * x + 17 * z)
    vertices = (unit * radius[:, None]).float()
    faces = torch.as_tensor(np.asarray(mesh.faces), dtype=torch.long)
    corners = vertices[faces]
    normals = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    axis = normals.abs().argmax(dim=1)
    side = (normals.gather(1, axis[:, None])[:, 0] > 0).long()
    cell = ((corners.mean(1) + 1.2) / 2.4 * cells).long().clamp(0, cells - 1)
    chart = ((axis * 2 + side) * cells + cell[:, 0]) * cells**2 + cell[:, 1] * cells + cell[:, 2]
    return vertices, faces, chart


def annulus(n: int = 32) -> Mesh:
    """A flat ring (inner radius 0.5, outer 1) as one chart: a chart with a hole."""
    angle = torch.arange(n, dtype=torch.float64) * 2 * math.pi / n
    ring = torch.stack([torch.cos(angle), torch.sin(angle), torch.zeros_like(angle)], dim=1)
    vertices = torch.cat([ring * 0.5, ring])
    k, nxt = torch.arange(n), (torch.arange(n) + 1) % n
    faces = torch.cat([torch.stack([k, n + k, n + nxt], 1), torch.stack([k, n + nxt, nxt], 1)])
    return _mesh(vertices, faces, torch.zeros(len(faces), dtype=torch.long))


def helicoid(turns: float = 1.5, steps: int = 144, pitch: float = 0.1) -> Mesh:
    """A spiral ramp (radii 1 to 1.5, rising ``pitch`` per turn) as one chart: every face faces up, yet
    seen from above it covers itself after one turn, so its planar projection overlaps without a flip."""
    angle = torch.linspace(0, 2 * math.pi * turns, steps + 1, dtype=torch.float64)
    rings = [torch.stack([r * torch.cos(angle), r * torch.sin(angle), pitch * angle / (2 * math.pi)], dim=1) for r in (1.0, 1.5)]
    k = torch.arange(steps)
    outer = k + steps + 1
    faces = torch.cat([torch.stack([k, outer, outer + 1], 1), torch.stack([k, outer + 1, k + 1], 1)])
    return _mesh(torch.cat(rings), faces, torch.zeros(len(faces), dtype=torch.long))
