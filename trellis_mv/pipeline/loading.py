"""Loading TRELLIS.2 from local folders: the first half of the trellis2 adapter.

trellis2's ``Trellis2ImageTo3DPipeline`` is built from its public pieces, never from
``from_pretrained`` with hub ids: each model with ``trellis2.models.from_pretrained`` on a local
path, the samplers from ``pipeline.json``, the image encoder and background remover from local
folders. ``trellis_mv.weights.find_weights`` says where each repository is (baked into the image, a
RunPod cached model or TRELLIS_MV_MODEL_DIR) and maps the hub ids in ``pipeline.json``
(``microsoft/TRELLIS-image-large/ckpts/...``, ``facebook/dinov3-vitl16-pretrain-lvd1689m``) to those
folders; RMBG-2.0 is replaced by ``Settings.background_model``.

The weight files are read into memory ahead of the load by ``trellis_mv.headstart`` (begun before
torch is imported); here the eight models are built on the GPU one after another, without the
random initialisation their checkpoints overwrite (a model whose checkpoint lacks a parameter is built
again with it, as trellis2 would leave it), each filled from its checkpoint on another thread while
the next is built, and the image encoder and the background remover (transformers, remote code)
load on a thread beside them. Where the GPU has room for it (not in low-VRAM mode), that thread then
runs each model once as soon as it is loaded: the encoders, then each flow as its fill ends, while
the later flows still load (``pipeline.warm``: their first launches, off the start's path). One log
line says what each took: the start-up is measured from the logs (benchmarks/cold_start.py).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from ..config import Settings
from ..dinov3 import DinoV3Conditioner
from ..errors import StartupError
from ..gpu_random import RANDOM_OR_CAPTURE, synchronize
from ..weights import Weights, checkpoint, find_weights
from .direct_read import fill_direct, names
from .offload import choose_low_vram
from .prefetch import can_read_direct
from .running import TrellisGenerator
from .warm import warm_encoders, warm_flows, warmup_view

__all__ = ["load_generator", "load_pipeline"]

log = logging.getLogger(__name__)

# Threads that copy the checkpoints into the built models while the next is built (the copies leave
# the interpreter free).
FILLERS = 2
# pipeline.json's samplers, one per stage
STAGES = ("sparse_structure_sampler", "shape_slat_sampler", "tex_slat_sampler")

# One module is built at a time. transformers 4 (the image's) builds a model in from_pretrained inside
# its init_empty_weights and no_init_weights, which patch nn.Module.register_parameter and torch.nn.init
# for the whole process: a flow built on this thread meanwhile got meta parameters, and the start
# failed ("Cannot copy out of meta tensor") or a model skipped its initialisation.
BUILDING = threading.Lock()


def load_generator(settings: Settings, *, wait_read: Callable[[Path], None] | None = None,
                   wait_imported: Callable[[], None] | None = None) -> TrellisGenerator:
    """The worker's generator: the pipeline from ``settings.model_dir`` on the GPU, ready for jobs
    (``wait_read``, ``wait_imported``: as :func:`load_pipeline`'s)."""
    weights = find_weights(settings)
    components = (weights.model.repo, *weights.named, weights.background.repo)
    pipeline, warmed = load_pipeline(settings, wait_read=wait_read, wait_imported=wait_imported)
    return TrellisGenerator(pipeline, max_batch=settings.max_batch, components=components,
                            background=weights.background.repo, warmed_latents=warmed)


def load_pipeline(settings: Settings, *, background: Any = None,
                  wait_read: Callable[[Path], None] | None = None,
                  wait_imported: Callable[[], None] | None = None) -> tuple[Any, tuple[Any, Any] | None]:
    """Build ``Trellis2ImageTo3DPipeline`` from local folders, on CUDA, resident or low-VRAM; with it, the
    512 shape and texture latents of the flows' warm-up during the load (None in low-VRAM mode or
    without a GPU).

    ``background`` replaces the remover loaded from ``settings.background_model`` (tests pass a
    stand-in). ``wait_read(path)`` returns once a weight file (or the files of a folder) has been read
    ahead (``HeadStart.wait_read``): each file is read only after that. ``wait_imported()`` returns once
    the encoders' imports begun ahead have ended (``HeadStart.wait_imported``): the encoders import
    nothing of transformers before that. Raises ``StartupError`` for missing files.

    The encoders' thread starts first: it imports transformers (seconds of Python; begun ahead where
    there was a head start) while this thread builds the flows and decoders, whose copies into GPU
    memory leave the interpreter free; trellis2's pipeline module, which imports transformers too, is
    imported once that thread is done. Once every model is built, that thread warms the flows as their
    fills end (:func:`_warm_flows_as_filled`).
    """
    from trellis2 import models
    from trellis2.pipelines import samplers  # before the encoders' thread: its modules import no transformers

    start = time.perf_counter()
    weights = find_weights(settings)
    config_file = weights.model_dir / "pipeline.json"
    if not config_file.is_file():
        raise StartupError(f"TRELLIS_MV_MODEL_DIR: {config_file} does not exist")
    args = json.loads(config_file.read_text())["args"]
    low_vram = choose_low_vram(settings.low_vram)
    wait_read = wait_read or _nothing_read_ahead
    wait_imported = wait_imported or _nothing_imported_ahead
    # Where the models run as soon as they are loaded: all stay on the GPU, and there is one.
    warm = not low_vram and torch.cuda.is_available()
    sampling = _sampling(samplers, args)
    seconds: dict[str, Any] = {}
    with (ThreadPoolExecutor(max_workers=1, thread_name_prefix="load-encoders") as pool,
          ThreadPoolExecutor(max_workers=FILLERS, thread_name_prefix="load-weights") as filling):
        encoders = pool.submit(_encoders, weights, args, background, low_vram, warm, wait_read, seconds,
                               wait_imported=wait_imported)
        filled, built = {}, {}
        for name, reference in args["models"].items():  # the read-ahead's order
            path = weights.path(reference)
            begun = time.perf_counter()
            model = _build(models, path, random_init=False)
            built[name] = time.perf_counter() - begun
            filled[name] = filling.submit(_fill_or_rebuild, models, name, model, path, low_vram, wait_read)
        # after the encoders, on their thread; submitted once every fill is (it looks them up by name)
        flows = pool.submit(_warm_flows_as_filled, encoders, filled, sampling, settings.max_batch) if warm else None
        loaded = {}
        for name in args["models"]:
            loaded[name], (began, ended) = filled[name].result()
            # where the load's time went: building (this thread), filling (waits on the reads), when it ended
            seconds[name] = (round(built[name], 2), round(ended - began, 2), round(ended - start, 1))
        image_cond_model, rembg_model = encoders.result()
        warmed = None
        if flows is not None:
            seconds["flows_warm_up"], latents = flows.result()
            warmed = latents.get(512)
    # Only now: its modules import transformers, which the encoders' thread imported meanwhile, and
    # transformers' lazy module is not safe to import from two threads at once (a start failed with
    # "cannot import name 'AutoModelForImageSegmentation' from 'transformers'").
    from trellis2.pipelines import Trellis2ImageTo3DPipeline

    pipeline = Trellis2ImageTo3DPipeline(
        models={name: model for name, model in loaded.items() if name in Trellis2ImageTo3DPipeline.model_names_to_load},
        **sampling,
        image_cond_model=image_cond_model,
        rembg_model=rembg_model,
        low_vram=low_vram,
        default_pipeline_type=args.get("default_pipeline_type", "1024_cascade"),
    )
    pipeline.cuda()
    synchronize()  # the fills' copies; the export's warm-up may be capturing a graph meanwhile
    log.info("loaded in %.1f s (low-VRAM %s); per model, seconds building, filling, and when the fill ended: %s",
             time.perf_counter() - start, low_vram, seconds)
    return pipeline, warmed


def _build(models: Any, path: Path, *, random_init: bool) -> torch.nn.Module:
    """The trellis2 model ``path``.json describes, on the GPU (seconds, not minutes of CPU init), without
    its random initialisation unless ``random_init`` (the checkpoint's values replace it)."""
    config = json.loads(path.with_name(path.name + ".json").read_text())
    with BUILDING, RANDOM_OR_CAPTURE, torch.device("cuda"), nullcontext() if random_init else RandomInitSkipped():
        return getattr(models, config["name"])(**config["args"])


def _fill(model: torch.nn.Module, path: Path, low_vram: bool) -> torch.nn.Module:
    """``model`` with ``path``.safetensors loaded into it (as trellis2 does: keys it lacks are ignored),
    parked on the CPU in low-VRAM mode. The file is read past the page cache where its file system
    allows it (``direct_read``), else through it (safetensors' ``load_file``)."""
    from safetensors.torch import load_file

    file = checkpoint(path)
    if not (can_read_direct(file) and _filled_direct(model, file)):
        model.load_state_dict(load_file(str(file)), strict=False)
    model.eval()  # as the pipeline sets it; the warm-up runs it before the pipeline is built
    if low_vram:
        model.cpu()
    return model


def _filled_direct(model: torch.nn.Module, file: Path) -> bool:
    """Whether ``model``'s parameters and buffers were filled from ``file`` read past the page cache
    (False where the read failed or the file holds a dtype ``direct_read`` does not know: the caller
    reads the file through the page cache, with safetensors' ``load_file``)."""
    try:
        fill_direct(file, model.state_dict(keep_vars=True))
    except (OSError, ValueError) as error:
        log.warning("%s: not read past the page cache (%s); reading it through the page cache", file, error)
        return False
    return True


def _lacking(model: torch.nn.Module, file: Path) -> list[str]:
    """The parameters of ``model`` that the safetensors ``file`` holds no tensor for, from its header alone."""
    held = names(file)
    return [name for name, _parameter in model.named_parameters() if name not in held]


def _nothing_read_ahead(path: Path) -> None:
    """``load_pipeline``'s ``wait_read`` without a head start: there is no read to wait for."""


def _nothing_imported_ahead() -> None:
    """``load_pipeline``'s ``wait_imported`` without a head start: there is no import to wait for."""


def _fill_or_rebuild(models: Any, name: str, model: torch.nn.Module, path: Path, low_vram: bool,
                     wait_read: Callable[[Path], None]) -> tuple[torch.nn.Module, tuple[float, float]]:
    """:func:`_fill` once the checkpoint has been read ahead. Where its header shows that it lacks
    parameters, the model is first built again with its random initialisation, as trellis2 leaves them;
    either way the checkpoint is read once. The model, and when its filling (its waiting included)
    began and ended."""
    began = time.perf_counter()
    file = checkpoint(path)
    unheld = _lacking(model, file)
    if unheld:
        log.warning("%s: the checkpoint lacks %d parameters (%s); built again with its random initialisation",
                    name, len(unheld), ", ".join(unheld[:3]))
        model = _build(models, path, random_init=True)
    wait_read(file)
    return _fill(model, path, low_vram), (began, time.perf_counter())


class RandomInitSkipped(TorchFunctionMode):
    """Skips random initialisation on this thread: ``torch.nn.init``'s random fills, and ``uniform_`` and
    ``normal_`` on tensors, leave the tensor as it is (allocated, unset).

    The models are built to be overwritten by their checkpoints: on the H200, a start's profile spent
    3.2 s inside ``nn.init`` (each of its small ops through the device context's Python) beside the
    other threads.
    A mode, not a patch of ``torch.nn.init``: other threads (the encoders' transformers, whose
    ``from_pretrained`` patches and restores those functions) see nothing.
    """

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if func in _RANDOM_FILLS:
            return args[0] if args else (kwargs or {})["tensor"]
        return func(*args, **(kwargs or {}))


# nn.init's functions that dispatch to a mode (the others end in the tensor methods)
_RANDOM_FILLS = frozenset({torch.nn.init.uniform_, torch.nn.init.normal_, torch.nn.init.kaiming_uniform_,
                           torch.Tensor.uniform_, torch.Tensor.normal_})


def _encoders(weights: Weights, args: dict[str, Any], background: Any, low_vram: bool, warm: bool,
              wait_read: Callable[[Path], None], seconds: dict[str, Any], *,
              wait_imported: Callable[[], None]) -> tuple[DinoV3Conditioner, Any]:
    """The image encoder and the background remover (``background`` when given), each once its files
    have been read ahead, timed into ``seconds``, after the imports begun ahead (``wait_imported``);
    with ``warm``, on the GPU and run once."""
    from ..background import load_background_remover

    # Outside BUILDING: the flows are built meanwhile. trellis2's pipeline module needs the auto classes.
    wait_imported()
    from transformers import AutoModelForImageSegmentation, DINOv3ViTModel  # noqa: F401

    begun = time.perf_counter()
    folder = weights.path(args["image_cond_model"]["args"]["model_name"])
    wait_read(folder)
    with BUILDING:
        encoder = DinoV3Conditioner(str(folder))
    seconds["image_cond_model"] = round(time.perf_counter() - begun, 2)
    if background is None:
        begun = time.perf_counter()
        wait_read(weights.background.path)
        # Built on the GPU, as the models are, and without the random initialisation its checkpoint
        # overwrites: the loader refuses a checkpoint that lacks a parameter.
        with BUILDING, RANDOM_OR_CAPTURE, torch.device("cuda"), RandomInitSkipped():
            remover = load_background_remover(str(weights.background.path))
        if low_vram:
            remover.cpu()
        seconds["rembg_model"] = round(time.perf_counter() - begun, 2)
    else:
        remover = background
    if warm:
        # Both are used alone, and before the flows: their first launches run here while the flows
        # load, not after the load (the warm-up's background removal and DINOv3 took 1.4 to 1.8 s of
        # the H200's starts there, mostly cuDNN's and cuBLAS's libraries read from a cold disk).
        encoder.cuda()
        seconds["encoders_warm_up"] = warm_encoders(encoder, remover, warmup_view())
    return encoder, remover


def _sampling(samplers: Any, args: dict[str, Any]) -> dict[str, Any]:
    """``Trellis2ImageTo3DPipeline``'s samplers, their parameters and the latents' normalisations, from ``pipeline.json``'s ``args``."""
    return {**{stage: getattr(samplers, args[stage]["name"])(**args[stage]["args"]) for stage in STAGES},
            **{f"{stage}_params": args[stage]["params"] for stage in STAGES},
            **{name: args[name] for name in ("shape_slat_normalization", "tex_slat_normalization")}}


def _warm_flows_as_filled(encoders: Future, filled: Mapping[str, Future], sampling: dict[str, Any],
                          max_batch: int | None) -> tuple[dict[str, float], dict[int, Any]]:
    """``warm_flows`` on the models as their fills end, through the pipeline's parts that a stage reads.

    The structure flow and its decoder are filled first, seconds before the last flows: their first
    launches (cuDNN's 3D convolutions among them) took 1.2 to 2 s of the H200's warm-ups after the load.
    """
    encoder, _remover = encoders.result()
    parts = SimpleNamespace(models=Filled(filled), device=torch.device("cuda"), low_vram=False,
                            image_cond_model=encoder, **sampling)
    return warm_flows(parts, warmup_view(), max_batch)


class Filled(Mapping):
    """The models by name as their fills end (:func:`_fill_or_rebuild`'s futures): a lookup waits for the model's fill."""

    def __init__(self, fills: Mapping[str, Future]):
        self._fills = fills

    def __getitem__(self, name: str) -> torch.nn.Module:
        model, _times = self._fills[name].result()
        return model

    def __iter__(self) -> Iterator[str]:
        return iter(self._fills)

    def __len__(self) -> int:
        return len(self._fills)
