"""Free Spoken Digit Dataset (FSDD): 3000 recordings of the digits 0-9, 6 speakers, 8 kHz WAV.

Source: https://github.com/Jakobovski/free-spoken-digit-dataset (CC BY-SA 4.0). The label is in the
file name ``{digit}_{speaker}_{index}.wav`` (index 0..49); the transcript is the digit as an English
word, lowercase: ``zero`` ... ``nine``.

Local copy: ``data_dir/fsdd/recordings/`` (or the extracted GitHub archive
``data_dir/fsdd/free-spoken-digit-dataset-<commit>/recordings/``); downloaded when absent.

Splits (``split=``):

- ``"official"`` (default): the README's split, index 0-4 of every speaker and digit is **test**
  (6 x 10 x 5 = 300). The README has no dev set; here index 5-9 is **dev** (300) and index 10-49
  **train** (2400). Not speaker-disjoint: every speaker is in every split.
- ``"speaker"``: speaker-disjoint. ``test_speakers`` (default ``("theo",)``) form test,
  ``dev_speakers`` (default ``("nicolas",)``) form dev, all others train (george, jackson, lucas,
  yweweler in the 6-speaker release: 2000 / 500 / 500).

Audio stays 8 kHz; loaders resample (``asr_s2s.audio.load_audio``).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from .common import durations, is_prepared, mark_prepared, write_manifest
from .download import Source, find_or_download

log = logging.getLogger(__name__)

NAME = "fsdd"
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
DEFAULT_TEST_SPEAKERS = ("theo",)
DEFAULT_DEV_SPEAKERS = ("nicolas",)
_NAME_RE = re.compile(r"^(\d)_([A-Za-z0-9]+)_(\d+)$")


def parse_name(path: Path) -> tuple[int, str, int] | None:
    """``(digit, speaker, index)`` from ``{digit}_{speaker}_{index}.wav``, or None for other names."""
    m = _NAME_RE.match(path.stem)
    return (int(m.group(1)), m.group(2), int(m.group(3))) if m else None


def prepare(
    data_dir: Path,
    out_dir: Path,
    *,
    split: str = "official",
    test_speakers: tuple[str, ...] | list[str] = DEFAULT_TEST_SPEAKERS,
    dev_speakers: tuple[str, ...] | list[str] = DEFAULT_DEV_SPEAKERS,
    download: bool = True,
    source: Source | None = None,
    force: bool = False,
) -> dict[str, Path]:
    """Write ``out_dir/{train,dev,test}.jsonl`` for FSDD and return ``{split: path}``."""
    if split not in ("official", "speaker"):
        raise ValueError(f"fsdd: split must be 'official' or 'speaker', not {split!r}")
    root = find_or_download(NAME, data_dir, download_missing=download, source=source)
    rec = root / "recordings"
    out_dir = Path(out_dir)
    test_speakers, dev_speakers = tuple(test_speakers), tuple(dev_speakers)
    key = {"corpus": NAME, "root": str(rec.resolve()), "split": split}
    if split == "speaker":
        key.update(test_speakers=sorted(test_speakers), dev_speakers=sorted(dev_speakers))
    if not force and (done := is_prepared(out_dir, key)):
        return done

    files, labels = [], []
    for p in sorted(rec.glob("*.wav")):
        lab = parse_name(p)
        if lab is None:
            log.warning("fsdd: skipping %s (name is not {digit}_{speaker}_{index}.wav)", p.name)
            continue
        files.append(p)
        labels.append(lab)
    if not files:
        raise FileNotFoundError(f"fsdd: no recordings in {rec}")
    speakers = {s for _, s, _ in labels}
    if split == "speaker":
        unknown = (set(test_speakers) | set(dev_speakers)) - speakers
        if unknown:
            raise ValueError(f"fsdd: unknown speaker(s) {sorted(unknown)}; present: {sorted(speakers)}")
        if set(test_speakers) & set(dev_speakers):
            raise ValueError("fsdd: test_speakers and dev_speakers overlap")
    durs = durations(files)

    splits: dict[str, list[dict]] = {"train": [], "dev": [], "test": []}
    for p, (digit, spk, idx), dur in zip(files, labels, durs):
        if split == "official":
            part = "test" if idx < 5 else "dev" if idx < 10 else "train"
        else:
            part = "test" if spk in test_speakers else "dev" if spk in dev_speakers else "train"
        splits[part].append(
            {"audio_filepath": str(p.resolve()), "duration": round(dur, 4), "text": DIGITS[digit], "id": p.stem, "speaker": spk}
        )
    out = {name: write_manifest(out_dir / f"{name}.jsonl", rows) for name, rows in splits.items()}
    mark_prepared(out_dir, key, out)
    return out
