"""Building a config dataclass from a plain dict (YAML, a checkpoint) that refuses keys it does not know."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def from_dict_strict(cls: type[T], d: dict[str, Any]) -> T:
    """cls(**d), with a ValueError naming every key of `d` that is not a field of `cls` (a typo, or a file from
    another version), instead of a TypeError about one of them."""
    unknown = set(d) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    return cls(**d)
