"""One writer per output folder: ``with output_lock(folder, "sim2real run"): ...`` refuses a second process.

The lock is an advisory ``fcntl.flock`` on ``folder/.sim2real.lock``, released by the kernel when the
holder exits, so a killed run leaves no stale lock behind and ``--resume`` can follow at once. The
file keeps the holder's pid and command for the message a second process gets.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

__all__ = ["FolderBusyError", "output_lock"]

LOCK_NAME = ".sim2real.lock"


class FolderBusyError(OSError):
    """Another process holds the output folder's lock."""


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike, command: str) -> Iterator[Path]:
    """Hold ``folder``'s lock for the block; FolderBusyError naming the holder if taken. A folder the lock
    created is removed again if the block wrote nothing into it (a run stopped by bad input)."""
    import fcntl

    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise FolderBusyError(f"{folder}: {holder} is writing there; wait for it to finish, or use another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{command} (pid {os.getpid()})")
        handle.flush()
        yield path
    finally:
        handle.close()
        if created and [p.name for p in folder.iterdir()] == [LOCK_NAME]:  # a run that wrote nothing leaves nothing
            path.unlink()
            folder.rmdir()
