"""Helpers shared by the corpus modules: manifest / TSV writing, durations, the "already prepared" stamp."""

from __future__ import annotations

import json
import os
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Mapping

import soundfile as sf

from ..atomic import atomic_write_lines

STAMP = ".prepared.json"


def default_data_dir() -> Path:
    """The local-data root: ``$ASR_S2S_DATA`` if set, else ``./data`` (the project's data/ folder)."""
    return Path(os.environ.get("ASR_S2S_DATA", "data"))


def durations(paths: list[Path], workers: int = 4) -> list[float]:
    """Durations in seconds from the file headers (``soundfile.info``), in the order of *paths*."""

    def one(p: Path) -> float:
        info = sf.info(str(p))
        return info.frames / info.samplerate

    if len(paths) < 64:
        return [one(p) for p in paths]
    with ThreadPoolExecutor(workers) as ex:
        return list(ex.map(one, paths, chunksize=64))


def check_fractions(corpus: str, dev_fraction: float, test_fraction: float) -> None:
    """Dev and test carved from one pool must leave some of it for training."""
    if dev_fraction + test_fraction >= 1.0:
        raise ValueError(f"{corpus}: dev_fraction + test_fraction must be below 1, not {dev_fraction + test_fraction}")


def clean_text(text: str, *, lowercase: bool = False) -> str:
    """NFC-normalise, turn every kind of whitespace (tabs, NBSP, U+202F ...) into one space, strip."""
    text = unicodedata.normalize("NFC", text)
    text = " ".join(text.split())
    return text.lower() if lowercase else text


_atomic_write = atomic_write_lines


def write_manifest(path: Path, entries: Iterable[Mapping]) -> Path:
    """Write JSON lines (``audio_filepath``, ``duration``, ``text`` first, then the optional keys)."""
    order = ("audio_filepath", "duration", "text", "id", "speaker", "offset")

    def line(e: Mapping) -> str:
        d = {k: e[k] for k in order if k in e and e[k] is not None}
        d.update({k: v for k, v in e.items() if k not in d and v is not None})
        return json.dumps(d, ensure_ascii=False)

    _atomic_write(path, (line(e) for e in entries))
    return path


def write_tsv(path: Path, pairs: Iterable[tuple[str, str]]) -> Path:
    _atomic_write(path, (f"{s}\t{t}" for s, t in pairs))
    return path


def read_manifest(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _norm(obj):
    return json.loads(json.dumps(obj, default=str, sort_keys=True))


def is_prepared(out_dir: Path, key: Mapping) -> dict[str, Path] | None:
    """The outputs of an earlier run with the same *key* (corpus, source root, options), else None.

    Lets ``prepare`` return at once on a re-run; any change of options or a missing output file
    makes it prepare again.
    """
    try:
        stamp = json.loads((out_dir / STAMP).read_text())
        if stamp.get("key") != _norm(key):
            return None
        paths = {split: out_dir / name for split, name in stamp["outputs"].items()}
    except (OSError, ValueError, KeyError, AttributeError):
        return None
    return paths if all(p.is_file() for p in paths.values()) else None


def mark_prepared(out_dir: Path, key: Mapping, outputs: Mapping[str, Path]) -> None:
    stamp = {"key": _norm(key), "outputs": {k: Path(v).name for k, v in outputs.items()}}
    (out_dir / STAMP).write_text(json.dumps(stamp, indent=1, sort_keys=True, ensure_ascii=False) + "\n")


def clear_stamp(out_dir: Path) -> None:
    (out_dir / STAMP).unlink(missing_ok=True)


def summarize(manifests: Mapping[str, Path]) -> dict[str, dict[str, float]]:
    """``{split: {"utterances": n, "hours": h, "speakers": k}}`` for JSON-lines manifests."""
    out = {}
    for split, p in manifests.items():
        rows = read_manifest(p)
        out[split] = {
            "utterances": len(rows),
            "hours": sum(r["duration"] for r in rows) / 3600.0,
            "speakers": len({r.get("speaker") for r in rows if r.get("speaker") is not None}),
        }
    return out
