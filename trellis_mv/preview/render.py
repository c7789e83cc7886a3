"""Pictures of a finished mesh: silhouettes for the per-view fit, shaded colour for the turntable.

Works from what export writes into the GLB (:class:`~trellis_mv.export.glb.TexturedMesh`: vertices,
faces, normals, UVs, the encoded base-colour image), so it shows what the user gets, from any
generator; any textured ``trimesh.Trimesh`` works too. Rasterization and interpolation come from
:mod:`trellis_mv.raster`; texturing and lighting are torch here, the same code on every device.
Images come back top row first, as PIL and PNG expect.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import trimesh
from PIL import Image

from ..export.clean import vertex_normals
from ..export.glb import TexturedMesh
from ..raster import coverage, interpolate, rasterize
from .cameras import clip_space, distance_for_fov, frame_to_square, orbit_eyes

__all__ = ["RenderMesh", "shaded", "silhouettes"]

_MAX_TEXTURE = 1024  # a preview tile shows a few hundred texels across: a smaller copy avoids aliasing
_VERTEX_BUDGET = 16_000_000  # (camera, vertex) pairs projected, and rasterized, at once
_GREY = (0.72, 0.72, 0.72)


@dataclass(frozen=True)
class RenderMesh:
    """A mesh as tensors on one device. ``uv`` rows are image rows (v = 0 at the texture's top)."""

    vertices: torch.Tensor  # [V, 3] float32
    faces: torch.Tensor  # [F, 3] int32
    normals: torch.Tensor  # [V, 3]
    uv: torch.Tensor | None  # [V, 2]
    texture: torch.Tensor | None  # [1, 3, H, W], 0..1
    colour: torch.Tensor  # [3], the base-colour factor (or grey)
    radius: float  # farthest vertex from the origin

    @classmethod
    def of(cls, mesh: TexturedMesh | trimesh.Trimesh, device: torch.device | str) -> RenderMesh:
        """From export's :class:`TexturedMesh` (what the GLB holds) or any trimesh."""
        return cls.from_textured(mesh, device) if isinstance(mesh, TexturedMesh) else cls.from_trimesh(mesh, device)

    @classmethod
    def from_textured(cls, mesh: TexturedMesh, device: torch.device | str) -> RenderMesh:
        """Geometry, normals, UVs (already image rows: glTF's v = 0 is the top) and the decoded base colour."""
        vertices = torch.tensor(mesh.vertices, dtype=torch.float32, device=device)
        return cls(
            vertices=vertices,
            faces=torch.tensor(np.asarray(mesh.faces), dtype=torch.int32, device=device),
            normals=torch.tensor(mesh.normals, dtype=torch.float32, device=device),
            uv=torch.tensor(mesh.uvs, dtype=torch.float32, device=device),
            texture=_texture(Image.open(io.BytesIO(mesh.base_color)), device),
            colour=torch.tensor((1.0, 1.0, 1.0), device=device),
            radius=float(vertices.norm(dim=1).max()) if len(vertices) else 1.0,
        )

    @classmethod
    def from_trimesh(cls, mesh: trimesh.Trimesh, device: torch.device | str) -> RenderMesh:
        """Take geometry, UVs and the base-colour texture (PBR or simple material) from ``mesh``."""
        vertices = torch.tensor(np.asarray(mesh.vertices), dtype=torch.float32, device=device)
        faces = torch.tensor(np.asarray(mesh.faces), dtype=torch.int32, device=device)
        material = getattr(mesh.visual, "material", None)
        image = getattr(material, "baseColorTexture", None)
        image = getattr(material, "image", None) if image is None else image
        uv = getattr(mesh.visual, "uv", None)
        textured = image is not None and uv is not None and len(uv) == len(vertices)
        factor = getattr(material, "baseColorFactor", None)
        colour = np.asarray(factor[:3], dtype=np.float32) / 255 if factor is not None else np.asarray(_GREY, np.float32)
        return cls(
            vertices=vertices,
            faces=faces,
            normals=vertex_normals(vertices, faces),
            # trimesh keeps OpenGL's v (0 at the image's bottom row)
            uv=torch.tensor(np.asarray(uv) * (1, -1) + (0, 1), dtype=torch.float32, device=device) if textured else None,
            texture=_texture(image, device) if textured else None,
            colour=torch.tensor(colour, device=device),
            radius=float(vertices.norm(dim=1).max()) if len(vertices) else 1.0,
        )


def silhouettes(
    mesh: RenderMesh, azimuth: torch.Tensor, elevation: torch.Tensor, fov: torch.Tensor,
    resolution: int, *, margin: float = 0.0,
) -> torch.Tensor:
    """Coverage ``[B, S, S]`` (bool) from B orbit cameras, each framed to the object's bounding square."""
    masks = []
    for start in range(0, azimuth.shape[0], _chunk(mesh)):
        part = slice(start, start + _chunk(mesh))
        clip = frame_to_square(clip_space(mesh.vertices, azimuth[part], elevation[part], fov[part], radius=mesh.radius), margin=margin)
        masks.append(coverage(clip, mesh.faces, (resolution, resolution)))
    return torch.cat(masks).flip(1)


def shaded(
    mesh: RenderMesh, azimuth: torch.Tensor, elevation: torch.Tensor, fov: torch.Tensor,
    resolution: int, *, margin: float = 0.1, supersample: int = 1,
) -> torch.Tensor:
    """RGBA images ``[B, S, S, 4]`` (0..1) of the base colour under a key light, all views framed alike.

    The key light comes from above the camera and a little to its right; back faces are lit as front
    faces (o_voxel's meshes are not always closed). ``supersample`` renders larger and averages;
    the colours are straight (not premultiplied by alpha) either way.
    """
    size = resolution * supersample
    clip = frame_to_square(clip_space(mesh.vertices, azimuth, elevation, fov, radius=mesh.radius), margin=margin, shared=True)
    rast = rasterize(clip, mesh.faces, (size, size))
    covered = (rast[..., 3] > 0)[..., None]
    eyes = orbit_eyes(azimuth, elevation, distance_for_fov(fov)).to(mesh.vertices.device)
    to_eye = F.normalize(eyes[:, None, None, :] - interpolate(mesh.vertices, rast, mesh.faces), dim=-1)
    normal = F.normalize(interpolate(mesh.normals, rast, mesh.faces), dim=-1)
    normal = torch.where((normal * to_eye).sum(-1, keepdim=True) < 0, -normal, normal)
    up = torch.tensor((0.0, 1.0, 0.0), device=eyes.device).expand_as(eyes)
    light = F.normalize(F.normalize(eyes, dim=-1) + 0.7 * up + 0.4 * torch.linalg.cross(up, F.normalize(eyes, dim=-1)), dim=-1)
    lambert = (normal * light[:, None, None, :]).sum(-1, keepdim=True).clamp(min=0)
    colour = _albedo(mesh, rast) * (0.35 + 0.7 * lambert)
    rgba = torch.cat([colour.clamp(0, 1) * covered, covered.float()], dim=-1)
    if supersample > 1:
        rgba = F.avg_pool2d(rgba.permute(0, 3, 1, 2), supersample).permute(0, 2, 3, 1)
        # the average of premultiplied colours: back to straight alpha, as the sheet composites it
        alpha = rgba[..., 3:]
        rgba = torch.cat([torch.where(alpha > 0, rgba[..., :3] / alpha.clamp(min=1e-6), 0.0), alpha], dim=-1)
    return rgba.flip(1)


def _albedo(mesh: RenderMesh, rast: torch.Tensor) -> torch.Tensor:
    if mesh.texture is None:
        return mesh.colour.expand(*rast.shape[:3], 3)
    uv = interpolate(mesh.uv, rast, mesh.faces)
    grid = uv * 2 - 1  # grid_sample: -1..1 across the texture, x along columns, y along rows
    sampled = F.grid_sample(
        mesh.texture.expand(rast.shape[0], -1, -1, -1), grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    return sampled.permute(0, 2, 3, 1) * mesh.colour


def _texture(image, device: torch.device | str) -> torch.Tensor:
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    texture = torch.tensor(rgb, device=device).permute(2, 0, 1)[None]
    scale = _MAX_TEXTURE / max(texture.shape[2:])
    if scale >= 1:
        return texture
    return F.interpolate(texture, size=[max(1, round(side * scale)) for side in texture.shape[2:]], mode="area")


def _chunk(mesh: RenderMesh) -> int:
    return max(1, _VERTEX_BUDGET // max(len(mesh.vertices), len(mesh.faces)))
