"""A small Vision Transformer for detector occupancy maps (DQM), split into a feature extractor and a classifier head.

The encoder is timm's ``VisionTransformer`` (randomly initialised: no pretrained weights, nothing is
downloaded) with a patch embedding for small maps of one or a few channels: the HCAL map of one
depth is 72 iphi x 84 ieta cells, and its default 12 x 12 patches give 6 x 7 = 42 tokens plus the
class token. Maps whose size is not a multiple of the patch are zero-padded at the bottom and the
right (zero = no hits) up to the next multiple, so the last row and column of patches are partly padding.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import _maps

__all__ = ["OccupancyViT"]

_INSTALL_HINT = 'pip install "sim2real_fast[vit]"'


def _vision_transformer() -> type[nn.Module]:
    """timm's VisionTransformer class, or an ImportError with the install hint.

    Any exception on import counts as missing: timm imports torchvision, and a torchvision built for
    another torch raises RuntimeError ("operator torchvision::nms does not exist"), not ImportError.
    """
    try:
        from timm.models.vision_transformer import VisionTransformer
    except Exception as error:  # noqa: BLE001 - see the docstring
        raise ImportError(
            f"OccupancyViT needs timm (with a torchvision built for torch {torch.__version__}): "
            f"{_INSTALL_HINT} ({type(error).__name__}: {error})"
        ) from error
    return VisionTransformer


class OccupancyViT(nn.Module):
    """Classifier of (N, C, H, W) occupancy maps (hits or rates per cell) -> (N, n_classes) logits.

    Inputs may also come flat, (N, C * H * W) in channel-major row-major order (the ``hcal``
    geometry's flat order, as :func:`sim2real_fast.simulate.dqm_maps` gives them). With ``log_scale``
    the maps are normalised inside as log1p(max(x, 0)) / ``log_scale`` (counts: log1p(2000 hits) = 7.6);
    without it they are used as given (e.g. rates already in [0, 1]). ``features(maps)`` gives the
    (N, n_features = embed_dim) class token after the final LayerNorm, on which domain-adaptation
    losses act; ``head(features)`` gives the logits; ``forward = head o features``.

    Args:
        image_size: (H, W) of one map, e.g. (72, 84) for the HCAL (iphi, ieta) grid.
        in_channels: channels C (HCAL: 1 for one depth, 7 for all).
        n_classes: number of classes (2: good, faulty).
        patch_size: (ph, pw) or one int; H and W are zero-padded up to multiples of it.
        embed_dim: token width = n_features; a multiple of ``num_heads``.
        depth: number of transformer blocks.
        num_heads: attention heads per block.
        mlp_ratio: hidden width of the blocks' MLP / embed_dim.
        dropout: dropout after the position embedding, in attention and in the blocks' projections.
        log_scale: divisor of log1p(x), or None to feed the maps unchanged.

    Raises:
        ImportError: timm cannot be imported (install hint: ``pip install "sim2real_fast[vit]"``).
    """

    def __init__(
        self,
        image_size: tuple[int, int] = (72, 84),
        in_channels: int = 1,
        n_classes: int = 2,
        *,
        patch_size: int | tuple[int, int] = 12,
        embed_dim: int = 64,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        log_scale: float | None = None,
    ) -> None:
        super().__init__()
        self.image_size = _maps.pair("OccupancyViT", "image_size", image_size)
        self.patch_size = _maps.pair("OccupancyViT", "patch_size", patch_size)
        for name, value in (
            ("in_channels", in_channels), ("n_classes", n_classes), ("embed_dim", embed_dim),
            ("depth", depth), ("num_heads", num_heads),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"OccupancyViT: {name} must be a positive int, got {value!r}")
        if embed_dim % num_heads:
            raise ValueError(f"OccupancyViT: embed_dim ({embed_dim}) must be a multiple of num_heads ({num_heads})")
        if not mlp_ratio > 0:
            raise ValueError(f"OccupancyViT: mlp_ratio must be > 0, got {mlp_ratio!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"OccupancyViT: dropout must be in [0, 1), got {dropout!r}")
        if log_scale is not None and not log_scale > 0:
            raise ValueError(f"OccupancyViT: log_scale must be > 0 or None, got {log_scale!r}")
        vision_transformer = _vision_transformer()
        self.in_channels, self.n_classes, self.n_features = in_channels, n_classes, embed_dim
        self.log_scale = None if log_scale is None else float(log_scale)
        #: (rows, cols) of the zero-padded map that the encoder sees
        self.padded_size = tuple(math.ceil(s / p) * p for s, p in zip(self.image_size, self.patch_size))
        self.encoder = vision_transformer(
            img_size=self.padded_size,
            patch_size=self.patch_size,
            in_chans=in_channels,
            num_classes=0,  # no timm head: features() ends at the normed class token
            global_pool="token",
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            pos_drop_rate=dropout,
            proj_drop_rate=dropout,
            attn_drop_rate=dropout,
        )
        self.head = nn.Linear(embed_dim, n_classes)

    @property
    def n_tokens(self) -> int:
        """Patches per map (the class token not counted)."""
        return math.prod(s // p for s, p in zip(self.padded_size, self.patch_size))

    def features(self, maps: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) or (N, C * H * W) occupancy -> (N, n_features)."""
        x = _maps.prepared(self, maps)
        return self.encoder.forward_head(self.encoder.forward_features(x), pre_logits=True)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) or (N, C * H * W) occupancy -> (N, n_classes) logits."""
        return self.head(self.features(maps))

    def extra_repr(self) -> str:
        return (
            f"image_size={self.image_size}, patch_size={self.patch_size}, padded_size={self.padded_size}, "
            f"n_tokens={self.n_tokens}, log_scale={self.log_scale}"
        )
