"""Errors of sim2real_fast.io: each subclasses the builtin it refines and names the file."""

from __future__ import annotations

import difflib
from typing import Iterable


class MissingKeyError(KeyError):
    """A tree, branch, histogram or dataset that a file does not have; lists the nearest names."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return self.message


class CorruptFileError(OSError):
    """A file that exists but cannot be read as the format it should be in (corrupt, truncated)."""


class BadEnergyError(ValueError):
    """NaN, infinite or negative hit energies (or NaN labels/incident energies) under bad_energy='error'."""


def missing_key(kind: str, name: str, where: str, available: Iterable[str]) -> MissingKeyError:
    """'<where>: no <kind> <name>; did you mean ...? (available: ...)', nearest names first (case-insensitive)."""
    available = sorted(set(available))
    by_lower = {}
    for candidate in available:
        by_lower.setdefault(candidate.lower(), candidate)  # match case-insensitively, show the real name
    close = [by_lower[c] for c in difflib.get_close_matches(name.lower(), list(by_lower), n=5, cutoff=0.5)]
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    shown = ", ".join(map(repr, available[:20])) + (f", ... ({len(available)} in all)" if len(available) > 20 else "")
    return MissingKeyError(f"{where}: no {kind} {name!r}{hint} (available: {shown or 'none'})")
