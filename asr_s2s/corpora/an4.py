"""CMU AN4 (alphanumeric / census), from the original ``an4_sphere.tar.gz`` layout.

Source: http://www.speech.cs.cmu.edu/databases/an4/an4_sphere.tar.gz (BSD-style licence, keep
``an4/LICENSE``). Layout of the extracted archive (``data_dir/an4/an4/``)::

    etc/an4_train.transcription   <s> TEXT </s> (utt_id)
    etc/an4_test.transcription    TEXT (utt_id)             (no <s>/</s> in the test file)
    wav/an4_clstk/<speaker>/<utt_id>.sph        948 training utterances, 74 speakers
    wav/an4test_clstk/<speaker>/<utt_id>.sph    130 test utterances, 10 speakers

Both line styles are accepted in both files (the parser drops every ``<...>`` token, then takes the
last ``(...)`` group as the utterance id). Audio is found by utterance id among the ``.sph`` files of
the partition's folder; a transcript line without audio is skipped with a warning.

Transcripts are **lowercased** and whitespace is collapsed (``<s> G TWO EIGHTY NINE </s>`` becomes
``g two eighty nine``); nothing else changes (AN4 text is A-Z and spaces only).

Splits:

- **dev** is carved from the training partition, speaker-disjoint and deterministic: about
  ``dev_fraction`` (10%) of the speakers *of each sex* (AN4 speaker ids start with ``f``/``m``) with
  the smallest SHA-1 of the speaker id. For the 74 training speakers that is 7 speakers, listed in
  :data:`DEV_SPEAKERS_74` (checked by the tests). Pass ``dev_speakers=[...]`` to choose them yourself.
- **train** is the rest of the training partition.
- **test** is the official test partition, written only when ``etc/an4_test.transcription`` and
  ``wav/an4test_clstk/`` exist (the shared local copy has no test partition).
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

from .common import clean_text, durations, is_prepared, mark_prepared, write_manifest
from .download import Source, find_or_download

log = logging.getLogger(__name__)

NAME = "an4"
#: Dev speakers chosen by the rule above for the 74-speaker training partition (2 female, 5 male).
DEV_SPEAKERS_74 = ("fbbh", "fsaf2", "mblw", "mcrt", "mdcs2", "mnfe", "mrjc2")

_TAG = re.compile(r"<[^<>]*>")
_LINE = re.compile(r"^(.*?)\s*\(([^()\s]+)\)\s*$")


def parse_transcription(path: Path) -> list[tuple[str, str]]:
    """``[(utt_id, text), ...]`` from a Sphinx transcription file, text lowercased.

    Accepts ``<s> TEXT </s> (id)`` and ``TEXT (id)`` (and any ``<...>`` markers inside the text).
    Blank lines are ignored; a line without ``(id)`` is skipped with a warning.
    """
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, raw in enumerate(f, 1):
            line = raw.strip()
            if not line:
                continue
            m = _LINE.match(line)
            if not m:
                log.warning("an4: %s:%d: no '(utt_id)' in %r; skipped", path, n, line)
                continue
            text = clean_text(_TAG.sub(" ", m.group(1)), lowercase=True)
            out.append((m.group(2), text))
    return out


def pick_dev_speakers(speakers: list[str] | set[str], fraction: float = 0.1) -> list[str]:
    """About *fraction* of the speakers of each sex (first letter), smallest SHA-1 first; sorted."""
    groups: dict[str, list[str]] = {}
    for s in sorted(set(speakers)):
        groups.setdefault(s[:1], []).append(s)
    picked: list[str] = []
    for members in groups.values():
        k = round(fraction * len(members))
        members.sort(key=lambda s: hashlib.sha1(s.encode()).hexdigest())
        picked += members[:k]
    return sorted(picked)


def _entries(transcription: Path, wav_dir: Path) -> list[dict]:
    audio = {p.stem: p for p in wav_dir.glob("*/*.sph")}
    rows, missing = [], 0
    for utt, text in parse_transcription(transcription):
        p = audio.get(utt)
        if p is None:
            missing += 1
            continue
        rows.append({"audio_filepath": str(p.resolve()), "text": text, "id": utt, "speaker": p.parent.name})
    if missing:
        log.warning("an4: %d utterance(s) of %s have no audio under %s; skipped", missing, transcription, wav_dir)
    for r, d in zip(rows, durations([Path(r["audio_filepath"]) for r in rows])):
        r["duration"] = round(d, 4)
    return rows


def prepare(
    data_dir: Path,
    out_dir: Path,
    *,
    dev_fraction: float = 0.1,
    dev_speakers: list[str] | tuple[str, ...] | None = None,
    download: bool = True,
    source: Source | None = None,
    force: bool = False,
) -> dict[str, Path]:
    """Write ``out_dir/{train,dev}.jsonl`` (+ ``test.jsonl`` when the test partition exists)."""
    root = find_or_download(NAME, data_dir, download_missing=download, source=source)
    out_dir = Path(out_dir)
    train_tr, test_tr = root / "etc" / "an4_train.transcription", root / "etc" / "an4_test.transcription"
    train_wav, test_wav = root / "wav" / "an4_clstk", root / "wav" / "an4test_clstk"
    has_test = test_tr.is_file() and test_wav.is_dir()
    key = {
        "corpus": NAME,
        "root": str(root.resolve()),
        "dev_fraction": dev_fraction,
        "dev_speakers": sorted(dev_speakers) if dev_speakers is not None else None,
        "test": has_test,
    }
    if not force and (done := is_prepared(out_dir, key)):
        return done
    if not train_tr.is_file():
        raise FileNotFoundError(f"an4: {train_tr} not found")

    rows = _entries(train_tr, train_wav)
    speakers = {r["speaker"] for r in rows}
    dev = set(dev_speakers) if dev_speakers is not None else set(pick_dev_speakers(speakers, dev_fraction))
    if dev - speakers:
        raise ValueError(f"an4: dev speaker(s) {sorted(dev - speakers)} not in the training partition")
    log.info("an4: dev speakers %s", ", ".join(sorted(dev)))
    out = {
        "train": write_manifest(out_dir / "train.jsonl", [r for r in rows if r["speaker"] not in dev]),
        "dev": write_manifest(out_dir / "dev.jsonl", [r for r in rows if r["speaker"] in dev]),
    }
    if has_test:
        out["test"] = write_manifest(out_dir / "test.jsonl", _entries(test_tr, test_wav))
    else:
        (out_dir / "test.jsonl").unlink(missing_ok=True)  # stale from a copy that had the test partition
    mark_prepared(out_dir, key, out)
    return out
