"""Start-up checks: a broken worker fails at start with one clear line, not on its first job.

Four checks, each a plain function that raises ``StartupError`` naming what is missing:

- ``check_cuda``: a GPU is visible, its compute capability is one the image's extensions were
  compiled for (the ``TORCH_CUDA_ARCH_LIST`` the build recorded in ``/opt/trellis-mv/build-info.json``;
  outside the image, where nothing is recorded, any), and a tiny kernel returns the right sum.
- ``check_toolchain`` (``trellis_mv.toolchain``): a C extension compiles and imports the way Triton
  builds its launcher at the first kernel launch.
- ``check_extensions``: flex_gemm, cumesh, o_voxel and trellis2 import, and so does one
  sparse-attention backend (flash_attn, else xformers).
- ``check_weights``: every repository is found (``trellis_mv.weights``: baked, a RunPod cached model
  or TRELLIS_MV_MODEL_DIR, each named with its revision); ``pipeline.json`` parses; every checkpoint
  it names has its ``.json`` (parsed) and ``.safetensors`` (header read, file as long as the header
  says: no truncated downloads, no Git LFS pointers); the image encoder and the background remover
  have ``config.json``, their remote-code files and readable weights.

``run_checks(settings)`` runs them in order; ``handler.py`` calls it before it loads TRELLIS.2, so a
missing weight or extension stops the worker with ``cannot start: <what>`` before the 16 GB load,
not on the first job. (runpod's own ``register_fitness_check`` runs only inside
``runpod.serverless.start``, after the handler, and with it the pipeline, has been built: too late to
guard the load.) Nothing here touches torch or CUDA at import time.
"""

from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path
from typing import Any, Callable

from .config import Settings
from .errors import StartupError, first_line
from .safetensors_header import HeaderError, read_header
from .toolchain import check_toolchain
from .weights import Weights, checkpoint, find_weights

__all__ = [
    "ATTENTION_BACKENDS",
    "BUILD_INFO",
    "EXTENSIONS",
    "arch_refusal",
    "capability_supported",
    "check_cuda",
    "check_extensions",
    "check_toolchain",
    "check_weights",
    "fitness_checks",
    "image_archs",
    "run_checks",
]

log = logging.getLogger(__name__)

# Written by builder/build_extensions.sh with the TORCH_CUDA_ARCH_LIST the extensions were compiled
# for. The wheels carry machine code for these and no PTX, so a GPU runs them only within the same
# major version.
BUILD_INFO = Path("/opt/trellis-mv/build-info.json")
EXTENSIONS = ("flex_gemm", "cumesh", "o_voxel", "trellis2")
# trellis2's sparse attention accepts these (SPARSE_ATTN_BACKEND); the first that imports is used.
ATTENTION_BACKENDS = ("flash_attn", "xformers")
_MAX_LISTED = 6


def image_archs(build_info: Path = BUILD_INFO) -> tuple[str, ...] | None:
    """The compute capabilities the image's extensions were built for; None where no build recorded them."""
    info, problems = _json_file(build_info)
    if problems and not build_info.exists():
        return None
    archs = tuple(str(info.get("torch_cuda_arch_list", "")).split()) if isinstance(info, dict) else ()
    if problems or not archs:
        raise StartupError(f"CUDA: {build_info} has no torch_cuda_arch_list: the image build is broken")
    return archs


def check_cuda(archs: tuple[str, ...] | None = None) -> str:
    """Check that CUDA runs a kernel on a GPU of a supported architecture; returns the GPU's description.

    ``archs`` defaults to :func:`image_archs`; outside the image (nothing recorded) any GPU passes.
    """
    import torch

    archs = image_archs() if archs is None else archs
    if not torch.cuda.is_available():
        wanted = f" of compute capability {', '.join(archs)}" if archs else ""
        raise StartupError(
            f"CUDA: no usable GPU (torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
            f"this worker needs an NVIDIA GPU{wanted}"
        )
    name = torch.cuda.get_device_name(0)
    major, minor = torch.cuda.get_device_capability(0)
    if archs and not capability_supported(major, minor, archs):
        raise StartupError(arch_refusal(name, (major, minor), archs))
    try:
        total = (torch.arange(1024, device="cuda", dtype=torch.float32) * 2).sum().item()
        torch.cuda.synchronize()
    except RuntimeError as error:
        raise StartupError(f"CUDA: a test kernel failed on {name}: {first_line(error)}") from error
    if total != 1047552.0:
        raise StartupError(f"CUDA: a test kernel on {name} computed {total}, expected 1047552")
    built = f"built for {', '.join(archs)}" if archs else "extension architectures not recorded (not in the image)"
    return f"{name}, compute capability {major}.{minor}; {built}"


def check_extensions(
    modules: tuple[str, ...] = EXTENSIONS, attention: tuple[str, ...] = ATTENTION_BACKENDS
) -> str:
    """Import every module and the first attention backend that imports; returns that backend's name."""
    failed = [f"{name} ({error})" for name in modules if (error := _import_error(name))]
    backend = None
    attention_errors = []
    for name in attention:
        error = _import_error(name)
        if error is None:
            backend = name
            break
        attention_errors.append(f"{name}: {error}")
    if backend is None:
        failed.append(f"an attention backend ({'; '.join(attention_errors)})")
    if failed:
        raise StartupError(f"extensions: cannot import {', '.join(failed)}")
    return backend


def check_weights(weights: Weights) -> str:
    """Check that every file the pipeline will load is present and complete; returns where each repo came from."""
    pipeline = _read_json(weights.model_dir / "pipeline.json", "weights")
    try:
        args = pipeline["args"]
        refs = dict(args["models"])
        encoder = args["image_cond_model"]["args"]["model_name"]
    except (KeyError, TypeError) as error:
        raise StartupError(f"weights: {weights.model_dir / 'pipeline.json'} lacks args.{error}") from None
    problems: list[str] = []
    for ref in refs.values():
        path = weights.path(ref)
        problems += _json_problems(path.with_name(path.name + ".json"))
        problems += _safetensors_problems(checkpoint(path))
    problems += _hf_dir_problems(weights.path(encoder))
    problems += _hf_dir_problems(weights.background.path)
    if problems:
        shown = problems[:_MAX_LISTED]
        if len(problems) > _MAX_LISTED:
            shown.append(f"and {len(problems) - _MAX_LISTED} more")
        raise StartupError(f"weights incomplete: {'; '.join(shown)}")
    return f"{len(refs)} checkpoints; {weights.describe()}"


def fitness_checks(settings: Settings) -> list[Callable[[], None]]:
    """The checks this worker needs, as named functions; none when a custom generator replaces TRELLIS.2."""
    if settings.generator:
        return []

    def cuda_usable() -> None:
        log.info("CUDA: %s", check_cuda())

    def toolchain_builds() -> None:
        log.info("toolchain: %s", check_toolchain())

    def extensions_import() -> None:
        log.info("extensions import; sparse attention backend: %s", check_extensions())

    def weights_complete() -> None:
        log.info("weights: %s", check_weights(find_weights(settings)))

    return [cuda_usable, toolchain_builds, extensions_import, weights_complete]


def run_checks(settings: Settings) -> None:
    """Run ``fitness_checks(settings)`` now, in order; the first failure raises ``StartupError``."""
    for check in fitness_checks(settings):
        check()


def arch_refusal(name: str, capability: tuple[int, int], archs: tuple[str, ...]) -> str:
    """The start-up error for a GPU the image's extensions were not compiled for."""
    return (f"CUDA: {name} has compute capability {capability[0]}.{capability[1]}; this image's extensions are "
            f"built for {', '.join(archs)}: choose another GPU type, or the image variant built for it "
            "(docs/image.md)")


def capability_supported(major: int, minor: int, archs: tuple[str, ...]) -> bool:
    """Whether code built for ``archs`` runs on a GPU of this compute capability.

    Machine code for sm_XY runs on sm_XZ with Z >= Y, never across major versions (no PTX is kept).
    """
    built = [tuple(int(part) for part in arch.split(".")) for arch in archs]
    return any(major == built_major and minor >= built_minor for built_major, built_minor in built)


def _import_error(name: str) -> str | None:
    try:
        importlib.import_module(name)
    except (ImportError, OSError, RuntimeError) as error:
        return first_line(error)
    return None


def _json_file(path: Path) -> tuple[Any, list[str]]:
    """The parsed file, or None and the one problem that stopped it from being read."""
    try:
        return json.loads(path.read_text(encoding="utf-8")), []
    except FileNotFoundError:
        return None, [f"{path} is missing"]
    except (OSError, ValueError) as error:
        return None, [f"{path} is not readable JSON ({first_line(error)})"]


def _read_json(path: Path, what: str) -> dict:
    value, problems = _json_file(path)
    if problems:
        raise StartupError(f"{what}: {problems[0]}")
    return value


def _json_problems(path: Path) -> list[str]:
    config, problems = _json_file(path)
    if problems:
        return problems
    return [] if isinstance(config, dict) and "name" in config else [f"{path} has no model 'name'"]


def _safetensors_problems(path: Path) -> list[str]:
    try:
        read_header(path)
    except FileNotFoundError:
        return [f"{path} is missing"]
    except HeaderError as error:
        return [str(error)]
    except OSError as error:
        return [f"{path} has an unreadable header ({first_line(error)})"]
    return []


def _hf_dir_problems(path: Path) -> list[str]:
    if not path.is_dir():
        return [f"{path} is missing"]
    config, problems = _json_file(path / "config.json")
    if problems:
        return problems
    code = _remote_code_files(config)
    problems = [f"{path / name} is missing (remote code)" for name in code if not (path / name).is_file()]
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(_read_json(index, "weights").get("weight_map", {}).values()))
        weights = [path / shard for shard in shards]
    else:
        weights = sorted(path.glob("*.safetensors"))
    if not weights:
        return problems + [f"{path} has no *.safetensors weights"]
    for file in weights:
        problems += _safetensors_problems(file)
    return problems


def _remote_code_files(config: dict) -> list[str]:
    # auto_map values look like "birefnet.BiRefNet" or "owner/repo--module.Class" (or a list of such).
    files = set()
    for value in (config.get("auto_map") or {}).values():
        for entry in value if isinstance(value, list) else [value]:
            if isinstance(entry, str) and "." in entry:
                files.add(entry.split("--")[-1].rsplit(".", 1)[0].replace(".", "/") + ".py")
    return sorted(files)
