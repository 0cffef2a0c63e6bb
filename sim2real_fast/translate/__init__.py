"""Image-level sim-to-real translation of calorimeter showers.

A translator maps (N, n_cells) cell energies in MeV of one geometry to showers of the same geometry
as the real detector would read them: non-negative, zero-suppressed, with the total energy kept
within a tolerance. Methods register by name (:data:`REGISTRY`); each is one module here.

>>> from sim2real_fast import simulate, translate
>>> sim = simulate.showers(20_000, seed=0, effects="nominal").images
>>> real = simulate.showers(20_000, seed=1, effects="stress").images
>>> model = translate.CycleGAN("calogan").fit(sim, real, checkpoint_dir="runs/cyclegan")
>>> model.save("cyclegan.pt")
>>> translated = translate.load("cyclegan.pt", method="cyclegan").translate(sim)   # (N, 504) MeV
"""

from __future__ import annotations

from pathlib import Path

from .. import _model_file
from .. import geometry as _geometry
from .base import FILE_FORMAT, REGISTRY, ImagePool, Translator, TranslatorFileError, linear_decay, read_payload
from .base import register
from .cyclegan import CycleGAN  # importing a translator's module registers it
from .data import read_domain, read_layout, write_layout
from .networks import LayeredPatchDiscriminator, LayeredResnetGenerator, ShowerCodec, zero_suppression
from .pix2pix import ConditionalPatchDiscriminator, LayeredUnetGenerator, Pix2Pix
from .simgan import HistoryBuffer, SimGAN, local_adversarial_loss
from .style import StyleTransfer

__all__ = [
    "ConditionalPatchDiscriminator", "CycleGAN", "FILE_FORMAT", "HistoryBuffer", "ImagePool",
    "LayeredPatchDiscriminator", "LayeredResnetGenerator", "LayeredUnetGenerator", "linear_decay", "load",
    "local_adversarial_loss", "Pix2Pix", "read_domain", "read_layout", "read_payload", "register", "REGISTRY",
    "ShowerCodec", "SimGAN", "StyleTransfer", "Translator", "TranslatorFileError", "write_layout",
    "zero_suppression",
]


def load(
    path: str | Path, *, method: str | None = None, geometry: str | _geometry.Geometry | None = None
) -> Translator:
    """The translator saved in ``path`` (by :meth:`Translator.save`, or a fit checkpoint), in eval mode on the CPU.

    ``method`` and ``geometry``, when given, must match the file's. Every failure (not a translator
    file, an unknown or other method, another geometry, weights that do not fit) raises a one-line
    :class:`TranslatorFileError` naming the file.
    """
    payload = read_payload(path)
    translator = _model_file.rebuild(path, payload, kind="translator", registry=REGISTRY, error=TranslatorFileError,
                                     method=method, geometry=geometry)
    translator.history = list(payload.get("history", []))
    translator.source = Path(path)
    return translator.eval()
