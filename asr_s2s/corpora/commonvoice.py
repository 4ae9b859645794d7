"""Mozilla Common Voice, from an extracted release folder of one language (CC0).

Common Voice cannot be fetched automatically (the download needs an accepted licence and an e-mail
address at https://commonvoice.mozilla.org/datasets). Download one language and extract it, e.g. to
``data/commonvoice/cv-corpus-17.0-2024-03-15/<lang>/``; that folder holds::

    clips/*.mp3
    train.tsv  dev.tsv  test.tsv      tab-separated, header row: client_id, path, sentence, ...
    clip_durations.tsv                (newer releases) clip<TAB>duration[ms]

The release folder is looked up under ``data_dir/commonvoice/`` (``language=`` picks one when
several are there), or given directly with ``release_dir=``.

Manifests: ``train.tsv`` -> train, ``dev.tsv`` -> dev, ``test.tsv`` -> test (each when present);
``speaker`` = ``client_id``, ``id`` = the clip name without ``.mp3``. Durations come from
``clip_durations.tsv`` when it lists the clip, else from the MP3 header (``soundfile.info``). Rows
whose clip is missing or whose sentence is empty are skipped (counted in a warning).

Transcripts keep Common Voice's case and punctuation by default; only Unicode NFC and whitespace are
normalised. ``lowercase=True`` lowercases; ``strip_punctuation=True`` removes Unicode punctuation
(category P*) except apostrophes (``'`` and ``’``, which belong to words like *don't*).
"""

from __future__ import annotations

import csv
import logging
import unicodedata
from pathlib import Path

from .common import clean_text, durations, is_prepared, mark_prepared, write_manifest
from .download import SOURCES

log = logging.getLogger(__name__)

NAME = "commonvoice"
SPLITS = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}
_KEEP = {"'", "\u2019"}


def normalize(text: str, *, lowercase: bool = False, strip_punctuation: bool = False) -> str:
    """Common Voice transcript normalisation (see the module docstring)."""
    text = unicodedata.normalize("NFC", text)
    if strip_punctuation:
        text = "".join(" " if unicodedata.category(c).startswith("P") and c not in _KEEP else c for c in text)
    return clean_text(text, lowercase=lowercase)


def find_release(data_dir: Path, language: str | None = None) -> Path:
    """The one release folder (with ``clips/`` and ``train.tsv``) under ``data_dir/commonvoice/``."""
    base = Path(data_dir) / SOURCES[NAME].dirname
    cands = set()
    for pattern in (".", "*", "*/*", "*/*/*"):
        for d in [base] if pattern == "." else base.glob(pattern):
            if d.is_dir() and (d / "clips").is_dir() and (d / "train.tsv").is_file():
                cands.add(d)
    if language is not None:
        cands = {d for d in cands if d.name == language}
    if not cands:
        what = f" for language {language!r}" if language else ""
        raise FileNotFoundError(f"commonvoice: no release folder{what} under {base}. {SOURCES[NAME].note}")
    if len(cands) > 1:
        listing = ", ".join(str(d) for d in sorted(cands))
        raise ValueError(f"commonvoice: several releases under {base} ({listing}); pass language= or release_dir=")
    return cands.pop()


def _read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def _clip_durations(release: Path) -> dict[str, float]:
    p = release / "clip_durations.tsv"
    if not p.is_file():
        return {}
    out = {}
    for row in _read_tsv(p):
        try:
            out[row["clip"]] = float(row["duration[ms]"]) / 1000.0
        except (KeyError, TypeError, ValueError):
            continue
    return out


def prepare(
    data_dir: Path,
    out_dir: Path,
    *,
    language: str | None = None,
    release_dir: Path | None = None,
    lowercase: bool = False,
    strip_punctuation: bool = False,
    force: bool = False,
    download: bool = False,  # accepted for a uniform interface; Common Voice is never downloaded
) -> dict[str, Path]:
    """Write ``out_dir/{train,dev,test}.jsonl`` from a Common Voice release folder."""
    release = Path(release_dir) if release_dir is not None else find_release(Path(data_dir), language)
    if not (release / "train.tsv").is_file():
        raise FileNotFoundError(f"commonvoice: {release / 'train.tsv'} not found")
    out_dir = Path(out_dir)
    key = {"corpus": NAME, "root": str(release.resolve()), "lowercase": lowercase, "strip_punctuation": strip_punctuation}
    if not force and (done := is_prepared(out_dir, key)):
        return done
    known = _clip_durations(release)
    clips = release / "clips"
    out = {}
    for split, name in SPLITS.items():
        tsv = release / name
        if not tsv.is_file():
            (out_dir / f"{split}.jsonl").unlink(missing_ok=True)
            continue
        rows, skipped = [], 0
        for r in _read_tsv(tsv):
            clip = (r.get("path") or "").strip()
            text = normalize(r.get("sentence") or "", lowercase=lowercase, strip_punctuation=strip_punctuation)
            audio = clips / clip
            if not clip or not text or not audio.is_file():
                skipped += 1
                continue
            rows.append({"audio_filepath": str(audio.resolve()), "text": text, "id": Path(clip).stem,
                         "speaker": r.get("client_id") or None, "_clip": clip})
        if skipped:
            log.warning("commonvoice: %s: %d row(s) skipped (missing clip or empty sentence)", tsv, skipped)
        unknown = [r for r in rows if r["_clip"] not in known]
        for r, d in zip(unknown, durations([Path(r["audio_filepath"]) for r in unknown])):
            r["duration"] = d
        for r in rows:
            r["duration"] = round(known.get(r.pop("_clip"), r.get("duration", 0.0)), 4)
        out[split] = write_manifest(out_dir / f"{split}.jsonl", rows)
    mark_prepared(out_dir, key, out)
    return out
