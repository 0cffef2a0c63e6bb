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
    path = Path(path)
    payload = read_payload(path)
    name = payload.get("method")
    if method is not None and name != method:
        raise TranslatorFileError(f"{path}: holds a {name!r} translator, expected {method!r}")
    if name not in REGISTRY:
        raise TranslatorFileError(f"{path}: unknown translator method {name!r}; known: {', '.join(sorted(REGISTRY))}")
    try:
        stored = _geometry.Geometry.from_dict(payload["geometry"], origin=str(path))
    except (KeyError, TypeError, _geometry.GeometryError) as error:
        raise TranslatorFileError(f"{path}: unreadable geometry: {error}") from None
    if geometry is not None:
        expected = _geometry.get(geometry)
        if stored.to_dict()["layers"] != expected.to_dict()["layers"]:
            raise TranslatorFileError(
                f"{path}: a translator for geometry {stored.name!r} ({stored.n_cells} cells, layers "
                f"{stored.layer_shapes}), expected {expected.name!r} ({expected.n_cells} cells, layers "
                f"{expected.layer_shapes})"
            )
    cls = REGISTRY[name]
    try:
        translator = cls(stored, **payload["hparams"])
        translator.load_state_dict(payload["state"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise TranslatorFileError(f"{path}: does not rebuild a {name} translator: {first}") from None
    translator.history = list(payload.get("history", []))
    translator.source = path
    return translator.eval()
