"""Corpora: download (resumable, verified, safe extraction) and prepare manifests.

Every corpus module has ``prepare(data_dir, out_dir, **options) -> {split: path}``: it finds the
corpus under ``data_dir`` (the local-data root, ``$ASR_S2S_DATA`` or ``./data``), downloads it from
the official URL when there is no local copy (except Common Voice), and writes
``out_dir/{train,dev,test}.jsonl`` (speech; JSON lines with ``audio_filepath`` (absolute),
``duration``, ``text``, ``id``, ``speaker``) or ``.tsv`` (text pairs, ``source<TAB>target``).
A re-run with the same options returns the existing files at once (``force=True`` redoes them).

>>> from asr_s2s.corpora import prepare_corpus
>>> prepare_corpus("an4", None, "exp/an4/data")        # doctest: +SKIP
{'train': PosixPath('exp/an4/data/train.jsonl'), 'dev': PosixPath('exp/an4/data/dev.jsonl')}
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

from . import an4, commonvoice, fsdd, librispeech, tatoeba
from .common import default_data_dir, summarize
from .download import DownloadError, UnsafeArchiveError, download, extract, find_or_download

CORPORA: dict[str, ModuleType] = {
    "fsdd": fsdd,
    "an4": an4,
    "librispeech": librispeech,
    "commonvoice": commonvoice,
    "tatoeba": tatoeba,
}


def prepare_corpus(
    name: str,
    data_dir: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    **opts,
) -> dict[str, Path]:
    """Prepare corpus *name* (a key of :data:`CORPORA`) into *out_dir*; ``data_dir=None`` means
    :func:`default_data_dir`. Options go to the corpus's ``prepare``."""
    if name not in CORPORA:
        raise KeyError(f"unknown corpus {name!r}; known: {', '.join(CORPORA)}")
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    return CORPORA[name].prepare(data_dir, Path(out_dir), **opts)


__all__ = [
    "CORPORA",
    "prepare_corpus",
    "default_data_dir",
    "summarize",
    "download",
    "extract",
    "find_or_download",
    "DownloadError",
    "UnsafeArchiveError",
]
