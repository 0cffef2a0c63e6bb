"""Thin wrappers over ``torch.ops.sim2real_fast``: argument checks, fake tensors, autograd."""

from .coral import coral
from .grad_reverse import dann_alpha, grad_reverse
from .hits_to_image import hits_to_image
from .mmd import DEFAULT_KERNEL_SCALES, ESTIMATORS, bandwidth_heuristic, mmd
from .shower_features import ShowerFeatures, shower_features

__all__ = ["DEFAULT_KERNEL_SCALES", "ESTIMATORS", "bandwidth_heuristic", "coral", "dann_alpha", "grad_reverse", "hits_to_image", "mmd", "ShowerFeatures", "shower_features"]
