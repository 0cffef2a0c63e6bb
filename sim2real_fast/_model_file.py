"""The files of trained models (translators, generators): reading a payload and rebuilding the model it holds.

A file is ``torch.save`` of a dict with ``"format"`` (the kind's magic string), ``"version"``,
``"method"``, ``"geometry"``, ``"hparams"`` and ``"state"``; a fit checkpoint holds it under the kind's
key. Every failure raises the kind's error class with one line naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from . import geometry as _geometry

__all__ = ["one_line", "read_payload", "rebuild"]


def one_line(error: Exception) -> str:
    """The first line of an error's message (at most 200 characters), or its type's name."""
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def read_payload(path: str | Path, *, kind: str, magic: str, version: int, error: type[Exception]) -> dict:
    """The ``kind`` payload ("translator", "generator") of a saved file or of a fit checkpoint (under ``kind``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {kind} file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as failure:  # torch.load raises many types on foreign files
        raise error(f"{path}: not a {kind} file (torch.load failed: {one_line(failure)})") from None
    if isinstance(payload, dict) and isinstance(payload.get(kind), dict):
        payload = payload[kind]
    if not isinstance(payload, dict) or payload.get("format") != magic:
        raise error(f"{path}: not a {kind} file (expected one written by {kind.capitalize()}.save "
                    f"or a {kind}'s fit checkpoint)")
    if payload.get("version") != version:
        raise error(f"{path}: {kind} file version {payload.get('version')!r}; this sim2real_fast reads version {version}")
    return payload


def rebuild(path: str | Path, payload: dict, *, kind: str, registry: Mapping[str, type], error: type[Exception],
            method: str | None = None, geometry=None):
    """``registry[method](geometry, **hparams)`` with the payload's state loaded (train mode, on the CPU).

    ``method`` and ``geometry``, when given, must match the file's.
    """
    path = Path(path)
    name = payload.get("method")
    if method is not None and name != method:
        raise error(f"{path}: holds a {name!r} {kind}, expected {method!r}")
    if name not in registry:
        raise error(f"{path}: unknown {kind} method {name!r}; known: {', '.join(sorted(registry))}")
    try:
        stored = _geometry.Geometry.from_dict(payload["geometry"], origin=str(path))
    except (KeyError, TypeError, _geometry.GeometryError) as failure:
        raise error(f"{path}: unreadable geometry: {one_line(failure)}") from None
    if geometry is not None:
        expected = _geometry.get(geometry)
        if stored.to_dict()["layers"] != expected.to_dict()["layers"]:
            raise error(
                f"{path}: a {kind} for geometry {stored.name!r} ({stored.n_cells} cells, layers "
                f"{stored.layer_shapes}), expected {expected.name!r} ({expected.n_cells} cells, layers "
                f"{expected.layer_shapes})"
            )
    try:
        model = registry[name](stored, **payload["hparams"])
        model.load_state_dict(payload["state"])
    except (KeyError, TypeError, ValueError, RuntimeError) as failure:
        raise error(f"{path}: does not rebuild a {name} {kind}: {one_line(failure)}") from None
    return model
