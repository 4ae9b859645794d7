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

import argparse
import inspect
import os
from pathlib import Path
from types import ModuleType
from typing import Any

from . import alphanumeric, an4, commonvoice, digit_strings, fsdd, librispeech, tatoeba, wakeword
from .common import default_data_dir, summarize
from .download import DownloadError, UnsafeArchiveError, download, extract, find_or_download

CORPORA: dict[str, ModuleType] = {
    "fsdd": fsdd,
    "digit_strings": digit_strings,
    "an4": an4,
    "librispeech": librispeech,
    "commonvoice": commonvoice,
    "tatoeba": tatoeba,
    "wakeword": wakeword,
    "alphanumeric": alphanumeric,
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


_NOT_OPTIONS = {"data_dir", "out_dir", "source", "sources"}  # positional, or Python objects (download sources)
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def corpus_options(name: str, raw: dict[str, str]) -> dict[str, Any]:
    """``prepare --option KEY=VALUE`` strings -> typed keyword arguments of corpus *name*'s ``prepare``,
    from its signature: bool (true/false/1/0/yes/no), float, int, Path, str, and lists (comma-separated).
    Raises UsageError naming the option for an unknown key or a value of the wrong type."""
    from ..usage import UsageError, unit_interval

    params = {k: p for k, p in inspect.signature(CORPORA[name].prepare).parameters.items() if k not in _NOT_OPTIONS}
    out: dict[str, Any] = {}
    for key, text in raw.items():
        if key not in params:
            raise UsageError(f"prepare {name}: unknown option {key!r}; {name} takes: {', '.join(params)}")
        ann = str(params[key].annotation)
        try:
            if ann.startswith("bool"):
                if text.lower() not in _TRUE | _FALSE:
                    raise ValueError("expected true or false")
                out[key] = text.lower() in _TRUE
            elif key.endswith("_fraction"):
                out[key] = unit_interval(text)
            elif ann.startswith("float"):
                out[key] = float(text)
            elif ann.startswith("int"):
                out[key] = int(text)
            elif ann.startswith("Path"):
                out[key] = Path(text)
            elif ("list" in ann or "tuple" in ann or "Sequence" in ann) and ("," in text or not ann.startswith("str")):
                out[key] = [x.strip() for x in text.split(",") if x.strip()]
            else:
                out[key] = text
        except (ValueError, argparse.ArgumentTypeError) as exc:
            raise UsageError(f"prepare {name}: option {key}={text!r}: {exc}") from None
    return out


__all__ = [
    "CORPORA",
    "corpus_options",
    "prepare_corpus",
    "default_data_dir",
    "summarize",
    "download",
    "extract",
    "find_or_download",
    "DownloadError",
    "UnsafeArchiveError",
]
