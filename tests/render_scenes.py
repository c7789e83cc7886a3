"""Synthetic scenes for the render, fit and preview tests (CPU and GPU): meshes and "photos" of them.

The chair is deliberately lopsided (one armrest, the back off-centre, the whole shifted off the
origin), so that no two directions give the same silhouette and a fitted camera is well defined.
A photo is rendered from a known orbit camera into a larger frame, unframed, then cut by the
pipeline's own ``crop_to_foreground``: what a generator hands the self-check.
"""

from __future__ import annotations

import numpy as np
import torch
import trimesh
from PIL import Image

from trellis_mv.preview.cameras import clip_space
from trellis_mv.pipeline.preprocess import crop_to_foreground
from trellis_mv.raster import coverage
from trellis_mv.preview.render import RenderMesh

# Cameras (azimuth, elevation, fov) of the recovery tests: all around, from below to well above.
KNOWN_CAMERAS = [(30.0, 20.0, 40.0), (200.0, -10.0, 30.0), (300.0, 45.0, 50.0), (120.0, 5.0, 25.0), (75.0, 60.0, 60.0)]


def _box(size: tuple[float, float, float], at: tuple[float, float, float]) -> trimesh.Trimesh:
    return trimesh.creation.box(size, transform=trimesh.transformations.translation_matrix(at))


def chair() -> trimesh.Trimesh:
    """A textured, lopsided chair of 84 faces (a checkerboard in planar UVs), inside the unit cube."""
    legs = [_box((0.06, 0.3, 0.06), (x, -0.19, z)) for x in (-0.22, 0.22) for z in (-0.17, 0.17)]
    parts = [_box((0.5, 0.08, 0.4), (0, 0, 0)), _box((0.5, 0.5, 0.06), (0, 0.29, -0.17)), *legs,
             _box((0.06, 0.15, 0.35), (0.22, 0.1, 0.0))]
    solid = trimesh.util.concatenate(parts)
    vertices = np.asarray(solid.vertices) + (0.05, -0.02, 0.03)
    uv = (vertices[:, :2] - vertices[:, :2].min(axis=0)) / np.ptp(vertices[:, :2], axis=0)
    return textured(vertices, np.asarray(solid.faces), uv, checkerboard())


def ellipsoid() -> trimesh.Trimesh:
    """A tall ellipsoid: the "different shape" a photo of which should fit the chair badly."""
    sphere = trimesh.creation.icosphere(subdivisions=2)
    return trimesh.Trimesh(np.asarray(sphere.vertices) * (0.25, 0.45, 0.25), sphere.faces, process=False)


def checkerboard(squares: int = 8, size: int = 128) -> Image.Image:
    """Red and yellow squares: a texture whose orientation shows in a render."""
    cells = np.indices((squares, squares)).sum(axis=0) % 2
    colours = np.where(np.kron(cells, np.ones((size // squares, size // squares)))[..., None] > 0, (200, 60, 40), (240, 220, 120))
    return Image.fromarray(colours.astype(np.uint8))


def textured(vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray, image: Image.Image) -> trimesh.Trimesh:
    """A trimesh with a PBR base-colour texture, as export writes them."""
    material = trimesh.visual.material.PBRMaterial(baseColorTexture=image, metallicFactor=0.0, roughnessFactor=0.8)
    return trimesh.Trimesh(vertices, faces, visual=trimesh.visual.TextureVisuals(uv=uv, material=material), process=False)


def photo(mesh: trimesh.Trimesh, camera: tuple[float, float, float], *, size: int = 512,
          device: str = "cpu", colour: tuple[int, int, int] = (200, 120, 60)) -> Image.Image:
    """``mesh`` seen from ``camera`` (azimuth, elevation, fov) in a ``size`` frame, then cropped as the pipeline crops."""
    render_mesh = RenderMesh.from_trimesh(mesh, device)
    azimuth, elevation, fov = (torch.tensor([value]) for value in camera)
    clip = clip_space(render_mesh.vertices, azimuth, elevation, fov, radius=render_mesh.radius)
    covered = coverage(clip, render_mesh.faces, (size, size))[0].flip(0).cpu().numpy()
    rgba = np.zeros((size, size, 4), dtype=np.uint8)
    rgba[covered] = (*colour, 255)
    return crop_to_foreground(Image.fromarray(rgba, "RGBA"), 0)


def grid_faces(cells: int) -> list[list[int]]:
    """Triangles of a grid of ``(cells + 1)²`` vertices (row after row), each quad cut along alternating
    diagonals: edges of every direction, each inner one shared by two triangles (the fill rule's cases)."""
    faces = []
    for j in range(cells):
        for i in range(cells):
            a, b = j * (cells + 1) + i, j * (cells + 1) + i + 1
            c, d = a + cells + 1, b + cells + 1
            faces += [[a, b, d], [a, d, c]] if (i + j) % 2 else [[a, b, c], [b, d, c]]
    return faces


def angle_error(found: float, true: float) -> float:
    """Absolute difference of two azimuths in degrees, across 0/360."""
    return abs((found - true + 180) % 360 - 180)
