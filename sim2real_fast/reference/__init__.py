"""Pure-PyTorch versions of every op: the test oracle, and the fallback without the compiled library.

They are written for clarity, not speed: the MMD builds the full (K, n, m) kernel matrices.
"""

from .coral import coral
from .grad_reverse import grad_reverse
from .hits_to_image import hits_to_image
from .mmd import bandwidth_heuristic, mmd
from .shower_features import shower_features

__all__ = ["bandwidth_heuristic", "coral", "grad_reverse", "hits_to_image", "mmd", "shower_features"]
