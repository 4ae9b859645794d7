"""Spoken digit strings: FSDD recordings joined into strings of ``min_len``..``max_len`` digits.

Built for the seed experiment (issue #28): one context vector against attention as inputs grow. Each
string is one speaker reading ``min_len``..``max_len`` random digits (``"four one one"``), made of
that speaker's FSDD clips with their leading and trailing silence trimmed, joined by natural pauses
(random gaps of ``pause_min``..``pause_max`` seconds) over a faint noise floor, so that the silence
between digits is not digital zero (which would mark the boundaries for free). Written as 16-bit
8 kHz WAV files under ``out_dir/audio/{split}/``; the audio stays out of the repository.

Splits (``split=``), as for :mod:`asr_s2s.corpora.fsdd`:

- ``"official"`` (default): **train** strings from FSDD's train recordings (index 10-49), **dev**
  from index 5-9, **test** from index 0-4 (the README's test split). Every speaker is in every split.
- ``"speaker"``: held-out speakers, ``test_speakers`` (default theo) for test, ``dev_speakers``
  (default nicolas) for dev, the rest for train.

``train_per_length`` (``dev_per_length``, ``test_per_length``) strings of every length per split. A
split with no recordings (e.g. the clips shipped in tests/data) is skipped with a warning. The same
``seed`` gives byte-identical audio and manifests: each string draws from its own random stream keyed
by (seed, split, length, number), so changing one split's count leaves the other splits' strings as
they were. Unreadable recordings are counted and skipped with a warning; manifests carry ``num_digits``
and ``sources`` (the FSDD clip ids joined, in order) besides the usual fields.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf

from .common import is_prepared, mark_prepared, write_manifest
from .download import Source, find_or_download
from .fsdd import DEFAULT_DEV_SPEAKERS, DEFAULT_TEST_SPEAKERS, DIGITS, parse_name

log = logging.getLogger(__name__)

NAME = "digit_strings"
SAMPLE_RATE = 8000
SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class Clip:
    """One FSDD recording: its trimmed waveform (N,) float32 at 8 kHz and its label."""

    id: str
    digit: int
    speaker: str
    index: int
    wave: np.ndarray


@dataclass(frozen=True)
class DigitString:
    """A built string: waveform (N,) float32 in [-1, 1] at ``SAMPLE_RATE``, its digits, speaker, source ids and
    the sample spans ``[start, end)`` of each digit's clip inside the waveform (the pauses lie between)."""

    id: str
    wave: np.ndarray
    digits: tuple[int, ...]
    speaker: str
    sources: tuple[str, ...]
    spans: tuple[tuple[int, int], ...]

    @property
    def text(self) -> str:
        return " ".join(DIGITS[d] for d in self.digits)


def trim_silence(wave: np.ndarray, sr: int = SAMPLE_RATE, threshold_db: float = -35.0, margin_s: float = 0.02) -> np.ndarray:
    """Cut leading/trailing frames (10 ms) quieter than ``threshold_db`` below the clip's loudest frame, keeping
    ``margin_s`` on each side so that soft onsets (the /f/ of "four") survive. wave (N,) -> (M,), M <= N."""
    hop = max(1, sr // 100)
    n = len(wave) // hop
    if n < 3:
        return wave
    rms = np.sqrt(np.mean(wave[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(20 * np.log10(rms / rms.max()) > threshold_db)
    margin = int(margin_s * sr)
    start = max(0, loud[0] * hop - margin)
    end = min(len(wave), (loud[-1] + 1) * hop + margin)
    return wave[start:end]


def load_clips(files: Sequence[Path], trim: bool = True) -> tuple[list[Clip], int]:
    """Read FSDD recordings (8 kHz mono float32, resampled if a file is not) -> (clips, number skipped).

    A file that cannot be read, is empty or silent, or whose name is not ``{digit}_{speaker}_{index}.wav`` is
    skipped with a warning: a corpus with a few bad files still builds."""
    from ..audio import AudioError, load_audio

    clips, bad = [], 0
    for p in files:
        lab = parse_name(p)
        if lab is None:
            log.warning("%s: skipping %s (name is not {digit}_{speaker}_{index}.wav)", NAME, p.name)
            bad += 1
            continue
        try:
            wave = load_audio(p, SAMPLE_RATE).numpy().astype(np.float32)
        except (AudioError, OSError, ValueError, RuntimeError) as exc:
            log.warning("%s: skipping unreadable %s (%s)", NAME, p, exc)
            bad += 1
            continue
        if wave.size == 0 or not np.isfinite(wave).all() or not np.abs(wave).max() > 0:
            log.warning("%s: skipping %s (empty, silent or non-finite audio)", NAME, p)
            bad += 1
            continue
        clips.append(Clip(p.stem, lab[0], lab[1], lab[2], trim_silence(wave) if trim else wave))
    return clips, bad


def _rng(seed: int, split: str, length: int, number: int) -> np.random.Generator:
    # One stream per string (crc32, not hash(): stable across processes and Python versions).
    return np.random.default_rng([seed, zlib.crc32(split.encode()), length, number])


def build_string(pool: Sequence[Clip], length: int, rng: np.random.Generator, uid: str = "", *,
                 pause_min: float = 0.05, pause_max: float = 0.35, edge_max: float = 0.15,
                 noise_db: float = -60.0) -> DigitString:
    """One string of ``length`` digits from ``pool``: a random speaker, random digits among those the speaker
    has, a random clip of each, joined by random pauses (``pause_min``..``pause_max`` s; ``0``..``edge_max`` s
    before the first and after the last) over Gaussian noise ``noise_db`` dBFS (RMS)."""
    speakers = sorted({c.speaker for c in pool})
    spk = speakers[rng.integers(len(speakers))]
    by_digit: dict[int, list[Clip]] = {}
    for c in pool:
        if c.speaker == spk:
            by_digit.setdefault(c.digit, []).append(c)
    avail = sorted(by_digit)
    digits = tuple(int(avail[rng.integers(len(avail))]) for _ in range(length))
    chosen = [by_digit[d][rng.integers(len(by_digit[d]))] for d in digits]
    gaps = [rng.uniform(0.0, edge_max)] + [rng.uniform(pause_min, pause_max) for _ in range(length - 1)]
    gaps.append(rng.uniform(0.0, edge_max))
    gap_n = [int(round(g * SAMPLE_RATE)) for g in gaps]
    total = sum(gap_n) + sum(len(c.wave) for c in chosen)
    wave = (rng.standard_normal(total) * 10 ** (noise_db / 20)).astype(np.float32)
    spans, pos = [], gap_n[0]
    for c, g in zip(chosen, gap_n[1:]):
        wave[pos : pos + len(c.wave)] += c.wave
        spans.append((pos, pos + len(c.wave)))
        pos += len(c.wave) + g
    np.clip(wave, -1.0, 1.0, out=wave)
    return DigitString(uid, wave, digits, spk, tuple(c.id for c in chosen), tuple(spans))


def build_split(pool: Sequence[Clip], split: str, count_per_length: int, min_len: int, max_len: int, seed: int,
                **opts) -> list[DigitString]:
    """``count_per_length`` strings of each length ``min_len``..``max_len`` from ``pool`` (see build_string)."""
    pool = sorted(pool, key=lambda c: c.id)  # the pool's order must not depend on the file system
    return [build_string(pool, n, _rng(seed, split, n, i), f"{split}-{n:02d}-{i:04d}", **opts)
            for n in range(min_len, max_len + 1) for i in range(count_per_length)]


def assign_split(clip: Clip, split: str, test_speakers: Sequence[str], dev_speakers: Sequence[str]) -> str:
    """The FSDD split a recording belongs to (see the module docstring)."""
    if split == "official":
        return "test" if clip.index < 5 else "dev" if clip.index < 10 else "train"
    return "test" if clip.speaker in test_speakers else "dev" if clip.speaker in dev_speakers else "train"


def prepare(
    data_dir: Path,
    out_dir: Path,
    *,
    split: str = "official",
    min_len: int = 1,
    max_len: int = 16,
    train_per_length: int = 200,
    dev_per_length: int = 10,
    test_per_length: int = 50,
    seed: int = 0,
    pause_min: float = 0.05,
    pause_max: float = 0.35,
    noise_db: float = -60.0,
    test_speakers: tuple[str, ...] | list[str] = DEFAULT_TEST_SPEAKERS,
    dev_speakers: tuple[str, ...] | list[str] = DEFAULT_DEV_SPEAKERS,
    recordings: Path | None = None,
    download: bool = True,
    source: Source | None = None,
    force: bool = False,
) -> dict[str, Path]:
    """Write ``out_dir/{train,dev,test}.jsonl`` and their audio under ``out_dir/audio``; -> ``{split: path}``.

    ``recordings``: a folder of FSDD-named WAV files to use instead of ``data_dir/fsdd`` (e.g. a few clips)."""
    if split not in ("official", "speaker"):
        raise ValueError(f"{NAME}: split must be 'official' or 'speaker', not {split!r}")
    if not 1 <= min_len <= max_len:
        raise ValueError(f"{NAME}: need 1 <= min_len <= max_len, got {min_len}..{max_len}")
    if not 0 <= pause_min <= pause_max:
        raise ValueError(f"{NAME}: need 0 <= pause_min <= pause_max, got {pause_min}..{pause_max}")
    counts = {"train": train_per_length, "dev": dev_per_length, "test": test_per_length}
    if any(c < 0 for c in counts.values()):
        raise ValueError(f"{NAME}: counts per length must be >= 0, got {counts}")
    rec = Path(recordings) if recordings is not None else (
        find_or_download("fsdd", data_dir, download_missing=download, source=source) / "recordings")
    files = sorted(rec.glob("*.wav"))
    if not files:
        raise FileNotFoundError(f"{NAME}: no recordings in {rec}")
    test_speakers, dev_speakers = tuple(test_speakers), tuple(dev_speakers)
    if split == "speaker" and set(test_speakers) & set(dev_speakers):
        raise ValueError(f"{NAME}: test_speakers and dev_speakers overlap")
    out_dir = Path(out_dir)
    key = {"corpus": NAME, "root": str(rec.resolve()), "split": split, "min_len": min_len, "max_len": max_len,
           "counts": counts, "seed": seed, "pause": [pause_min, pause_max], "noise_db": noise_db, "version": 1}
    if split == "speaker":
        key.update(test_speakers=sorted(test_speakers), dev_speakers=sorted(dev_speakers))
    if not force and (done := is_prepared(out_dir, key)):
        return done

    clips, bad = load_clips(files)
    if bad:
        log.warning("%s: %d of %d recordings skipped (unreadable or misnamed)", NAME, bad, len(files))
    if split == "speaker":
        unknown = (set(test_speakers) | set(dev_speakers)) - {c.speaker for c in clips}
        if unknown:
            log.warning("%s: no recordings of speaker(s) %s", NAME, sorted(unknown))
    pools: dict[str, list[Clip]] = {s: [] for s in SPLITS}
    for c in clips:
        pools[assign_split(c, split, test_speakers, dev_speakers)].append(c)
    out: dict[str, Path] = {}
    for name in SPLITS:
        if not counts[name]:
            continue
        if not pools[name]:
            log.warning("%s: no recordings for the %s split in %s: skipping it", NAME, name, rec)
            continue
        strings = build_split(pools[name], name, counts[name], min_len, max_len, seed,
                              pause_min=pause_min, pause_max=pause_max, noise_db=noise_db)
        out[name] = write_manifest(out_dir / f"{name}.jsonl", _write_audio(strings, out_dir / "audio" / name))
    if not out:
        raise ValueError(f"{NAME}: no split could be built from {rec}")
    mark_prepared(out_dir, key, out)
    return out


def _write_audio(strings: Sequence[DigitString], folder: Path) -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for s in strings:
        path = (folder / f"{s.id}.wav").resolve()
        tmp = path.with_name(path.stem + ".tmp.wav")
        sf.write(str(tmp), s.wave, SAMPLE_RATE, subtype="PCM_16", format="WAV")
        tmp.replace(path)
        rows.append({"audio_filepath": str(path), "duration": round(len(s.wave) / SAMPLE_RATE, 4), "text": s.text,
                     "id": s.id, "speaker": s.speaker, "num_digits": len(s.digits), "sources": list(s.sources)})
    return rows
