"""Shared fixtures: where the real corpora live (through ASR_S2S_DATA) and small slices of them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    """The local-data root: $ASR_S2S_DATA, else the project's data/ folder."""
    return Path(os.environ.get("ASR_S2S_DATA", REPO / "data"))


@pytest.fixture(scope="session")
def fsdd_dir() -> Path:
    d = data_root() / "fsdd" / "recordings"
    if not d.is_dir():
        pytest.skip(f"FSDD not found under {d} (set ASR_S2S_DATA)")
    return d


@pytest.fixture(scope="session")
def an4_dir() -> Path:
    d = data_root() / "an4" / "an4"
    if not d.is_dir():
        pytest.skip(f"AN4 not found under {d} (set ASR_S2S_DATA)")
    return d


@pytest.fixture(scope="session")
def fsdd_files(fsdd_dir: Path) -> list[Path]:
    """A few dozen real FSDD recordings: every digit, two speakers, sorted for determinism."""
    files = sorted(fsdd_dir.glob("*.wav"))
    picked = [f for f in files if f.stem.split("_")[1] in ("jackson", "theo") and int(f.stem.split("_")[2]) < 2]
    return picked


@pytest.fixture(scope="session")
def model_path(fsdd_dir: Path, request, tmp_path_factory) -> Path:
    """A small FSDD model trained once (kept in pytest's cache between runs when the cache is on)."""
    from small_model import small_fsdd_model

    cache = getattr(request.config, "cache", None)
    folder = Path(cache.mkdir("asr_s2s_small_model")) if cache is not None else tmp_path_factory.mktemp("small_model")
    return small_fsdd_model(data_root(), folder)
