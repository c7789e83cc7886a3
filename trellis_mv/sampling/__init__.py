"""Multi-view flow sampling for TRELLIS.2, in pure torch.

The sampler is a function (:func:`sample_flow_euler` over :func:`time_grid`); guidance and view
aggregation wrap the model (:func:`guided`), which runs each step's passes as one batch
(:func:`predict_many` through a :class:`Batcher`). No trellis2 import: the pipeline adapter passes
its flow models, its ``SparseTensor`` latents and a sparse :class:`Batcher`.
"""

from trellis_mv.sampling.batching import Batcher, DenseBatcher, RaggedConds, predict_many
from trellis_mv.sampling.euler import (
    Denoiser,
    StepInfo,
    sample_flow_euler,
    time_grid,
    velocity_from_x0,
    x0_from_velocity,
)
from trellis_mv.sampling.guidance import cfg, in_interval, rescale_cfg
from trellis_mv.sampling.multiview import MODES, guided

__all__ = [
    "MODES",
    "Batcher",
    "Denoiser",
    "DenseBatcher",
    "RaggedConds",
    "StepInfo",
    "cfg",
    "guided",
    "in_interval",
    "predict_many",
    "rescale_cfg",
    "sample_flow_euler",
    "time_grid",
    "velocity_from_x0",
    "x0_from_velocity",
]
