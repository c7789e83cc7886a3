"""The seam between the job and the GPU: what a generator is asked for and what it gives back.

The worker depends on this module only; ``pipeline`` implements ``Generator`` with TRELLIS.2 on
CUDA, and tests inject small CPU generators here instead of patching anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Protocol

from PIL import Image

__all__ = [
    "Generator",
    "GenerationRequest",
    "GenerationResult",
    "Mode",
    "PipelineType",
    "ProgressFn",
    "STAGES",
    "StageOptions",
]

Mode = Literal["stochastic", "multidiffusion", "concat"]
PipelineType = Literal["512", "1024", "1024_cascade", "1536_cascade"]
STAGES = ("sparse_structure", "shape_slat", "tex_slat")

# (stage, steps done, steps in that stage): called after every denoising step and stage end.
ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class StageOptions:
    """Per-stage sampler overrides, named as in TRELLIS.2's ``pipeline.json``; None keeps its value."""

    steps: int | None = None
    guidance_strength: float | None = None
    guidance_rescale: float | None = None
    guidance_interval: tuple[float, float] | None = None
    rescale_t: float | None = None
    mode: Mode | None = None

    def sampler_overrides(self) -> dict[str, Any]:
        """The sampler parameters that were set, without ``mode`` (which is ours, not trellis2's)."""
        names = ("steps", "guidance_strength", "guidance_rescale", "guidance_interval", "rescale_t")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


@dataclass(frozen=True)
class GenerationRequest:
    """One validated job, decoded: the views as PIL images and the sampling choices."""

    images: tuple[Image.Image, ...]
    seed: int
    mode: Mode = "stochastic"
    pipeline_type: PipelineType = "1024_cascade"
    sparse_structure: StageOptions = field(default_factory=StageOptions)
    shape_slat: StageOptions = field(default_factory=StageOptions)
    tex_slat: StageOptions = field(default_factory=StageOptions)
    # None: remove the background unless the image has a real alpha channel.
    remove_background: bool | None = None
    # One positive number per image, for "multidiffusion" stages; None weighs the views equally.
    view_weights: tuple[float, ...] | None = None

    def stage_mode(self, stage: str) -> Mode:
        """The view-combination mode for one stage: its own override, else the request's."""
        return getattr(self, stage).mode or self.mode


@dataclass
class GenerationResult:
    """What a generator made.

    ``mesh`` is whatever ``export.export_glb`` accepts: trellis2's ``MeshWithVoxel`` from the GPU
    pipeline, or an already textured ``trimesh.Trimesh`` from a test generator. ``resolution`` is the
    one the shape was made at (a cascade may lower it: ``trellis_mv.cascade``), and ``warnings`` are
    readable lines about anything done other than asked; both reach the answer. ``views`` are the
    images as the model saw them, one per request image, RGBA: TRELLIS.2's preprocessed crops, whose
    alpha is the foreground the per-view self-check (``views_fit``) compares the result with.
    ``components`` are the loaded weights this job ran (Hugging Face repositories): the answer warns
    about any whose licence forbids commercial use (``trellis_mv.licences``).
    """

    mesh: Any
    timings: dict[str, float] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    resolution: int | None = None
    warnings: list[str] = field(default_factory=list)
    views: tuple[Image.Image, ...] = ()
    components: tuple[str, ...] = ()


class Generator(Protocol):
    """Anything that turns a request into a mesh; the worker owns validation, export and storage.

    ``components`` are the weights it loaded, as Hugging Face repositories (or a folder's name where
    the repository is unknown): the worker's start-up log names those whose licence forbids
    commercial use (``trellis_mv.licences``).
    """

    components: tuple[str, ...]

    def generate(self, request: GenerationRequest, progress: ProgressFn | None = None) -> GenerationResult:
        """Run the three stages for all views of ``request`` and return the decoded mesh."""
        ...
