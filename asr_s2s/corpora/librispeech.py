"""LibriSpeech (OpenSLR 12) and mini LibriSpeech (OpenSLR 31), CC BY 4.0.

Layout of the extracted archives (under ``data_dir/librispeech/``)::

    LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac
    LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt   "<utt_id> TEXT" per line

Each subset is one archive ``https://www.openslr.org/resources/{12,31}/<subset>.tar.gz``, verified
against the MD5 that OpenSLR publishes (``md5sum.txt``; values in ``download.SOURCES``) and extracted
next to the others. A local copy of a subset is used when present.

Presets (``preset=``): ``"clean-100"`` (default) = train-clean-100 / dev-clean / test-clean;
``"mini"`` = train-clean-5 / dev-clean-2 and no test split (OpenSLR 31 has none). ``train``,
``dev``, ``test`` override the preset with one subset name or a list (concatenated), or ``()``.

Transcripts are **lowercased** by default (``lowercase=False`` keeps LibriSpeech's upper case);
whitespace is collapsed; apostrophes stay (``that's``). Speaker = the first field of the utterance id.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

from .common import clean_text, durations, is_prepared, mark_prepared, write_manifest
from .download import SOURCES, Source, find_or_download

log = logging.getLogger(__name__)

NAME = "librispeech"
SUBSETS = tuple(k.split("/", 1)[1] for k in SOURCES if k.startswith("librispeech/"))
PRESETS: dict[str, dict[str, tuple[str, ...]]] = {
    "clean-100": {"train": ("train-clean-100",), "dev": ("dev-clean",), "test": ("test-clean",)},
    "mini": {"train": ("train-clean-5",), "dev": ("dev-clean-2",), "test": ()},
}


def read_subset(subset_dir: Path, *, lowercase: bool = True) -> list[dict]:
    """Manifest entries (without durations) for one extracted subset folder, sorted by utterance id."""
    rows = []
    for trans in sorted(subset_dir.glob("*/*/*.trans.txt")):
        with open(trans, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                utt, _, text = line.partition(" ")
                audio = trans.parent / f"{utt}.flac"
                if not audio.is_file():
                    log.warning("librispeech: %s:%d: %s missing; skipped", trans, n, audio.name)
                    continue
                rows.append(
                    {
                        "audio_filepath": str(audio.resolve()),
                        "text": clean_text(text, lowercase=lowercase),
                        "id": utt,
                        "speaker": utt.split("-", 1)[0],
                    }
                )
    rows.sort(key=lambda r: r["id"])
    return rows


def _as_tuple(v: str | Sequence[str] | None) -> tuple[str, ...] | None:
    if v is None:
        return None
    return (v,) if isinstance(v, str) else tuple(v)


def prepare(
    data_dir: Path,
    out_dir: Path,
    *,
    preset: str = "clean-100",
    train: str | Sequence[str] | None = None,
    dev: str | Sequence[str] | None = None,
    test: str | Sequence[str] | None = None,
    lowercase: bool = True,
    download: bool = True,
    sources: Mapping[str, Source] | None = None,
    force: bool = False,
) -> dict[str, Path]:
    """Write ``out_dir/{train,dev,test}.jsonl`` (test only when the chosen split has subsets).

    ``sources`` maps a subset name to a :class:`~asr_s2s.corpora.download.Source` that replaces the
    official one (a mirror, or a test server).
    """
    if preset not in PRESETS:
        raise ValueError(f"librispeech: unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    plan = dict(PRESETS[preset])
    for name, v in (("train", train), ("dev", dev), ("test", test)):
        if (t := _as_tuple(v)) is not None:
            plan[name] = t
    sources = dict(sources or {})
    for subs in plan.values():
        for s in subs:
            if s not in SUBSETS and s not in sources:
                raise ValueError(f"librispeech: unknown subset {s!r}; known: {', '.join(SUBSETS)}")
    out_dir = Path(out_dir)
    roots = {
        s: find_or_download(f"{NAME}/{s}", data_dir, download_missing=download, source=sources.get(s)) / s
        for subs in plan.values()
        for s in subs
    }
    key = {"corpus": NAME, "plan": plan, "roots": {s: str(r.resolve()) for s, r in roots.items()}, "lowercase": lowercase}
    if not force and (done := is_prepared(out_dir, key)):
        return done

    out = {}
    for split, subs in plan.items():
        if not subs:
            (out_dir / f"{split}.jsonl").unlink(missing_ok=True)
            continue
        rows = [r for s in subs for r in read_subset(roots[s], lowercase=lowercase)]
        if not rows:
            raise FileNotFoundError(f"librispeech: no utterances found in {', '.join(str(roots[s]) for s in subs)}")
        for r, d in zip(rows, durations([Path(r["audio_filepath"]) for r in rows])):
            r["duration"] = round(d, 4)
        out[split] = write_manifest(out_dir / f"{split}.jsonl", rows)
    mark_prepared(out_dir, key, out)
    return out
