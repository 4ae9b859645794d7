"""Atomic file writes: a file is either its old content or its complete new content, never half of one.

Checkpoints, manifests, the feature cache and recipe outputs are read by later runs, other ranks or a
resumed job; a crash (or ``kill -9``) in the middle of a write must not leave a truncated file that
looks complete. Everything is written to a temporary file in the same folder, optionally fsynced, and
``os.replace``d over the target (atomic on POSIX and Windows).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterable, Iterator


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", *, fsync: bool = False, encoding: str | None = None
                ) -> Iterator[IO]:
    """``with atomic_open(p, "w", encoding="utf-8") as f: ...``: *p* appears only if the block completes.

    The file gets the permissions of a normally created one (mkstemp would leave 0600). ``fsync``: flush
    to disk before the rename, for files a crash must not lose (checkpoints)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        text = {"encoding": encoding or "utf-8", "newline": "\n"} if mode == "w" else {}
        with os.fdopen(fd, mode, **text) as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_lines(path: str | os.PathLike, lines: Iterable[str]) -> Path:
    """Write *lines* (each without its newline) as UTF-8 text, one per line."""
    with atomic_open(path, "w") as f:
        for line in lines:
            f.write(line)
            f.write("\n")
    return Path(path)
