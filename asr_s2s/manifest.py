"""Manifests: JSON-lines reading with validation, writing, Kaldi data dirs, TSV text pairs.

A manifest line is ``{"audio_filepath": ..., "duration": seconds, "text": ...}`` plus optional ``id``,
``speaker`` and ``offset`` (seconds into the file).  Relative paths resolve against the manifest's folder.

Messy corpora are the norm, so reading validates every line and says *where* and *why*::

    entries, report = read_manifest("train.jsonl", tokenizer=tok, max_duration=20, on_error="skip")
    print(report.summary())       # counts per cause, first few problems with line numbers

``on_error="raise"`` (default) raises :class:`ManifestError` at the first bad line, naming the manifest,
line number and cause.  Utterances outside ``[min_duration, max_duration]`` are not errors: they are
filtered and counted (``report.filtered``) in both modes.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import atomic_open

# Cause codes used in reports and ManifestError.cause.
INVALID_UTF8 = "invalid_utf8"
INVALID_JSON = "invalid_json"
MISSING_FIELD = "missing_field"
BAD_FIELD = "bad_field"
MISSING_AUDIO = "missing_audio"
UNREADABLE_AUDIO = "unreadable_audio"
DURATION_MISMATCH = "duration_mismatch"
EMPTY_TEXT = "empty_text"
UNENCODABLE_TEXT = "unencodable_text"
BAD_DURATION = "bad_duration"
BAD_OFFSET = "bad_offset"
DUPLICATE_ID = "duplicate_id"
BAD_LINE = "bad_line"

ABSURD_DURATION = 4 * 3600.0  # seconds; an utterance longer than this is a broken entry, not speech
REQUIRED_FIELDS = ("audio_filepath", "duration", "text")


class ManifestError(ValueError):
    """A bad manifest (or Kaldi dir / TSV) line: ``path``, ``line`` (1-based, or None) and ``cause`` code."""

    def __init__(self, path: object, line: int | None, cause: str, detail: str = ""):
        self.path = str(path)
        self.line = line
        self.cause = cause
        self.detail = detail
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {cause}" + (f": {detail}" if detail else ""))


@dataclass
class ManifestEntry:
    """One utterance. ``audio_filepath`` is absolute after reading; ``duration`` in seconds."""

    audio_filepath: str
    duration: float
    text: str
    id: str = ""
    speaker: str | None = None
    offset: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, base_dir: Path | None = None) -> dict[str, Any]:
        path = self.audio_filepath
        if base_dir is not None:
            try:
                path = Path(path).resolve().relative_to(base_dir.resolve()).as_posix()
            except ValueError:
                pass
        d: dict[str, Any] = {"audio_filepath": str(path), "duration": round(float(self.duration), 6), "text": self.text}
        if self.id:
            d["id"] = self.id
        if self.speaker is not None:
            d["speaker"] = self.speaker
        if self.offset:
            d["offset"] = round(float(self.offset), 6)
        d.update({k: v for k, v in self.extra.items() if k not in d})
        return d


@dataclass
class Issue:
    line: int | None
    file: str
    cause: str
    detail: str = ""

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else "-"
        return f"{where}: {self.cause}" + (f" ({self.detail})" if self.detail else "") + (f" [{self.file}]" if self.file else "")


@dataclass
class ManifestReport:
    """What reading found: kept count, problems (line, file, cause) and counts per cause."""

    path: str
    lines: int = 0
    kept: int = 0
    issues: list[Issue] = field(default_factory=list)
    filtered: Counter = field(default_factory=Counter)
    kept_duration: float = 0.0

    @property
    def counts(self) -> Counter:
        return Counter(i.cause for i in self.issues)

    @property
    def skipped(self) -> int:
        return len(self.issues)

    @property
    def ok(self) -> bool:
        return not self.issues

    def add(self, line: int | None, file: str, cause: str, detail: str = "") -> None:
        self.issues.append(Issue(line, file, cause, detail))

    def summary(self, max_examples: int = 5) -> str:
        out = [
            f"{self.path}: {self.lines} lines, kept {self.kept} ({self.kept_duration / 3600:.2f} h), "
            f"skipped {self.skipped} bad, filtered {sum(self.filtered.values())}"
        ]
        for cause, n in sorted(self.counts.items()):
            out.append(f"  {cause}: {n}")
        for cause, n in sorted(self.filtered.items()):
            out.append(f"  filtered {cause}: {n}")
        for issue in self.issues[:max_examples]:
            out.append(f"  e.g. {issue}")
        return "\n".join(out)

    def __str__(self) -> str:
        return self.summary()


def _check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            return float(value)
        except OverflowError:  # a JSON integer beyond float range
            return math.inf if value > 0 else -math.inf
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _raw_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            yield n, raw.rstrip(b"\r\n")


def read_manifest(
    path: str | os.PathLike,
    tokenizer: Any = None,
    min_duration: float = 0.0,
    max_duration: float | None = None,
    on_error: str = "raise",
    check_audio: str = "exists",
    max_text_chars: int | None = None,
) -> tuple[list[ManifestEntry], ManifestReport]:
    """Read and validate a JSON-lines manifest.

    Checks, each reported with line number, file and cause code: non-UTF-8 line (``invalid_utf8``),
    invalid JSON or not an object (``invalid_json``), missing ``audio_filepath``/``duration``/``text``
    (``missing_field``), wrong field types (``bad_field``), duration not a finite number in
    ``(0, ABSURD_DURATION]`` (``bad_duration``), negative offset (``bad_offset``), empty text after the
    tokenizer's normalization (``empty_text``), characters the tokenizer cannot encode
    (``unencodable_text``), missing audio (``missing_audio``) and repeated ids (``duplicate_id``).

    ``check_audio``: ``"none"``, ``"exists"`` (default; a stat per file) or ``"header"`` (also read the
    header: unreadable files -> ``unreadable_audio``, offset+duration past the end -> ``duration_mismatch``).
    Entries without ``id`` get one from the audio path relative to the manifest folder (plus the offset in
    ms for segments).  Blank lines are ignored.
    """
    _check_on_error(on_error)
    if check_audio not in ("none", "exists", "header"):
        raise ValueError(f"check_audio must be 'none', 'exists' or 'header', got {check_audio!r}")
    path = Path(path)
    if not path.is_file():
        raise ManifestError(path, None, "missing_manifest", "file not found")
    base = path.resolve().parent
    report = ManifestReport(str(path))
    entries: list[ManifestEntry] = []
    seen_ids: dict[str, int] = {}
    exists_cache: dict[str, bool] = {}

    def bad(line: int, file: str, cause: str, detail: str = "") -> None:
        if on_error == "raise":
            raise ManifestError(path, line, cause, (f"{detail} " if detail else "") + (f"[{file}]" if file else ""))
        report.add(line, file, cause, detail)

    for n, raw in _raw_lines(path):
        if not raw.strip():
            continue
        report.lines += 1
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            bad(n, "", INVALID_UTF8, f"byte {e.start}: {raw[e.start:e.start + 4]!r}")
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            bad(n, "", INVALID_JSON, e.msg + f" at column {e.colno}")
            continue
        except (RecursionError, ValueError) as e:  # nesting too deep; an integer of more than 4300 digits
            bad(n, "", INVALID_JSON, f"{type(e).__name__}: {str(e)[:80]}")
            continue
        if not isinstance(obj, dict):
            bad(n, "", INVALID_JSON, f"expected an object, got {type(obj).__name__}")
            continue
        missing = [k for k in REQUIRED_FIELDS if k not in obj or obj[k] is None]
        file = str(obj.get("audio_filepath", "")) if isinstance(obj.get("audio_filepath", ""), str) else ""
        if missing:
            bad(n, file, MISSING_FIELD, ", ".join(missing))
            continue
        if not isinstance(obj["audio_filepath"], str) or not obj["audio_filepath"].strip():
            bad(n, file, BAD_FIELD, "audio_filepath must be a non-empty string")
            continue
        if not isinstance(obj["text"], str):
            bad(n, file, BAD_FIELD, f"text must be a string, got {type(obj['text']).__name__}")
            continue
        dur = _number(obj["duration"])
        if dur is None or not math.isfinite(dur) or dur <= 0 or dur > ABSURD_DURATION:
            bad(n, file, BAD_DURATION, f"duration={obj['duration']!r}")
            continue
        off = _number(obj.get("offset", 0.0) if obj.get("offset") is not None else 0.0)
        if off is None or not math.isfinite(off) or off < 0:
            bad(n, file, BAD_OFFSET, f"offset={obj.get('offset')!r}")
            continue
        text = obj["text"]
        norm = tokenizer.normalize(text) if tokenizer is not None else " ".join(text.split())
        if not norm:
            bad(n, file, EMPTY_TEXT, f"text={text!r}")
            continue
        if max_text_chars is not None and len(norm) > max_text_chars:
            bad(n, file, BAD_FIELD, f"text has {len(norm)} characters (> {max_text_chars})")
            continue
        if tokenizer is not None:
            unknown = tokenizer.unknown_chars(text)
            if unknown:
                bad(n, file, UNENCODABLE_TEXT, "characters " + " ".join(repr(c) for c in unknown[:10]))
                continue
        audio = Path(os.path.expanduser(obj["audio_filepath"]))
        if not audio.is_absolute():
            audio = base / audio
        audio_s = os.path.normpath(str(audio))
        if check_audio != "none":
            ok = exists_cache.get(audio_s)
            if ok is None:
                ok = exists_cache[audio_s] = os.path.isfile(audio_s)
            if not ok:
                bad(n, audio_s, MISSING_AUDIO, "file not found")
                continue
        if check_audio == "header":
            from .audio import AudioError, audio_info

            try:
                sr, frames, _ = audio_info(audio_s)
            except AudioError as e:
                bad(n, audio_s, UNREADABLE_AUDIO, e.cause)
                continue
            length = frames / sr
            if off + dur > length + 0.05:
                bad(n, audio_s, DURATION_MISMATCH, f"offset {off:.3f}s + duration {dur:.3f}s > file {length:.3f}s")
                continue
        uid = obj.get("id")
        if uid is None or uid == "":
            rel = os.path.splitext(os.path.relpath(audio_s, base))[0].replace(os.sep, "/")
            uid = rel if not off else f"{rel}-{int(round(off * 1000)):08d}"
        uid = str(uid)
        if uid in seen_ids:
            bad(n, audio_s, DUPLICATE_ID, f"id {uid!r} first seen on line {seen_ids[uid]}")
            continue
        seen_ids[uid] = n
        if dur < min_duration:
            report.filtered["too_short"] += 1
            continue
        if max_duration is not None and dur > max_duration:
            report.filtered["too_long"] += 1
            continue
        speaker = obj.get("speaker")
        extra = {k: v for k, v in obj.items() if k not in ("audio_filepath", "duration", "text", "id", "speaker", "offset")}
        entries.append(
            ManifestEntry(audio_s, dur, text, uid, None if speaker is None else str(speaker), off, extra)
        )
        report.kept += 1
        report.kept_duration += dur
    return entries, report


def _atomic_write_text(path: Path, lines: Iterable[str]) -> None:
    with atomic_open(path, "w") as f:
        for line in lines:
            f.write(line)


def _as_entry(e: ManifestEntry | dict[str, Any]) -> ManifestEntry:
    if isinstance(e, ManifestEntry):
        return e
    d = dict(e)
    known = {k: d.pop(k) for k in ("audio_filepath", "duration", "text", "id", "speaker", "offset") if k in d}
    return ManifestEntry(
        str(known["audio_filepath"]), float(known["duration"]), str(known["text"]), str(known.get("id") or ""),
        known.get("speaker"), float(known.get("offset") or 0.0), d,
    )


def write_manifest(
    path: str | os.PathLike, entries: Iterable[ManifestEntry | dict[str, Any]], relative_paths: bool = True
) -> int:
    """Write entries as JSON lines (atomically). With ``relative_paths``, audio under the manifest's folder
    is written relative to it (the folder can then be moved); other paths stay absolute. Returns the count."""
    path = Path(path)
    base = path.resolve().parent if relative_paths else None
    count = 0

    def lines() -> Iterator[str]:
        nonlocal count
        for e in entries:
            count += 1
            yield json.dumps(_as_entry(e).to_dict(base), ensure_ascii=False) + "\n"

    _atomic_write_text(path, lines())
    return count


# ------------------------------------------------------------------------------------------------- Kaldi dirs
def _kaldi_table(path: Path, required: bool = True) -> dict[str, tuple[int, str]]:
    """``key rest-of-line`` file -> {key: (line number, rest)}."""
    table: dict[str, tuple[int, str]] = {}
    if not path.is_file():
        if required:
            raise ManifestError(path, None, "missing_file", "required Kaldi file not found")
        return table
    for n, raw in _raw_lines(path):
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise ManifestError(path, n, INVALID_UTF8) from None
        if not line:
            continue
        parts = line.split(maxsplit=1)
        key, rest = parts[0], (parts[1] if len(parts) > 1 else "")
        if key in table:
            raise ManifestError(path, n, DUPLICATE_ID, f"key {key!r} first seen on line {table[key][0]}")
        table[key] = (n, rest)
    return table


def import_kaldi_dir(data_dir: str | os.PathLike, on_error: str = "raise") -> list[ManifestEntry]:
    """Entries from a Kaldi data dir: ``wav.scp`` + ``text`` (+ optional ``segments``, ``utt2spk``).

    ``wav.scp`` must hold plain file paths (relative ones resolve against the data dir); piped commands
    (``... |``) and ark offsets are rejected with a :class:`ManifestError` saying so, since they would
    need a shell.  Without ``segments`` each recording is one utterance and its duration is read from the
    audio header.  ``segments`` end ``-1`` means "to the end of the recording".
    With ``on_error="skip"`` bad utterances are dropped (missing text, audio, recording...).
    """
    _check_on_error(on_error)
    from .audio import AudioError, audio_info

    d = Path(data_dir)
    wav_path = d / "wav.scp"
    wavs = _kaldi_table(wav_path)
    texts = _kaldi_table(d / "text")
    segments = _kaldi_table(d / "segments", required=False)
    spk = _kaldi_table(d / "utt2spk", required=False)
    skipped: list[str] = []

    def bad(path: Path, line: int | None, cause: str, detail: str) -> None:
        if on_error == "raise":
            raise ManifestError(path, line, cause, detail)
        skipped.append(f"{path}:{line}: {cause}: {detail}")

    rec_paths: dict[str, str] = {}
    for rec, (n, rest) in wavs.items():
        rest = rest.strip()
        if rest.endswith("|") or rest.startswith("|"):
            bad(wav_path, n, "piped_command", f"{rec}: piped commands are not supported; convert the audio to files first")
            continue
        if not rest:
            bad(wav_path, n, MISSING_FIELD, f"{rec}: no path")
            continue
        if re.search(r"\.ark:\d+$", rest):
            bad(wav_path, n, "ark_not_supported", f"{rec}: {rest}: ark offsets are not supported; export audio files")
            continue
        p = Path(rest)
        if not p.is_absolute():
            p = d / p
        if not p.is_file():
            bad(wav_path, n, MISSING_AUDIO, f"{rec}: {rest}")
            continue
        rec_paths[rec] = os.path.normpath(str(p))

    info_cache: dict[str, float] = {}

    def length(rec: str, n: int) -> float | None:
        p = rec_paths[rec]
        if p not in info_cache:
            try:
                sr, frames, _ = audio_info(p)
            except AudioError as e:
                bad(wav_path, n, UNREADABLE_AUDIO, str(e))
                return None
            info_cache[p] = frames / sr
        return info_cache[p]

    entries: list[ManifestEntry] = []
    if segments:
        seg_path = d / "segments"
        items = []
        for utt, (n, rest) in segments.items():
            parts = rest.split()
            if len(parts) != 3:
                bad(seg_path, n, BAD_LINE, f"expected 'utt rec start end', got {rest!r}")
                continue
            rec, start_s, end_s = parts
            start, end = _number(start_s), _number(end_s)
            if start is None or end is None or start < 0 or (end != -1 and end <= start):
                bad(seg_path, n, BAD_DURATION, f"{utt}: start={start_s} end={end_s}")
                continue
            if rec not in wavs:
                bad(seg_path, n, MISSING_FIELD, f"{utt}: recording {rec!r} not in wav.scp")
                continue
            if rec not in rec_paths:
                continue  # already reported by the wav.scp pass
            if end == -1:
                total = length(rec, wavs[rec][0])
                if total is None:
                    continue
                end = total
            items.append((utt, rec, start, end - start, n))
    else:
        items = []
        for rec, (n, _) in wavs.items():
            if rec not in rec_paths:
                continue
            total = length(rec, n)
            if total is None:
                continue
            items.append((rec, rec, 0.0, total, n))

    text_path = d / "text"
    for utt, rec, start, dur, n in items:
        if utt not in texts:
            bad(text_path, None, MISSING_FIELD, f"no transcript for utterance {utt!r}")
            continue
        text = texts[utt][1]
        if not text.strip():
            bad(text_path, texts[utt][0], EMPTY_TEXT, utt)
            continue
        speaker = spk[utt][1].strip() if utt in spk else None
        entries.append(ManifestEntry(rec_paths[rec], dur, text, utt, speaker, start))
    if skipped:
        import warnings

        warnings.warn(f"import_kaldi_dir({d}): skipped {len(skipped)} utterances, e.g. {skipped[0]}", stacklevel=2)
    return entries


def _kaldi_safe(key: str, what: str) -> str:
    if not key or any(c.isspace() for c in key):
        raise ValueError(f"Kaldi {what} id must be non-empty without whitespace, got {key!r}")
    return key


def export_kaldi_dir(
    entries: Sequence[ManifestEntry | dict[str, Any]], data_dir: str | os.PathLike, segments: bool | None = None
) -> Path:
    """Write ``wav.scp``, ``text``, ``utt2spk``, ``spk2utt`` (and ``segments``) sorted by id, as Kaldi wants.

    ``segments=None`` writes a segments file when some entry has an offset or shares its audio file with
    another entry. Without a speaker the utterance id is its own speaker (Kaldi's convention).
    Paths must not contain whitespace-only names; absolute paths are written.
    """
    d = Path(data_dir)
    es = sorted((_as_entry(e) for e in entries), key=lambda e: e.id)
    for e in es:
        _kaldi_safe(e.id, "utterance")
    files = [os.path.abspath(e.audio_filepath) for e in es]
    if segments is None:
        segments = any(e.offset for e in es) or len(set(files)) != len(files)
    if segments:
        rec_ids: dict[str, str] = {}
        for f in sorted(set(files)):
            stem = Path(f).stem.replace(" ", "_")
            rid, k = stem, 1
            while rid in rec_ids.values():
                k += 1
                rid = f"{stem}-{k}"
            rec_ids[f] = rid
        wav_lines = [f"{rid} {f}\n" for f, rid in sorted(rec_ids.items(), key=lambda x: x[1])]
        seg_lines = [
            f"{e.id} {rec_ids[f]} {e.offset:.3f} {e.offset + e.duration:.3f}\n" for e, f in zip(es, files)
        ]
        _atomic_write_text(d / "segments", seg_lines)
    else:
        wav_lines = [f"{e.id} {f}\n" for e, f in zip(es, files)]
        if (d / "segments").exists():
            (d / "segments").unlink()
    _atomic_write_text(d / "wav.scp", wav_lines)
    _atomic_write_text(d / "text", [f"{e.id} {' '.join(e.text.split())}\n" for e in es])
    spk = {e.id: _kaldi_safe(e.speaker, "speaker") if e.speaker else e.id for e in es}
    _atomic_write_text(d / "utt2spk", [f"{u} {s}\n" for u, s in spk.items()])
    spk2utt: dict[str, list[str]] = {}
    for u, s in spk.items():
        spk2utt.setdefault(s, []).append(u)
    _atomic_write_text(d / "spk2utt", [f"{s} {' '.join(us)}\n" for s, us in sorted(spk2utt.items())])
    return d


# ------------------------------------------------------------------------------------------------- text pairs
def read_tsv_pairs(
    path: str | os.PathLike,
    src_col: int = 0,
    tgt_col: int = 1,
    on_error: str = "skip",
    tokenizers: tuple[Any, Any] | None = None,
) -> tuple[list[tuple[str, str]], ManifestReport]:
    """``source<TAB>target[<TAB>more...]`` lines -> ``[(src, tgt)]`` and a report of bad lines.

    Bad lines: not UTF-8, too few columns, empty side, or (with ``tokenizers=(src_tok, tgt_tok)``)
    characters a tokenizer cannot encode. Extra columns (e.g. Tatoeba's attribution) are ignored.
    ``on_error`` defaults to ``"skip"`` (web-scraped pair files are rarely clean); ``"raise"`` stops at the first.
    """
    _check_on_error(on_error)
    path = Path(path)
    if not path.is_file():
        raise ManifestError(path, None, "missing_file", "file not found")
    report = ManifestReport(str(path))
    pairs: list[tuple[str, str]] = []
    need = max(src_col, tgt_col) + 1

    def bad(n: int, cause: str, detail: str) -> None:
        if on_error == "raise":
            raise ManifestError(path, n, cause, detail)
        report.add(n, "", cause, detail)

    for n, raw in _raw_lines(path):
        if not raw.strip():
            continue
        report.lines += 1
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            bad(n, INVALID_UTF8, f"byte {e.start}")
            continue
        cols = line.split("\t")
        if len(cols) < need:
            bad(n, BAD_LINE, f"expected at least {need} tab-separated columns, got {len(cols)}")
            continue
        src, tgt = cols[src_col].strip(), cols[tgt_col].strip()
        if not src or not tgt:
            bad(n, EMPTY_TEXT, "empty source" if not src else "empty target")
            continue
        if tokenizers is not None:
            unk = [c for tok, s in zip(tokenizers, (src, tgt)) if tok is not None for c in tok.unknown_chars(s)]
            if unk:
                bad(n, UNENCODABLE_TEXT, "characters " + " ".join(repr(c) for c in unk[:10]))
                continue
        pairs.append((src, tgt))
        report.kept += 1
    return pairs, report


__all__ = [
    "ABSURD_DURATION",
    "Issue",
    "ManifestEntry",
    "ManifestError",
    "ManifestReport",
    "export_kaldi_dir",
    "import_kaldi_dir",
    "read_manifest",
    "read_tsv_pairs",
    "write_manifest",
]
