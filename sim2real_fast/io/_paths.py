"""Input paths: a file, a list of files, or glob patterns (sorted)."""

from __future__ import annotations

import errno
import glob
import os
from pathlib import Path
from typing import Sequence

PathLike = str | os.PathLike
Paths = PathLike | Sequence[PathLike]

_GLOB_CHARS = set("*?[")


def expand(paths: Paths) -> list[str]:
    """One path, a glob or a list of them -> the files, each glob sorted; missing ones raise FileNotFoundError.

    Only str paths are globbed; os.PathLike paths (pathlib.Path) are taken literally.
    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise ValueError("path: expected a file, a glob or a non-empty list of them, got an empty list")
    files: list[str] = []
    for item in items:
        if not isinstance(item, (str, os.PathLike)):
            raise TypeError(f"path: expected a str or os.PathLike, got {type(item).__name__}")
        text = os.fspath(item)
        if isinstance(item, str) and _GLOB_CHARS & set(text):
            matches = sorted(glob.glob(os.path.expanduser(text)))
            if not matches:
                raise FileNotFoundError(f"no file matches the pattern {text!r}")
            files.extend(matches)
        else:
            files.append(check_file(text))
    return files


def check_file(path: PathLike) -> str:
    """The path as a str; FileNotFoundError naming it when it is not an existing file."""
    text = os.fspath(path)
    file = Path(text).expanduser()
    if not file.exists():
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), text)
    if not file.is_file():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), text)
    return str(file)
