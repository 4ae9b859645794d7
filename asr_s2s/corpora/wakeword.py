"""Picovoice wake-word benchmark: about 2,300 crowd-sourced clips of six wake words, 50+ speakers.

Source: https://github.com/Picovoice/wake-word-benchmark (folder ``audio/``, Apache-2.0). Layout
(``data_dir/wakeword/``, or the extracted GitHub archive one level below)::

    audio/<keyword>/<name>.flac   keyword in: alexa, computer, jarvis, smart mirror, snowboy, view glass;
                                  <name> is a number (alexa) or a random UUID (the other five)
    audio/multiple_keywords.flac  one long file without a transcript: not used

The transcript is the folder name, lowercase (``smart mirror``). Some files in the source do not
decode (14 under ``alexa/`` in the pinned commit: "flac decoder lost sync"); every file is decoded
once when preparing, and a file that fails is skipped, counted, and named in the log and in
``out_dir/skipped.tsv``: never a crash in the middle of training.

Splits. The benchmark publishes no speaker ids, so no split here can promise new speakers. Files
are ranked per keyword (numbered files by number, in the order they were collected, so that one
speaker's takes sit together; UUID-named files by name, which is random), and the last
``test_fraction`` of each keyword's ranks are test, the ``dev_fraction`` before them dev (10% each by
default), the rest train. For ``alexa`` that keeps most dev and test speakers out of train; for the
other keywords a speaker's takes may fall on both sides: treat wake-word dev/test as new
recordings, not as new speakers.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import soundfile as sf

from .common import _atomic_write, check_fractions, durations, is_prepared, mark_prepared, write_manifest
from .download import Source, find_or_download

log = logging.getLogger(__name__)

NAME = "wakeword"
KEYWORDS = ("alexa", "computer", "jarvis", "smart mirror", "snowboy", "view glass")
_NUMBER = re.compile(r"^\d+$")


def decodes(path: Path) -> str | None:
    """None if *path* decodes to the end, else the decoder's message (why the file is unusable)."""
    try:
        with sf.SoundFile(str(path)) as f:
            while f.read(1 << 16, dtype="int16").size:
                pass
            if f.frames == 0:
                return "no audio frames"
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        return str(exc).strip() or type(exc).__name__
    return None


def split_of(rank: int, count: int, dev_fraction: float, test_fraction: float) -> str:
    """The split of the file at *rank* (0-based, by file number) among *count* files of one keyword:
    the last ``test_fraction`` are test, the ``dev_fraction`` before them dev."""
    n_test, n_dev = round(test_fraction * count), round(dev_fraction * count)
    if rank >= count - n_test:
        return "test"
    return "dev" if rank >= count - n_test - n_dev else "train"


def prepare(
    data_dir: Path,
    out_dir: Path,
    *,
    dev_fraction: float = 0.1,
    test_fraction: float = 0.1,
    download: bool = True,
    source: Source | None = None,
    force: bool = False,
) -> dict[str, Path]:
    """Write ``out_dir/{train,dev,test}.jsonl`` for the wake-word clips that decode; return ``{split: path}``."""
    check_fractions(NAME, dev_fraction, test_fraction)
    root = find_or_download(NAME, data_dir, download_missing=download, source=source)
    audio = root / "audio"
    out_dir = Path(out_dir)
    key = {"corpus": NAME, "root": str(audio.resolve()), "dev_fraction": dev_fraction, "test_fraction": test_fraction}
    if not force and (done := is_prepared(out_dir, key)):
        return done

    rows: dict[str, list[dict]] = {"train": [], "dev": [], "test": []}
    skipped: list[tuple[Path, str]] = []
    folders = [d for d in sorted(audio.iterdir()) if d.is_dir()]
    if not folders:
        raise FileNotFoundError(f"wakeword: no keyword folders under {audio}")
    for folder in folders:
        keyword = " ".join(folder.name.lower().replace("_", " ").split())
        files = [p for p in folder.iterdir() if p.suffix.lower() in (".flac", ".wav")]
        others = sorted(p.name for p in folder.iterdir() if p not in files)
        if others:
            log.warning("wakeword: %d file(s) in %s are not audio (.flac, .wav); not used: %s", len(others), folder, ", ".join(others[:5]))
        files.sort(key=lambda p: (0, int(p.stem), "") if _NUMBER.match(p.stem) else (1, 0, p.stem))
        good = []
        for p in files:
            why = decodes(p)
            if why is None:
                good.append(p)
            else:
                skipped.append((p, why))
        for rank, (p, dur) in enumerate(zip(good, durations(good))):
            part = split_of(rank, len(good), dev_fraction, test_fraction)
            rows[part].append({"audio_filepath": str(p.resolve()), "duration": round(dur, 4), "text": keyword,
                               "id": f"{keyword.replace(' ', '_')}-{p.stem}"})
    if skipped:
        log.warning("wakeword: %d file(s) do not decode and are skipped (listed in %s): %s", len(skipped),
                    out_dir / "skipped.tsv", ", ".join(str(p.relative_to(audio)) for p, _ in skipped[:5])
                    + (" ..." if len(skipped) > 5 else ""))
    out_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(out_dir / "skipped.tsv", (f"{p}\t{why}" for p, why in skipped))
    if not any(rows.values()):
        raise FileNotFoundError(f"wakeword: no decodable <number>.flac clips under {audio}")
    out = {name: write_manifest(out_dir / f"{name}.jsonl", r) for name, r in rows.items()}
    mark_prepared(out_dir, key, out)
    return out
