"""Checkpoints of a fit: one file (or in-memory state) after every epoch of every stage."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..io._atomic import atomic_path

__all__ = ["Checkpoint", "checkpoint_files", "checkpoint_name", "read_checkpoint", "write_checkpoint"]

_NAME = re.compile(r"^(\d{3,})_([a-z_]+)_e(\d+)\.pt$")


@dataclass
class Checkpoint:
    """The model after ``epoch`` (1-based, counted within ``stage``) of one stage of a fit.

    ``path`` is the checkpoint file (fit with a ``checkpoint_dir``), else ``state`` holds the
    model's state_dict in memory.
    """

    stage: str
    epoch: int
    path: Path | None
    state: dict | None

    def load_into(self, model: nn.Module) -> nn.Module:
        """Loads the weights into ``model`` (same architecture as the fitted one) and returns it."""
        state = self.state if self.state is not None else read_checkpoint(self.path)["model"]
        model.load_state_dict(state)
        return model


def checkpoint_name(unit: int, stage: str, epoch: int) -> str:
    """File name of the ``unit``-th epoch of a fit (1-based over all stages), so names sort in order."""
    return f"{unit:03d}_{stage}_e{epoch}.pt"


def checkpoint_files(folder: Path) -> list[Path]:
    """The checkpoint files of a fit in ``folder``, in the order they were written."""
    found = [(int(m.group(1)), path) for path in folder.iterdir() if (m := _NAME.match(path.name))]
    return [path for _, path in sorted(found)]


def write_checkpoint(path: Path, payload: dict) -> None:
    """torch.save through a temporary file renamed over ``path``: a crash leaves the previous files intact."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def read_checkpoint(path: Path) -> dict:
    """The payload of a checkpoint file, tensors on the CPU (plain tensors and containers only)."""
    return torch.load(path, map_location="cpu", weights_only=True)
