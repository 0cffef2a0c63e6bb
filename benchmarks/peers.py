"""Thin adapters to the peer implementations compared in the benchmarks.

Each peer is imported lazily. An adapter returns a callable with the benchmark's convention
(tensors in, 0-dim loss or tensor out), or None when its package cannot be imported;
:func:`unavailable_reason` then says why, for the skip message.

Definitions differ between peers; the adapters feed each the same squared bandwidths so their values
can be checked against :mod:`sim2real_fast.reference` before they are timed:

- pytorch-adapt ``MMDLoss(mmd_type="quadratic")``: kernel ``exp(-d^2 * scale / bandwidth)`` with uniform
  weights, unbiased within a domain. ``bandwidth=1`` and ``kernel_scales = 1 / (2 sigma_k^2)`` give our
  kernels exactly (its default bandwidth, the median of the n x n source distances, is not used).
- geomloss ``SamplesLoss("gaussian", blur=sigma, backend="tensorized")``: one kernel
  ``exp(-d^2 / (2 sigma^2))``, half the biased (V-statistic) MMD^2; the adapter doubles it.
- pytorch-adapt ``CORALLoss``: ``||C_x - C_y||_F^2 / (4 d^2)``, covariances over n - 1, as ours.
- pytorch-adapt ``GradientReversal(weight=alpha)``: identity forward, ``-alpha * grad`` backward.

Installing the peers beside a CPU torch: pytorch-adapt 0.0.83 declares torchvision, whose resolution
replaces torch, but the layers used here never import it. So install without dependencies and add the
import-time ones: ``pip install --no-deps pytorch-adapt==0.0.83 pytorch-metric-learning==1.6.3
torchmetrics==0.9.3 geomloss`` then ``pip install scipy tqdm "setuptools<81"`` (torchmetrics 0.9.3
imports pkg_resources, gone from setuptools 81).
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
from collections.abc import Callable
from types import ModuleType

import torch

#: Distribution name -> module the adapters import.
PEER_MODULES = {"pytorch-adapt": "pytorch_adapt.layers", "geomloss": "geomloss"}

#: Peers that are not benchmarked, and why.
NOT_RUN = {
    "Transfer-Learning-Library (tllib)": "not on PyPI, the only registry reachable here; not installed, not run",
}

Loss = Callable[..., torch.Tensor]


@functools.cache
def _import(module: str) -> tuple[ModuleType | None, str | None]:
    """(module, None) or (None, why it failed). Any import-time error counts as unavailable."""
    try:
        return importlib.import_module(module), None
    except Exception as error:  # noqa: BLE001 - a broken peer install must skip, not crash the suite
        return None, f"{module} is not importable ({type(error).__name__}: {error})"


def unavailable_reason(peer: str) -> str | None:
    """Why the peer distribution ``peer`` (a key of PEER_MODULES) cannot be used, or None if it can."""
    return _import(PEER_MODULES[peer])[1]


def versions() -> dict[str, str]:
    """Each peer's installed version, or why it is not used."""
    report = {}
    for peer in PEER_MODULES:
        reason = unavailable_reason(peer)
        report[peer] = reason or importlib.metadata.version(peer)
    return report | NOT_RUN


def pytorch_adapt_mmd(sigma2: torch.Tensor) -> Loss | None:
    """pytorch-adapt's quadratic multi-kernel MMD^2 with the squared bandwidths ``sigma2`` (K,)."""
    layers, _ = _import(PEER_MODULES["pytorch-adapt"])
    if layers is None:
        return None
    return layers.MMDLoss(kernel_scales=1.0 / (2.0 * sigma2), mmd_type="quadratic", bandwidth=1.0)


def geomloss_mmd(sigma2: float) -> Loss | None:
    """geomloss's single-kernel Gaussian MMD^2 (biased), squared bandwidth ``sigma2``."""
    geomloss, _ = _import(PEER_MODULES["geomloss"])
    if geomloss is None:
        return None
    half_mmd = geomloss.SamplesLoss("gaussian", blur=sigma2**0.5, backend="tensorized")
    return lambda x, y: 2.0 * half_mmd(x, y)


def pytorch_adapt_coral() -> Loss | None:
    """pytorch-adapt's Deep CORAL loss."""
    layers, _ = _import(PEER_MODULES["pytorch-adapt"])
    return None if layers is None else layers.CORALLoss()


def pytorch_adapt_grad_reverse(alpha: float) -> Loss | None:
    """pytorch-adapt's gradient reversal layer with weight ``alpha``."""
    layers, _ = _import(PEER_MODULES["pytorch-adapt"])
    return None if layers is None else layers.GradientReversal(weight=alpha)
