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
import pickletools
import struct
import zipfile
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_open

FORMAT = "asr-s2s/1"
# Model files ("asr-s2s/N"), the trainer's resumable state ("asr-s2s-train/N", train_checkpoint.TRAIN_FORMAT) and language
# models ("asr-s2s-lm/N", lm.LM_FORMAT).
FORMAT_FAMILIES = ("asr-s2s", "asr-s2s-train", "asr-s2s-lm")


class CheckpointError(Exception):
    """A checkpoint could not be written or read; the message names the file and the cause."""


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Atomically write `payload` (tensors, dicts, lists, str/int/float/bool/None) to `path`."""
    path = Path(path)
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: payload must be a dict, got {type(payload).__name__}")
    try:
        with atomic_open(path, "wb", fsync=True) as f:
            torch.save(payload, f)
    except Exception as e:
        raise CheckpointError(f"{path}: could not write checkpoint: {e}") from e
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
        # weights_only refuses any global that is not a tensor / plain type, so nothing ran. Tell a
        # file that smuggles code apart from a merely damaged one by listing its globals (read-only).
        suspects = _foreign_globals(path)
        if suspects or "GLOBAL" in str(e.__context__ or e):
            what = ", ".join(suspects) if suspects else _last_line(e.__context__ or e)
            raise CheckpointError(
                f"{path}: refused to load: the file carries pickled code or objects ({what}); only tensors "
                f"and plain containers are accepted (weights_only=True). Is it from an untrusted source?") from e
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint (unreadable pickle: "
                              f"{_last_line(e.__context__ or e)})") from e
    # A file that is not a checkpoint at all (text, audio) reaches the legacy unpickler, which fails in many
    # ways: "pop from empty list" (IndexError) for a text file, struct.error, TypeError...
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, IndexError, TypeError,
            AttributeError, struct.error) as e:
        why = str(e).strip() or "the file is empty or cut short"
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({type(e).__name__}: {why})") from e
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: expected a dict payload, got {type(payload).__name__}")
    fmt = payload.get("format")
    if fmt is not None and not (isinstance(fmt, str) and fmt.split("/")[0] in FORMAT_FAMILIES):
        raise CheckpointError(f"{path}: unsupported checkpoint format {fmt!r} (expected {FORMAT!r})")
    return payload



_SAFE_MODULES = ("torch", "collections", "numpy.core.multiarray", "numpy._core.multiarray", "numpy")


def _last_line(e: BaseException) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__


def _foreign_globals(path: Path) -> list[str]:
    """Best-effort static scan (pickletools never executes anything) for globals a checkpoint should
    not reference, e.g. posix.system. Looks at data.pkl inside a torch zip file, else the raw file."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                name = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
                data = z.read(name) if name else b""
        else:
            data = path.read_bytes()
    except (OSError, zipfile.BadZipFile, KeyError):
        return []
    found, strings = [], []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("GLOBAL", "INST"):
                found.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:  # a truncated / garbage stream: keep what was found so far
        pass
    bad = [g for g in found if not g.startswith(_SAFE_MODULES) and g not in ("builtins.set", "builtins.frozenset")]
    return sorted(set(bad))
