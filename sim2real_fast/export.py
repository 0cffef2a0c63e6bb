"""Export a trained classifier to TorchScript (C++ libtorch, ROOT) and ONNX (onnxruntime, TMVA SOFIE).

The exported graph is the model's ``forward`` (its input normalisation included: CaloCNN's
log1p(E / MeV), OccupancyViT's optional log1p) followed by a softmax over the classes, so the files
take raw inputs, (N, n_cells) MeV or (N, C, H, W) occupancy as float32, and give (N, n_classes) class
probabilities as float32. The batch dimension is dynamic in both. Everything is exported on the CPU from
a copy of the model in eval mode; the model itself is left as it was.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .io._atomic import atomic_path

__all__ = ["ExportMismatchError", "export_model"]

FORMATS = ("torchscript", "onnx")
SUFFIXES = {"torchscript": ".pt", "onnx": ".onnx"}
ONNX_OPSET = 18
ATOL = 1e-4


class ExportMismatchError(RuntimeError):
    """A reloaded exported file does not reproduce the eager model's outputs."""


class _Probabilities(nn.Module):
    """The exported graph: raw inputs -> model logits -> softmax probabilities (N, n_classes)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(inputs), dim=1)


def export_model(
    model: nn.Module,
    example_inputs: torch.Tensor,
    out_dir: str | os.PathLike,
    *,
    name: str,
    formats: Sequence[str] = FORMATS,
    verify: bool = True,
) -> dict[str, Path]:
    """Write ``<out_dir>/<name>.pt`` (TorchScript) and/or ``<name>.onnx`` (ONNX, opset 18); returns {format: path}.

    Both hold ``softmax(model(inputs), dim=1)``: inputs (N, ...) float32 as the model takes them
    (raw MeV or occupancy), outputs (N, n_classes) probabilities, N free. TorchScript is traced
    (``torch.jit.trace``); ONNX goes through ``torch.onnx.export(dynamo=True)`` (onnxscript), with the
    weights inside the file. Each file is written to a temporary file and renamed, so a file of that
    name is always complete. ``example_inputs`` (a few real events) fix the traced shapes apart from N.

    With ``verify`` every file is reloaded before it is renamed into place (TorchScript with
    ``torch.jit.load``, ONNX with onnxruntime when it is importable, else a warning) and run on
    ``example_inputs`` and on a batch of another size; its outputs must match the eager model's within
    1e-4, else :class:`ExportMismatchError` is raised and the file is not written.
    """
    formats = tuple(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"export_model: formats must be a non-empty subset of {FORMATS}, got {formats!r}")
    if not name or os.sep in name or name.startswith("."):
        raise ValueError(f"export_model: name must be a plain file stem like 'model', got {name!r}")
    if not isinstance(example_inputs, torch.Tensor) or example_inputs.dim() < 2 or len(example_inputs) < 1:
        raise ValueError("export_model: example_inputs must be a tensor (N, ...) with N >= 1 events")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    wrapper = _Probabilities(copy.deepcopy(model).float().cpu()).eval()
    # Two events at least: torch.export specialises a batch of 1 and would fix N = 1.
    example = example_inputs.detach().float().cpu()
    example = torch.cat([example, example]) if len(example) == 1 else example
    batches = [example, torch.cat([example, example[:1]])]  # verified on the example's N and on N + 1
    with torch.no_grad():
        expected = [wrapper(x).numpy() for x in batches]
    paths = {}
    for fmt in formats:
        paths[fmt] = out_dir / f"{name}{SUFFIXES[fmt]}"
        with atomic_path(paths[fmt]) as tmp:  # a file that fails verification never takes the name
            (_write_torchscript if fmt == "torchscript" else _write_onnx)(wrapper, example, tmp)
            if verify:
                _verify(fmt, tmp, batches, expected, model_name=type(model).__name__, destination=paths[fmt])
    return paths


@contextlib.contextmanager
def _torchscript_warnings_off() -> Iterator[None]:
    """Silence what torch.jit says on every call but that does not apply here."""
    with warnings.catch_warnings():
        # torch.jit is deprecated in favour of torch.export, but TorchScript is what libtorch and ROOT load.
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated")
        # The models' shape checks read their fixed feature sizes; the batch size stays free
        # (export_model verifies the file on a second batch size).
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


def _write_torchscript(wrapper: nn.Module, example: torch.Tensor, path: Path) -> None:
    with _torchscript_warnings_off(), torch.no_grad():
        traced = torch.jit.trace(wrapper, example)
        torch.jit.save(traced, str(path))


@contextlib.contextmanager
def _quiet_onnx_registry() -> Iterator[None]:
    """The exporter logs a warning per torchvision op it skips when torchvision is absent: not ours to act on."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _write_onnx(wrapper: nn.Module, example: torch.Tensor, path: Path) -> None:
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings(), torch.no_grad(), _quiet_onnx_registry():
        # torch 2.13's export copies its own pytree specs through a deprecated path; nothing to act on here.
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
        torch.onnx.export(
            wrapper,
            (example,),
            str(path),
            dynamo=True,
            opset_version=ONNX_OPSET,
            input_names=["inputs"],
            output_names=["probabilities"],
            dynamic_shapes=({0: batch},),
            external_data=False,
            verbose=False,
        )


def _verify(
    fmt: str, path: Path, batches: list[torch.Tensor], expected: list[np.ndarray], *, model_name: str, destination: Path
) -> None:
    """Run the file at ``path`` on ``batches``; ExportMismatchError unless it gives ``expected`` within ATOL."""
    run = _load(fmt, path)
    if run is None:
        return
    with torch.no_grad():
        for x, want in zip(batches, expected):
            got = run(x)
            error = float(abs(got - want).max()) if got.shape == want.shape else float("inf")
            if not error <= ATOL:
                raise ExportMismatchError(
                    f"export_model: the {fmt} export of {model_name} gives outputs {got.shape} that differ from "
                    f"the eager model's {want.shape} by up to {error:.3g} (> {ATOL}) on a batch of {len(x)}; "
                    f"{destination} is not written"
                )


def _load(fmt: str, path: Path) -> Callable[[torch.Tensor], np.ndarray] | None:
    """A function running the exported file on the CPU, or None (with a warning) without onnxruntime."""
    if fmt == "torchscript":
        with _torchscript_warnings_off():
            loaded = torch.jit.load(str(path), map_location="cpu")
        return lambda x: loaded(x).detach().numpy()
    try:
        import onnxruntime
    except ImportError:
        warnings.warn("export_model: onnxruntime is not installed, the ONNX file is not verified", stacklevel=4)
        return None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"inputs": x.numpy()})[0]
