"""One owner per experiment folder: an exclusive advisory lock on ``EXPDIR/.asr-s2s.lock``.

``train`` and the writing stages of a recipe hold it for as long as they run. The lock is ``flock`` (Windows:
``msvcrt.locking``) on an open file, so the operating system drops it when the process dies however it dies
(``kill -9``, power loss of a network client aside): ``--resume`` after a crash needs no cleanup. A second
process asking for the same folder gets :class:`FolderLockedError` at once, naming the folder and the PID
that holds it (written into the lock file by the holder).

Within one process the lock is re-entrant (a recipe holds its folder and calls ``train`` on it): flock
locks belong to an open file, so a second ``open`` in the same process would otherwise lock itself out.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from .usage import UsageError

LOCK_NAME = ".asr-s2s.lock"


class FolderLockedError(UsageError):
    """Another process holds the folder (the message names the folder and that process)."""


_held: dict[str, tuple[IO[bytes], int]] = {}  # resolved folder -> (open lock file, nesting depth)
_guard = threading.Lock()


def _try_lock(f: IO[bytes]) -> bool:
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        import msvcrt

        try:
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    import fcntl

    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def holder(folder: str | os.PathLike) -> str:
    """What the lock file says about its (last) holder: ``pid 1234 on host, started as: ...``."""
    try:
        text = (Path(folder) / LOCK_NAME).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        text = ""
    # Empty while the holder is between taking the lock and writing its PID (microseconds).
    return text.splitlines()[0] if text else "another process (it is just starting)"


def acquire(folder: str | os.PathLike) -> None:
    """Take (or re-enter) the lock on ``folder``, creating the folder. Raises FolderLockedError when another
    process holds it, and OSError when the folder cannot be created or written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = str(folder.resolve())
    with _guard:
        if key in _held:
            f, depth = _held[key]
            _held[key] = (f, depth + 1)
            return
        # "a+b": never truncates before the lock is ours, so a refused process cannot erase the holder's PID.
        f = open(folder / LOCK_NAME, "a+b")
        if not _try_lock(f):
            f.close()
            raise FolderLockedError(f"{folder}: the experiment folder is in use by {holder(folder)}; "
                                    "wait for that run to end (or stop it) before starting another on this folder")
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}, started as: {' '.join(sys.argv)[:300]}\n".encode())
        f.flush()
        _held[key] = (f, 1)


def release(folder: str | os.PathLike) -> None:
    """Leave the lock once; the last release closes the file, which unlocks it. The file stays (removing it
    would let a waiting process lock a file that a third one then re-creates beside it)."""
    key = str(Path(folder).resolve())
    with _guard:
        f, depth = _held[key]
        if depth > 1:
            _held[key] = (f, depth - 1)
            return
        del _held[key]
        f.close()


@contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """``with folder_lock(out): ...`` holds ``out`` exclusively for the block (see the module doc)."""
    acquire(folder)
    try:
        yield Path(folder)
    finally:
        release(folder)


def is_held(folder: str | os.PathLike) -> bool:
    """Whether this process holds the lock on ``folder``."""
    return str(Path(folder).resolve()) in _held


__all__ = ["FolderLockedError", "LOCK_NAME", "acquire", "release", "folder_lock", "holder", "is_held"]
