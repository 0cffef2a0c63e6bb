"""sim2real_fast: C++/CUDA-accelerated sim-to-real adaptation for particle-detector images.

The fused losses run as ``torch.ops.sim2real_fast.*`` (CPU with OpenMP, CUDA when built with it):

>>> import torch, sim2real_fast as s2r
>>> loss = s2r.mmd(torch.randn(128, 64), torch.randn(96, 64) + 0.5)
"""

from . import adapt, evaluate, geometry, io, models, nn, ops, reference, report, simulate, translate
from ._extension import HAS_EXTENSION, build_info
from .ops import bandwidth_heuristic, coral, dann_alpha, grad_reverse, hits_to_image, mmd
from .ops import ShowerFeatures, shower_features

__version__ = "0.1.0"

__all__ = [
    "HAS_EXTENSION",
    "adapt",
    "__version__",
    "bandwidth_heuristic",
    "build_info",
    "coral",
    "dann_alpha",
    "evaluate",
    "geometry",
    "grad_reverse",
    "hits_to_image",
    "io",
    "mmd",
    "models",
    "nn",
    "ops",
    "reference",
    "report",
    "ShowerFeatures",
    "shower_features",
    "simulate",
    "translate",
]
