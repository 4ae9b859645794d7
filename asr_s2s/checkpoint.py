"""Safe, atomic checkpoint files.

`save_checkpoint` never leaves a half-written file under the final name: it writes a temporary
file in the same folder, fsyncs it, and `os.replace`s it over the target (atomic on POSIX).
`load_checkpoint` uses `torch.load(weights_only=True)`: only tensors and plain containers/scalars
are unpickled, so a file that carries pickled code is refused instead of executed.

The model file payload (docs/interfaces.md)::

    {"format": "asr-s2s/1", "config": dict, "tokenizer": dict, "src_tokenizer": dict | None,
     "features": dict | None, "cmvn": {"mean": Tensor, "std": Tensor} | None,
     "model": state_dict, "meta": dict}
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

FORMAT = "asr-s2s/1"
# Model files ("asr-s2s/N") and the trainer's resumable state ("asr-s2s-train/N", train.TRAIN_FORMAT).
FORMAT_FAMILIES = ("asr-s2s", "asr-s2s-train")


class CheckpointError(Exception):
    """A checkpoint could not be written or read; the message names the file and the cause."""


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Atomically write `payload` (tensors, dicts, lists, str/int/float/bool/None) to `path`."""
    path = Path(path)
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: payload must be a dict, got {type(payload).__name__}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, Exception):
            raise CheckpointError(f"{path}: could not write checkpoint: {e}") from e
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint dict on the CPU. Raises CheckpointError naming the file when it is missing,
    truncated / corrupt, carries pickled code or objects, or is not a dict."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only refuses any global that is not a tensor/plain type: never execute it.
        # torch's first line suggests retrying with weights_only=False; name the refused global instead.
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        first = next((ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln), lines[0] if lines else type(e).__name__)
        raise CheckpointError(
            f"{path}: refused to load: the file carries pickled code or objects that are not plain "
            f"tensors/containers (loaded with weights_only=True; an untrusted or foreign file?): {first}") from e
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: expected a dict payload, got {type(payload).__name__}")
    fmt = payload.get("format")
    if fmt is not None and not (isinstance(fmt, str) and fmt.split("/")[0] in FORMAT_FAMILIES):
        raise CheckpointError(f"{path}: unsupported checkpoint format {fmt!r} (expected {FORMAT!r})")
    return payload

