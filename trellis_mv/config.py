"""The worker's settings: every limit and option, read from the environment once at start-up.

Each field is declared once, with its default, its environment variable and what it is for; the
README's table lists the same names (a test keeps the two in step). ``handler.py`` calls
``Settings.from_env(os.environ)`` and passes the result down; nothing else reads the environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal, Mapping

from .errors import StartupError
from .limits import KEY_PREFIX_RULE, MAX_EXPIRES_IN, MIN_EXPIRES_IN, key_prefix_allowed

__all__ = ["Settings", "env_var_names"]

LowVram = Literal["auto", "on", "off"]
_LOW_VRAM_CHOICES = ("auto", "on", "off")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# What boto3 needs to reach a bucket; the endpoint and region are optional (AWS defaults).
_BUCKET_REQUIRED = ("BUCKET_NAME", "BUCKET_ACCESS_KEY_ID", "BUCKET_SECRET_ACCESS_KEY")


def _setting(default: Any, env: str, help: str, *, minimum: float | None = None, maximum: float | None = None) -> Any:
    return field(default=default, metadata={"env": env, "help": help, "minimum": minimum, "maximum": maximum})


@dataclass(frozen=True)
class Settings:
    """Limits and options of one worker process. Construct directly in tests; ``from_env`` in production."""

    # Request limits
    max_views: int = _setting(8, "TRELLIS_MV_MAX_VIEWS", "most images one job may send", minimum=1)
    max_image_bytes: int = _setting(
        20_000_000, "TRELLIS_MV_MAX_IMAGE_BYTES",
        "most bytes of one encoded image, after base64 decoding or as downloaded from a URL", minimum=1,
    )
    max_image_pixels: int = _setting(
        4096 * 4096, "TRELLIS_MV_MAX_IMAGE_PIXELS",
        "most pixels (width x height) of one image, checked before its pixels are decoded", minimum=1,
    )
    url_timeout_s: float = _setting(
        20.0, "TRELLIS_MV_URL_TIMEOUT_S", "seconds allowed to download one image URL", minimum=0.001,
    )
    # Output
    max_base64_glb_bytes: int = _setting(
        14_000_000, "TRELLIS_MV_MAX_BASE64_GLB_BYTES",
        "largest GLB answered inline as base64 (RunPod's /runsync answer is capped at 20 MB and "
        "base64 adds a third)", minimum=1,
    )
    url_expires_s: int = _setting(
        3600, "TRELLIS_MV_URL_EXPIRES_S", "default lifetime of the presigned GLB URL, seconds (60 to 604800)",
        minimum=MIN_EXPIRES_IN, maximum=MAX_EXPIRES_IN,
    )
    key_prefix: str = _setting(
        "trellis-mv", "TRELLIS_MV_KEY_PREFIX", f"default first part of the object key: {KEY_PREFIX_RULE}",
    )
    # Bucket (RunPod's own names)
    bucket_endpoint_url: str | None = _setting(
        None, "BUCKET_ENDPOINT_URL", "S3 endpoint, e.g. https://<account>.r2.cloudflarestorage.com; unset for AWS",
    )
    bucket_access_key_id: str | None = _setting(None, "BUCKET_ACCESS_KEY_ID", "S3 access key id")
    bucket_secret_access_key: str | None = _setting(None, "BUCKET_SECRET_ACCESS_KEY", "S3 secret access key")
    bucket_name: str | None = _setting(None, "BUCKET_NAME", "bucket the GLBs are written to")
    bucket_region: str | None = _setting(None, "BUCKET_REGION", "bucket region (us-east-1 when unset; 'auto' for R2)")
    # Model and GPU
    model_dir: str = _setting(
        "/models/TRELLIS.2-4B", "TRELLIS_MV_MODEL_DIR",
        "a folder of weights (e.g. a network volume), searched after the image's /models and RunPod's cached "
        "model: one <folder>/<repo name>/ per repository, or a Hugging Face cache",
    )
    background_model: str = _setting(
        "/models/BiRefNet", "TRELLIS_MV_BACKGROUND_MODEL",
        "background-removal weights, a folder or a hub id: BiRefNet (MIT) by default; RMBG-2.0 only if its "
        "licence suits you",
    )
    low_vram: LowVram = _setting(
        "auto", "TRELLIS_MV_LOW_VRAM", "offload idle models to the CPU: auto (by GPU memory), on or off",
    )
    max_batch: int | None = _setting(
        None, "TRELLIS_MV_MAX_BATCH",
        "most model passes batched together in one denoising step (unset: all views at once)", minimum=1,
    )
    # Process
    cpu_threads: int | None = _setting(
        None, "TRELLIS_MV_CPU_THREADS",
        "CPU threads for torch and the GLB encoders (unset: the container's cgroup CPU quota rounded down, "
        "at most the CPUs the process may run on)", minimum=1,
    )
    generator: str | None = _setting(
        None, "TRELLIS_MV_GENERATOR",
        "testing/extension hook: 'module:callable' returning a Generator, used instead of TRELLIS.2",
    )
    log_level: str = _setting("INFO", "TRELLIS_MV_LOG_LEVEL", "DEBUG, INFO, WARNING or ERROR")

    @property
    def has_bucket(self) -> bool:
        """Whether GLBs can be uploaded (all required bucket settings are present)."""
        return self.bucket_name is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read every setting from ``env``; unset or empty variables keep their defaults.

        Raises ``StartupError`` naming the variable when a value cannot be used.
        """
        values = {}
        for spec in fields(cls):
            raw = env.get(spec.metadata["env"], "").strip()
            if raw:
                values[spec.name] = _parse(spec, raw)
        settings = cls(**values)
        _check_bucket(settings)
        _check_choice("TRELLIS_MV_LOW_VRAM", settings.low_vram, _LOW_VRAM_CHOICES)
        _check_choice("TRELLIS_MV_LOG_LEVEL", settings.log_level, _LOG_LEVELS)
        _check_generator(settings.generator)
        if not key_prefix_allowed(settings.key_prefix):
            raise StartupError(f"TRELLIS_MV_KEY_PREFIX: {settings.key_prefix!r} is not allowed; use {KEY_PREFIX_RULE}")
        return settings


def env_var_names() -> list[str]:
    """Every environment variable ``Settings.from_env`` reads, in declaration order."""
    return [spec.metadata["env"] for spec in fields(Settings)]


def _parse(spec: Any, raw: str) -> Any:
    name, minimum, maximum = spec.metadata["env"], spec.metadata["minimum"], spec.metadata["maximum"]
    kind = spec.type.split(" | ")[0]
    if kind in ("int", "float"):
        number_type = int if kind == "int" else float
        try:
            value = number_type(raw)
        except ValueError:
            expected = "an integer" if kind == "int" else "a number"
            raise StartupError(f"{name}: expected {expected}, got {raw!r}") from None
        if minimum is not None and not value >= minimum:
            raise StartupError(f"{name}: {raw} is too small; the least allowed is {minimum:g}")
        if maximum is not None and value > maximum:
            raise StartupError(f"{name}: {raw} is too large; the most allowed is {maximum:g}")
        return value
    if name == "TRELLIS_MV_LOG_LEVEL":
        return raw.upper()
    return raw


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise StartupError(f"{name}: {value!r} is not one of {', '.join(choices)}")


def _check_bucket(settings: Settings) -> None:
    values = {
        "BUCKET_NAME": settings.bucket_name,
        "BUCKET_ACCESS_KEY_ID": settings.bucket_access_key_id,
        "BUCKET_SECRET_ACCESS_KEY": settings.bucket_secret_access_key,
    }
    missing = [name for name in _BUCKET_REQUIRED if values[name] is None]
    others_set = settings.bucket_endpoint_url is not None or settings.bucket_region is not None
    if missing and (len(missing) < len(_BUCKET_REQUIRED) or others_set):
        raise StartupError(
            f"{', '.join(missing)}: not set, but other BUCKET_* settings are; set "
            f"{', '.join(_BUCKET_REQUIRED)} (and optionally BUCKET_ENDPOINT_URL, BUCKET_REGION) "
            "to upload GLBs, or none of them to answer base64"
        )


def _check_generator(value: str | None) -> None:
    if value is not None and value.count(":") != 1:
        raise StartupError(f"TRELLIS_MV_GENERATOR: {value!r} is not of the form 'module:callable'")
