"""The job input, declared once, and every way it can be wrong, worded for the client.

Each field has its default, its bounds or choices and a description here and nowhere else. Models are
strict (``"12"`` is not an integer, ``1.0`` is not a step count) and refuse unknown fields. Pydantic's
errors become one line each (``messages.worded``: ``"shape_slat.steps: 0 is not in the range 1<=x<=50"``), and all lines
of a request come back together, joined with ``"; "``. The request-dependent limits (how many views,
how large an image) come from ``Settings`` through pydantic's validation context.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Sequence

from PIL import Image
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from .images import Source, parse_source
from .config import Settings
from .errors import UserError
from .export import GlbOptions
from .generator import STAGES, GenerationRequest, Mode, PipelineType, StageOptions
from .limits import KEY_PREFIX_RULE, MAX_EXPIRES_IN, MIN_EXPIRES_IN, key_prefix_allowed
from .messages import counted, shown, worded

__all__ = [
    "GlbInput",
    "JobInput",
    "MAX_SEED",
    "OutputInput",
    "PreprocessInput",
    "StageInput",
    "parse_job_input",
]

MAX_SEED = 2**32 - 1
_GLB_DEFAULTS = GlbOptions()


@dataclass(frozen=True)
class _Context:
    settings: Settings
    has_bucket: bool


def _as_sent(value: float) -> float:
    # Strict mode turns an integer sent for a float field into a float: show it as sent.
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _between(low: float, high: float) -> AfterValidator:
    def check(value: float) -> float:
        if not low <= value <= high:
            raise ValueError(f"{shown(_as_sent(value))} is not in the range {low}<=x<={high}")
        return value

    return AfterValidator(check)


def _positive(value: float) -> float:
    if not value > 0:
        raise ValueError(f"{shown(_as_sent(value))} is not a positive number")
    return value


# Why a mode cannot take view_weights (sampling/multiview.py's docstring has the long form).
_UNWEIGHED = {
    "stochastic": "one view per step",
    "concat": "the views meet inside trellis2's cross-attention, which has no per-view bias to weigh them by",
}


def _interval(value: list[float]) -> tuple[float, float]:
    if len(value) != 2:
        raise ValueError(f"expected two numbers [start, end] within 0..1, got {len(value)}")
    start, end = value
    if not 0 <= start <= end <= 1:
        raise ValueError(f"{shown(value)} is not an interval [start, end] with 0<=start<=end<=1")
    return start, end


def _key_prefix(value: str) -> str:
    if not key_prefix_allowed(value):
        raise ValueError(f"{shown(value)} is not allowed; use {KEY_PREFIX_RULE}")
    return value


def _image_source(value: Any, info: ValidationInfo) -> Source:
    if not isinstance(value, str):
        raise ValueError(f"expected a string (base64, a data: URI or an https:// URL), got {shown(value)}")
    settings = info.context.settings
    return parse_source(value, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)


def _random_seed() -> int:
    return secrets.randbelow(MAX_SEED + 1)


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class StageInput(_Input):
    """Sampler overrides for one TRELLIS.2 stage; unset fields keep the values of its ``pipeline.json``."""

    steps: Annotated[int, _between(1, 50)] | None = Field(None, description="denoising steps")
    guidance_strength: Annotated[float, _between(0, 20)] | None = Field(None, description="CFG strength")
    guidance_rescale: Annotated[float, _between(0, 1)] | None = Field(None, description="CFG rescale in x0 space")
    guidance_interval: Annotated[list[float], AfterValidator(_interval)] | None = Field(
        None, description="[start, end] of t where guidance applies"
    )
    rescale_t: Annotated[float, _between(0.1, 10)] | None = Field(None, description="time-grid warp")
    mode: Mode | None = Field(None, description="view combination for this stage; default: the job's mode")

    def to_options(self) -> StageOptions:
        """The generator's view of these overrides."""
        return StageOptions(**_values(self))


class PreprocessInput(_Input):
    """Image preparation before conditioning."""

    remove_background: Literal["auto", True, False] = Field(
        "auto", description="auto: remove it unless the image has a real alpha channel"
    )


class GlbInput(_Input):
    """Export options, mapped onto ``export.GlbOptions``."""

    decimation_target: Annotated[int, _between(1_000, 2_000_000)] = Field(
        _GLB_DEFAULTS.decimation_target, description="faces kept after simplification"
    )
    texture_size: Annotated[int, _between(512, 4096)] = Field(
        _GLB_DEFAULTS.texture_size, description="side of the baked texture in pixels"
    )
    remesh: bool = Field(_GLB_DEFAULTS.remesh, description="rebuild a clean surface before baking")
    texture_format: Literal["webp", "png"] = Field(
        _GLB_DEFAULTS.texture_format, description="webp: smaller (EXT_texture_webp); png: opens everywhere"
    )
    compression: Literal["draco", "none"] = Field(
        _GLB_DEFAULTS.compression,
        description="draco: geometry about 18x smaller (KHR_draco_mesh_compression); none: plain float32",
    )
    unwrap: Literal["fast", "xatlas"] = Field(
        _GLB_DEFAULTS.unwrap,
        description="fast: charts flattened on the GPU, then packed; xatlas: CuMesh + xatlas as TRELLIS.2 does (slower)",
    )

    def to_options(self) -> GlbOptions:
        """The exporter's options."""
        return GlbOptions(**_values(self))


class OutputInput(_Input):
    """Where the GLB goes, and whether a preview comes with it; unset fields take the worker's defaults."""

    type: Literal["s3", "base64"] | None = Field(None, description="default: s3 when a bucket is configured")
    key_prefix: Annotated[str, AfterValidator(_key_prefix)] | None = Field(None, description="object key prefix")
    expires_in: Annotated[int, _between(MIN_EXPIRES_IN, MAX_EXPIRES_IN)] | None = Field(
        None, description="seconds the presigned URL stays valid"
    )
    preview: bool = Field(
        False, description="also answer a PNG sheet (turntable, each view's fitted silhouette) and views_fit"
    )

    @field_validator("type")
    @classmethod
    def _bucket_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value == "s3" and not info.context.has_bucket:
            raise ValueError(
                '"s3" needs a bucket and this worker has none (set BUCKET_NAME, BUCKET_ACCESS_KEY_ID, '
                'BUCKET_SECRET_ACCESS_KEY on the endpoint); use "base64" or leave output.type out'
            )
        return value


class JobInput(_Input):
    """``job["input"]``: the views and every choice a client can make (see README, "The contract")."""

    images: list[Annotated[Source, PlainValidator(_image_source, json_schema_input_type=str)]] = Field(
        description="1 to max_views images: base64, data: URIs or https:// URLs; PNG, JPEG or WebP"
    )
    mode: Mode = Field("stochastic", description="how views are combined at each denoising step")
    seed: Annotated[int, _between(0, MAX_SEED)] = Field(
        default_factory=_random_seed, description="same seed + same input = same GLB; default random"
    )
    pipeline_type: PipelineType = Field("1024_cascade", description="TRELLIS.2 resolution")
    sparse_structure: StageInput = Field(default_factory=StageInput)
    shape_slat: StageInput = Field(default_factory=StageInput)
    tex_slat: StageInput = Field(default_factory=StageInput)
    view_weights: list[Annotated[float, AfterValidator(_positive)]] | None = Field(
        None, description='one positive number per image, normalised to sum 1; "multidiffusion" only; default equal'
    )
    preprocess: PreprocessInput = Field(default_factory=PreprocessInput)
    glb: GlbInput = Field(default_factory=GlbInput)
    output: OutputInput = Field(default_factory=OutputInput)

    @field_validator("images", mode="before")
    @classmethod
    def _count(cls, value: Any, info: ValidationInfo) -> Any:
        # Before the entries are decoded, so fifty images cost nothing to refuse.
        most = info.context.settings.max_views
        if not isinstance(value, list):
            raise ValueError(f"expected a list of 1 to {most} images, got {shown(value)}")
        if not 1 <= len(value) <= most:
            raise ValueError(f"{counted(len(value), 'image')} given; send 1 to {most}")
        return value

    @field_validator("view_weights")
    @classmethod
    def _weights_fit(cls, value: list[float] | None, info: ValidationInfo) -> list[float] | None:
        # Declared after images and the modes, so those are in info.data when they were valid.
        if value is None:
            return value
        images = info.data.get("images")
        if images is not None and len(value) != len(images):
            raise ValueError(f"{counted(len(value), 'weight')} given for {counted(len(images), 'image')}; "
                             "send one positive number per image")
        modes = {getattr(info.data.get(stage), "mode", None) or info.data.get("mode") for stage in STAGES}
        unweighed = [f'"{mode}" ({why})' for mode, why in _UNWEIGHED.items() if mode in modes]
        if unweighed:
            raise ValueError(f'only "multidiffusion" weighs views, and this request uses {" and ".join(unweighed)}; '
                             'use "multidiffusion" in every stage or leave view_weights out')
        return value

    def generation_request(self, views: Sequence[Image.Image]) -> GenerationRequest:
        """The generator's request, with the decoded views in the order they were sent."""
        remove = self.preprocess.remove_background
        return GenerationRequest(
            images=tuple(views),
            seed=self.seed,
            mode=self.mode,
            pipeline_type=self.pipeline_type,
            sparse_structure=self.sparse_structure.to_options(),
            shape_slat=self.shape_slat.to_options(),
            tex_slat=self.tex_slat.to_options(),
            remove_background=None if remove == "auto" else remove,
            view_weights=None if self.view_weights is None else tuple(self.view_weights),
        )


def parse_job_input(raw: Any, settings: Settings, *, has_bucket: bool) -> JobInput:
    """Validate ``job["input"]``; every problem is reported in one ``UserError``, joined with "; "."""
    if not isinstance(raw, dict):
        raise UserError("input", f'expected an object such as {{"images": ["<base64>"]}}, got {shown(raw)}')
    try:
        return JobInput.model_validate(raw, context=_Context(settings, has_bucket))
    except ValidationError as error:
        hints = {"images": f"required; send a list of 1 to {settings.max_views} images (base64, data: URIs or https:// URLs)"}
        raise UserError("", "; ".join(worded(item, JobInput, hints) for item in error.errors())) from None


def _values(model: BaseModel) -> dict[str, Any]:
    # Not model_dump(): validators may have turned values into richer types (a tuple interval).
    return {name: getattr(model, name) for name in type(model).model_fields}
