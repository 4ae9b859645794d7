"""Command-line usage checks shared by every verb: argument types that refuse out-of-range values at parse
time, output paths checked before any work starts, and :class:`UsageError` for what only the command can
check (an unknown corpus, a speech model given to ``translate``...).

A usage error is reported as one ``error: ...`` line with exit status 2 and no traceback; anything else that
escapes a command is a bug and keeps its traceback (see ``asr_s2s.cli.main``). New flags reuse these types::

    p.add_argument("--beam", type=positive_int, default=1)
    p.add_argument("--ctc-weight", type=unit_interval, default=0.3)
    p.add_argument("--report", type=output_dir)
"""

from __future__ import annotations

import argparse
import math
import os
import re
from pathlib import Path
from typing import Callable


class UsageError(Exception):
    """Bad usage the parser cannot see: the message names the argument or file and the cause (one line)."""


def one_line(message: object) -> str:
    """Collapse a message to one line: a usage error is reported on exactly one line of stderr."""
    return " ".join(str(message).split())


# ---- numbers ------------------------------------------------------------------------------------------
def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (beam sizes, batch sizes, thread and repeat counts)."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is out of range: must be an integer >= 1")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is out of range: must be an integer >= 0")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value:g} is out of range: must be > 0")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (an LM weight)."""
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value:g} is out of range: must be >= 0")
    return value


def finite_float(text: str) -> float:
    """Any finite number (a length bonus, which may be a penalty)."""
    return _float(text)


def unit_interval(text: str) -> float:
    """A number in [0, 1] (weights, shares)."""
    value = _float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value:g} is out of range: must be between 0 and 1")
    return value


def int_range(low: int, high: int) -> Callable[[str], int]:
    """An integer in [low, high] (e.g. an ONNX opset)."""

    def check(text: str) -> int:
        value = _int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range: must be between {low} and {high}")
        return value

    check.__name__ = f"int_range({low}, {high})"
    return check


def device(text: str) -> str:
    """A torch device name: cpu, cuda, cuda:N or mps (whether it is present is the loader's question)."""
    if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: use cpu, cuda, cuda:N or mps")
    return text


# ---- KEY=VALUE --------------------------------------------------------------------------------------
def key_value(text: str) -> str:
    """``KEY=VALUE`` with a non-empty key (``--option``, ``--set``); the value is parsed by its consumer."""
    key, sep, _ = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return text


def split_key_values(items: list[str]) -> dict[str, str]:
    """``["a=1", "b=x=y"]`` -> ``{"a": "1", "b": "x=y"}`` (items already checked by :func:`key_value`)."""
    return dict((k.strip(), v) for k, _, v in (item.partition("=") for item in items))


# ---- paths --------------------------------------------------------------------------------------------
def _path(text: str) -> Path:
    if "\x00" in text:  # the OS refuses it, with a ValueError from deep inside whatever opens it first
        raise argparse.ArgumentTypeError(f"{text!r}: a path cannot contain a NUL character")
    return Path(text)


def input_file(text: str) -> Path:
    """An existing, readable regular file (a model, a config, a manifest)."""
    path = _path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{path}: no such file")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path}: is a folder, not a file")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"{path}: not readable (permission denied)")
    return path


def text_file(text: str) -> Path:
    """An existing, readable file of text (training text, a vocabulary): as input_file; its content is checked
    where it is read, naming the line at fault."""
    return input_file(text)


def model_file(text: str) -> Path:
    """A model file, or ``default`` for the bundled model."""
    return Path(text) if text == "default" else input_file(text)


def _creatable(path: Path) -> str | None:
    """Why ``path`` could not be created (None when it could): every existing ancestor must be a writable
    folder. Checked without creating anything, so a later refusal of another argument leaves no folder."""
    parent = path.parent
    while not parent.exists():
        if parent == parent.parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is not a folder (Not a directory)"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{parent} is not writable (Permission denied)"
    return None


def folder(text: str) -> Path:
    """A folder to read from that may not exist yet (a data root that downloads fill): not a file, and not
    below one."""
    path = _path(text)
    if path.exists():
        if not path.is_dir():
            raise argparse.ArgumentTypeError(f"{path}: not a folder")
        return path
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{path}: cannot be a folder ({parent} is a file)")
    return path


def output_dir(text: str) -> Path:
    """A folder that exists and is writable, or that can be created (checked before any work starts)."""
    path = _path(text)
    if path.exists():
        if not path.is_dir():
            raise argparse.ArgumentTypeError(f"{path}: output directory is not writable (Not a directory: it is a file)")
        if not os.access(path, os.W_OK | os.X_OK):
            raise argparse.ArgumentTypeError(f"{path}: output directory is not writable (Permission denied)")
        return path
    why = _creatable(path)
    if why:
        raise argparse.ArgumentTypeError(f"{path}: output directory is not writable ({why})")
    return path


def output_file(text: str) -> Path:
    """A file that can be written: not a folder, in a folder that exists or can be created."""
    path = _path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path}: output file is a folder")
    if path.exists() and not os.access(path, os.W_OK):
        raise argparse.ArgumentTypeError(f"{path}: output file is not writable (Permission denied)")
    why = None if path.parent.is_dir() and os.access(path.parent, os.W_OK | os.X_OK) else _creatable(path.parent / "x")
    if why:
        raise argparse.ArgumentTypeError(f"{path}: output file cannot be written ({why})")
    return path


def output_path(text: str) -> Path:
    """A file or a folder to be written (which one depends on another option): its folder must exist and be
    writable, or be creatable. The command checks the rest with output_file or output_dir."""
    path = _path(text)
    why = _creatable(path)
    if why:
        raise argparse.ArgumentTypeError(f"{path}: cannot be written ({why})")
    return path


__all__ = ["UsageError", "one_line", "positive_int", "non_negative_int", "positive_float", "unit_interval", "int_range",
           "device", "key_value", "split_key_values", "input_file", "model_file", "folder", "output_dir", "output_file",
           "output_path"]
