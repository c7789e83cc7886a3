"""Camera maths for previews and the per-view fit: orbits, look-at, perspective, framing. Pure torch.

Conventions, chosen so that numbers in an answer mean something in any glTF viewer:

- **World**: the GLB's own frame (glTF: +Y up, metres), the object inside TRELLIS.2's unit cube
  centred on the origin. o_voxel's ``to_glb`` turns TRELLIS.2's Z-up frame into this one.
- **Orbit**: ``azimuth`` turns about +Y, 0° puts the camera on +Z (a glTF viewer's default front
  view), 90° on +X; ``elevation`` is the angle above the horizontal plane. Cameras look at the origin
  with +Y up, as TRELLIS.2's conditioning renders look at the cube's centre with its up axis up.
- **Clip space**: OpenGL's, as the rasterizer takes it (x right, y up, depth z/w in -1..1, near = -1).
- **Distance and field of view** go together as in TRELLIS.2's conditioning renders
  (``data_toolkit/render_cond.py``): a camera with field of view ``fov`` stands at
  ``(√3/2) / sin(fov/2)``, where the unit cube's bounding sphere just fills the frame; fov 10°..70°.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "CUBE_RADIUS",
    "FOV_RANGE",
    "clip_space",
    "distance_for_fov",
    "fov_for_distance",
    "frame_to_square",
    "look_at",
    "orbit_eyes",
    "perspective",
]

CUBE_RADIUS = math.sqrt(3) / 2  # the unit cube's bounding sphere
FOV_RANGE = (10.0, 70.0)  # degrees, the range TRELLIS.2's conditioning renders draw from


def distance_for_fov(fov_deg: torch.Tensor | float) -> torch.Tensor:
    """Distance from the origin at which the unit cube's bounding sphere just fills a ``fov_deg`` view."""
    return CUBE_RADIUS / torch.sin(torch.deg2rad(torch.as_tensor(fov_deg, dtype=torch.float32)) / 2)


def fov_for_distance(distance: torch.Tensor | float) -> torch.Tensor:
    """The inverse of :func:`distance_for_fov`, in degrees."""
    ratio = torch.clamp(CUBE_RADIUS / torch.as_tensor(distance, dtype=torch.float32), max=1.0)
    return torch.rad2deg(2 * torch.asin(ratio))


def orbit_eyes(azimuth_deg: torch.Tensor, elevation_deg: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
    """Camera positions ``[B, 3]`` on orbits about the origin (see the module's conventions)."""
    azimuth, elevation = torch.deg2rad(azimuth_deg.float()), torch.deg2rad(elevation_deg.float())
    direction = torch.stack(
        [torch.cos(elevation) * torch.sin(azimuth), torch.sin(elevation), torch.cos(elevation) * torch.cos(azimuth)], dim=-1
    )
    return direction * distance.float()[..., None]


def look_at(eyes: torch.Tensor, target: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> torch.Tensor:
    """World-to-camera matrices ``[B, 4, 4]`` (OpenGL: the camera looks down its -Z, +Y up)."""
    target_t = torch.tensor(target, dtype=eyes.dtype, device=eyes.device).expand_as(eyes)
    forward = torch.nn.functional.normalize(target_t - eyes, dim=-1)
    up = torch.tensor((0.0, 1.0, 0.0), dtype=eyes.dtype, device=eyes.device).expand_as(eyes)
    right = torch.nn.functional.normalize(torch.linalg.cross(forward, up), dim=-1)
    true_up = torch.linalg.cross(right, forward)
    rotation = torch.stack([right, true_up, -forward], dim=-2)
    view = torch.zeros(eyes.shape[0], 4, 4, dtype=eyes.dtype, device=eyes.device)
    view[:, :3, :3] = rotation
    view[:, :3, 3] = -(rotation @ eyes[..., None])[..., 0]
    view[:, 3, 3] = 1
    return view


def perspective(fov_deg: torch.Tensor, near: torch.Tensor, far: torch.Tensor) -> torch.Tensor:
    """OpenGL projection matrices ``[B, 4, 4]`` for square images."""
    focal = 1 / torch.tan(torch.deg2rad(fov_deg.float()) / 2)
    projection = torch.zeros(focal.shape[0], 4, 4, dtype=torch.float32, device=focal.device)
    projection[:, 0, 0] = focal
    projection[:, 1, 1] = focal
    projection[:, 2, 2] = (far + near) / (near - far)
    projection[:, 2, 3] = 2 * far * near / (near - far)
    projection[:, 3, 2] = -1
    return projection


def clip_space(
    vertices: torch.Tensor, azimuth: torch.Tensor, elevation: torch.Tensor, fov: torch.Tensor, *, radius: float
) -> torch.Tensor:
    """Vertices ``[V, 3]`` seen by B orbit cameras, in clip space ``[B, V, 4]``.

    Each camera stands at ``distance_for_fov(fov)``; near and far planes enclose a sphere of
    ``radius`` about the origin, so every vertex lies in front of every camera.
    """
    distance = distance_for_fov(fov).to(vertices.device)
    near = torch.clamp(distance - radius * 1.05, min=distance * 0.01)
    far = distance + radius * 1.05
    matrices = perspective(fov.to(vertices.device), near, far) @ look_at(
        orbit_eyes(azimuth.to(vertices.device), elevation.to(vertices.device), distance)
    )
    homogeneous = torch.cat([vertices, torch.ones_like(vertices[:, :1])], dim=1)
    return torch.einsum("bij,vj->bvi", matrices, homogeneous).contiguous()


def frame_to_square(clip: torch.Tensor, *, margin: float = 0.0, shared: bool = False) -> torch.Tensor:
    """Move and scale each view so the object's bounding square fills the image (``margin``: extra room).

    ``shared``: one square for all views (the union of their boxes), so a turntable keeps its scale.

    TRELLIS.2 crops every view to the square around its foreground (``preprocess_image``), so its
    views carry no image-plane position or scale: the fit compares silhouettes framed this way. The
    change is a 2D similarity applied in clip space (x' = (x - c·w) / h), so it keeps perspective.
    """
    ndc = clip[..., :2] / clip[..., 3:4]
    low, high = ndc.amin(dim=1), ndc.amax(dim=1)  # [B, 2]
    if shared:
        low, high = low.amin(dim=0).expand_as(low), high.amax(dim=0).expand_as(high)
    centre = (low + high) / 2
    half = (high - low).amax(dim=1).clamp(min=1e-6) / 2 * (1 + margin)  # [B]
    framed = clip.clone()
    framed[..., :2] = (clip[..., :2] - centre[:, None, :] * clip[..., 3:4]) / half[:, None, None]
    return framed
