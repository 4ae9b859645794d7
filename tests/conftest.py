"""Shared fixtures: where the real corpora live (through ASR_S2S_DATA) and small slices of them.

Without a corpus, `fsdd_dir`, `fsdd_files` and `an4_dir` are the real clips shipped in tests/data (see the
PROVENANCE.md there) and `model_path` is the bundled default model; `fsdd_corpus` and `an4_corpus` skip: they
are for the tests that need a whole corpus (preparing its splits, training a recipe on it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "data"  # a few real clips of each corpus, with their provenance and licenses


def data_root() -> Path:
    """The local-data root: $ASR_S2S_DATA, else the project's data/ folder."""
    return Path(os.environ.get("ASR_S2S_DATA", REPO / "data"))


def fixture_or_corpus(corpus: Path, clips: Path) -> Path:
    """The corpus folder where $ASR_S2S_DATA has it, else the few real clips shipped in tests/data."""
    return corpus if corpus.is_dir() else clips


@pytest.fixture(scope="session")
def fsdd_corpus() -> Path:
    """The whole FSDD corpus's recordings (3000 files), for tests that need all of it: skips without it."""
    d = data_root() / "fsdd" / "recordings"
    if not d.is_dir():
        pytest.skip(f"FSDD not found under {d} (set ASR_S2S_DATA)")
    return d


@pytest.fixture(scope="session")
def fsdd_dir() -> Path:
    """FSDD recordings: the corpus, else tests/data/fsdd/recordings (the 40 clips `fsdd_files` picks)."""
    return fixture_or_corpus(data_root() / "fsdd" / "recordings", FIXTURES / "fsdd" / "recordings")


@pytest.fixture(scope="session")
def an4_corpus() -> Path:
    """The whole AN4 corpus (its an4/ folder), for tests that need all of it: skips without it."""
    d = data_root() / "an4" / "an4"
    if not d.is_dir():
        pytest.skip(f"AN4 not found under {d} (set ASR_S2S_DATA)")
    return d


@pytest.fixture(scope="session")
def an4_dir() -> Path:
    """AN4 in its original layout: the corpus, else tests/data/an4/an4 (three utterances, same layout)."""
    return fixture_or_corpus(data_root() / "an4" / "an4", FIXTURES / "an4" / "an4")


@pytest.fixture(scope="session")
def fsdd_files(fsdd_dir: Path) -> list[Path]:
    """A few dozen real FSDD recordings: every digit, two speakers, sorted for determinism."""
    files = sorted(fsdd_dir.glob("*.wav"))
    picked = [f for f in files if f.stem.split("_")[1] in ("jackson", "theo") and int(f.stem.split("_")[2]) < 2]
    return picked


@pytest.fixture(scope="session")
def model_path(request, tmp_path_factory) -> Path:
    """A small FSDD model trained once (kept in pytest's cache between runs when the cache is on); without the
    FSDD corpus to train it on, the bundled default model (trained on FSDD and AN4)."""
    from small_model import small_fsdd_model

    if not (data_root() / "fsdd" / "recordings").is_dir() and not os.environ.get("ASR_S2S_TEST_MODEL"):
        from asr_s2s.model import default_model_path

        if not default_model_path().exists():
            pytest.skip("no FSDD corpus to train a model on (set ASR_S2S_DATA) and no bundled default model")
        return default_model_path()
    cache = getattr(request.config, "cache", None)
    folder = Path(cache.mkdir("asr_s2s_small_model")) if cache is not None else tmp_path_factory.mktemp("small_model")
    return small_fsdd_model(data_root(), folder)
