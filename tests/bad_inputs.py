"""Broken inputs built on the spot, and a runner that classifies what each real entry point does with them.

Shared by ``tests/test_bad_inputs.py`` (one parametrized test per case and entry point) and
``bench/reliability_report.py`` (the summary table). Outcomes:

- ``ok``     the input is usable and loaded correctly (silence, 6 channels, odd sample rates...);
- ``error``  a documented exception whose message names the file (and line) and the cause;
- ``skip``   skip mode dropped it and counted it under the right cause (and said so);
- ``crash``  anything else: an undocumented exception, an error that does not say what/where,
             garbage returned where an error was due ("silence"), or a wrong result.

A case is *passed* when its outcome is the expected one; a ``crash`` never is.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import soundfile as sf

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TARGET_RATE = 8000  # FSDD's rate; the datasets and the training run below use it


# ------------------------------------------------------------------------------------------------ builders
def wav_header(rate: int, channels: int, bits: int, nframes: int, fmt: int = 1) -> bytes:
    """A canonical 44-byte RIFF/WAVE header (fmt 1: PCM, 3: IEEE float) declaring ``nframes`` frames."""
    block = channels * bits // 8
    data = nframes * block
    return (b"RIFF" + struct.pack("<I", 36 + data) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, fmt, channels, rate, rate * block, block, bits)
            + b"data" + struct.pack("<I", data))


def tone(seconds: float, rate: int, channels: int = 1, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    x = (0.3 * np.sin(2 * np.pi * min(freq, rate / 4) * t)).astype(np.float32)
    return np.repeat(x[:, None], channels, axis=1) if channels > 1 else x


def _write(path: Path, data: np.ndarray, rate: int, subtype: str = "PCM_16") -> Path:
    sf.write(str(path), data, rate, subtype=subtype)
    return path


def make_truncated(d: Path) -> Path:
    p = _write(d / "truncated.wav", tone(1.0, 16000), 16000)
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])  # header still promises the full second
    return p


def make_header_only(d: Path) -> Path:
    p = d / "header_only.wav"
    p.write_bytes(wav_header(16000, 1, 16, 16000))  # declares 1 s, carries no sample
    return p


def make_zero_samples(d: Path) -> Path:
    p = d / "zero_samples.wav"
    p.write_bytes(wav_header(16000, 1, 16, 0))  # a complete, empty file
    return p


def make_empty_file(d: Path) -> Path:
    p = d / "empty.wav"
    p.write_bytes(b"")
    return p


def make_silent(d: Path) -> Path:
    return _write(d / "silent.wav", np.zeros(16000, dtype=np.float32), 16000)


def make_nan(d: Path) -> Path:
    x = tone(1.0, 16000)
    x[100] = np.nan
    return _write(d / "nan.wav", x, 16000, subtype="FLOAT")


def make_inf(d: Path) -> Path:
    x = tone(1.0, 16000)
    x[200] = np.inf
    x[300] = -np.inf
    return _write(d / "inf.wav", x, 16000, subtype="FLOAT")


def make_6ch(d: Path) -> Path:
    return _write(d / "six_channels.wav", tone(1.0, 16000, channels=6), 16000)


def make_1k(d: Path) -> Path:
    return _write(d / "rate_1k.wav", tone(1.0, 1000), 1000)


def make_192k(d: Path) -> Path:
    return _write(d / "rate_192k.wav", tone(1.0, 192000), 192000, subtype="PCM_24")


def make_random_bytes(d: Path) -> Path:
    p = d / "random.wav"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return p


def make_riff_garbage(d: Path) -> Path:
    p = d / "riff_garbage.wav"
    p.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(range(256)))
    return p


def make_dir_wav(d: Path) -> Path:
    p = d / "folder.wav"
    p.mkdir()
    return p


def make_missing(d: Path) -> Path:
    return d / "does_not_exist.wav"


HOUR = 3600.0


def make_hour(d: Path, rate: int = 16000) -> Path:
    """A 1-hour 16-bit mono WAV of silence, written sparse (header + ftruncate): instant and ~0 bytes on disk."""
    p = d / "one_hour.wav"
    n = int(HOUR * rate)
    with open(p, "wb") as f:
        f.write(wav_header(rate, 1, 16, n))
        f.truncate(44 + 2 * n)
    return p


@dataclass
class AudioCase:
    name: str
    build: Callable[[Path], Path]
    expect: str  # "ok" or "error"
    cause: str = ""  # regex (case-insensitive) the error message must match: the cause, in words
    seconds: float = 1.0  # expected duration when ok
    train: bool = True  # include in the mixed training run
    skip_cause: Optional[str] = None  # for the training manifest: the manifest layer drops it with this cause


AUDIO_CASES = [
    AudioCase("truncated_wav", make_truncated, "error", "truncated"),
    AudioCase("header_only_wav", make_header_only, "error", "truncated"),
    AudioCase("zero_samples_wav", make_zero_samples, "error", "zero samples"),
    AudioCase("empty_file_wav", make_empty_file, "error", "unreadable"),
    AudioCase("all_silent", make_silent, "ok"),
    AudioCase("nan_float_wav", make_nan, "error", "non-finite"),
    AudioCase("inf_float_wav", make_inf, "error", "non-finite"),
    AudioCase("six_channels", make_6ch, "ok"),
    AudioCase("rate_1khz", make_1k, "ok"),
    AudioCase("rate_192khz", make_192k, "ok"),
    AudioCase("random_bytes_wav", make_random_bytes, "error", "unreadable"),
    AudioCase("riff_header_garbage", make_riff_garbage, "error", "unreadable"),
    AudioCase("directory_named_wav", make_dir_wav, "error", "is a directory", skip_cause="missing_audio"),
    AudioCase("missing_file", make_missing, "error", "file not found|no such file", skip_cause="missing_audio"),
    # Loading the whole hour costs ~230 MB of float32; the test suite reads a slice (offset/duration) and
    # loads the whole file only in a slow test. Too long for training: the manifest filters it (max_duration).
    AudioCase("one_hour_slice", make_hour, "ok", train=False),
]


@dataclass
class Result:
    case: str
    entry: str
    expect: str
    outcome: str
    detail: str

    @property
    def passed(self) -> bool:
        return self.outcome == self.expect


def _classify_error(exc: BaseException, documented: tuple, names: list[str], cause: str) -> tuple[str, str]:
    msg = str(exc)
    if not isinstance(exc, documented):
        return "crash", f"undocumented {type(exc).__name__}: {msg}\n{''.join(traceback.format_exception(exc))}"
    missing = [n for n in names if n not in msg]
    if missing:
        return "crash", f"{type(exc).__name__} does not name {missing}: {msg}"
    if cause and not re.search(cause, msg, re.IGNORECASE):
        return "crash", f"{type(exc).__name__} does not say {cause!r}: {msg}"
    return "error", msg


# ------------------------------------------------------------------------------------------ load_audio
def run_load_audio(case: AudioCase, d: Path) -> Result:
    from asr_s2s.audio import AudioError, load_audio

    path = case.build(d)
    kw = {"offset": 1800.0, "duration": 1.0} if case.name == "one_hour_slice" else {}
    try:
        wave = load_audio(path, 16000, **kw)
    except BaseException as exc:  # noqa: BLE001 - classifying everything is the point
        outcome, detail = _classify_error(exc, (AudioError,), [str(path)], case.cause)
        return Result(case.name, "load_audio", case.expect, outcome, detail)
    if case.expect == "error":
        return Result(case.name, "load_audio", case.expect, "crash", f"silently returned {tuple(wave.shape)} samples")
    want = int(round(case.seconds * 16000))
    if wave.ndim != 1 or wave.dtype.is_floating_point is False or abs(wave.shape[0] - want) > want * 0.01:
        return Result(case.name, "load_audio", case.expect, "crash", f"wrong result: shape {tuple(wave.shape)}, want ~{want}")
    if not bool(wave.isfinite().all()):
        return Result(case.name, "load_audio", case.expect, "crash", "non-finite samples returned")
    return Result(case.name, "load_audio", case.expect, "ok", f"{wave.shape[0]} samples, peak {float(wave.abs().max()):.3f}")


# ------------------------------------------------------------------------------- AudioDataset (skip mode)
class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def char_tokenizer():
    from asr_s2s.text import CharTokenizer

    return CharTokenizer.build(DIGITS)


def run_dataset_skip(case: AudioCase, d: Path) -> Result:
    """AudioDataset(on_error="skip") then collate_audio: a bad item is None, logged naming the file, and counted."""
    from asr_s2s.data import AudioDataset, collate_audio
    from asr_s2s.features import FeatureConfig
    from asr_s2s.manifest import ManifestEntry

    path = case.build(d)
    expect = "skip" if case.expect == "error" else "ok"
    kw = {"offset": 1800.0, "duration": 1.0} if case.name == "one_hour_slice" else {"duration": case.seconds}
    entry = ManifestEntry(str(path), kw["duration"], "one", case.name, None, kw.get("offset", 0.0))
    ds = AudioDataset([entry], char_tokenizer(), FeatureConfig(sample_rate=TARGET_RATE, n_mels=20),
                      cache_dir=d / "cache", on_error="skip")
    cap = _Capture()
    logger = logging.getLogger("asr_s2s.data")
    logger.addHandler(cap)
    level, logger.level = logger.level, logging.NOTSET  # whatever the caller configured, see the warning
    try:
        item = ds[0]
        batch = collate_audio([item])
    except BaseException as exc:  # noqa: BLE001
        return Result(case.name, "AudioDataset(skip)", expect, "crash",
                      f"{type(exc).__name__}: {exc}\n{''.join(traceback.format_exception(exc))}")
    finally:
        logger.removeHandler(cap)
        logger.setLevel(level)
    if item is None:
        said = [m for m in cap.messages if str(path) in m and (not case.cause or re.search(case.cause, m, re.IGNORECASE))]
        if batch is not None or not said:
            return Result(case.name, "AudioDataset(skip)", expect, "crash",
                          f"skipped without a warning naming the file and cause: {cap.messages}")
        return Result(case.name, "AudioDataset(skip)", expect, "skip", said[0])
    if case.expect == "error":
        return Result(case.name, "AudioDataset(skip)", expect, "crash", "bad audio yielded features")
    if batch is None or batch["num_skipped"] != 0 or not bool(batch["feats"].isfinite().all()):
        return Result(case.name, "AudioDataset(skip)", expect, "crash", "good audio not collated cleanly")
    return Result(case.name, "AudioDataset(skip)", expect, "ok", f"feats {tuple(batch['feats'].shape)}")


# ---------------------------------------------------------------------------------------- manifests
@dataclass
class ManifestCase:
    name: str
    cause: str  # the manifest cause code
    bad_line: Callable[[Path, Path], bytes]  # (folder, a good wav) -> raw line bytes
    whole_file: bool = False  # the bad content is the whole manifest (no good line around it)


def _line(obj: dict) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


MANIFEST_CASES = [
    ManifestCase("manifest_missing_audio", "missing_audio",
                 lambda d, good: _line({"audio_filepath": str(d / "gone.wav"), "duration": 1.0, "text": "one"})),
    ManifestCase("manifest_empty_transcript", "empty_text",
                 lambda d, good: _line({"audio_filepath": str(good), "duration": 1.0, "text": "  \t ", "id": "e"})),
    ManifestCase("manifest_out_of_vocab_text", "unencodable_text",
                 lambda d, good: _line({"audio_filepath": str(good), "duration": 1.0, "text": "one ✓ ß", "id": "o"})),
    ManifestCase("manifest_non_utf8_line", "invalid_utf8",
                 lambda d, good: b'{"audio_filepath": "x.wav", "duration": 1.0, "text": "caf\xe9 \xff"}'),
    ManifestCase("manifest_duplicate_id", "duplicate_id",
                 lambda d, good: _line({"audio_filepath": str(good), "duration": 1.0, "text": "one", "id": "good"})),
    ManifestCase("manifest_not_json_line", "invalid_json",
                 lambda d, good: b"audio_filepath,duration,text"),
    ManifestCase("manifest_json_array_not_object", "invalid_json",
                 lambda d, good: _line([str(good), 1.0, "one"])),
    ManifestCase("manifest_whole_file_not_json", "invalid_json",
                 lambda d, good: b"<html><body>404 Not Found</body></html>\n<p>nope</p>", whole_file=True),
    ManifestCase("manifest_deeply_nested_json", "invalid_json", lambda d, good: b"[" * 100_000),
    ManifestCase("manifest_huge_integer", "invalid_json",
                 lambda d, good: b'{"audio_filepath": "a.wav", "duration": 1' + b"0" * 5000 + b', "text": "one"}'),
    ManifestCase("manifest_duration_beyond_float", "bad_duration",
                 lambda d, good: b'{"audio_filepath": "a.wav", "duration": 1' + b"0" * 400 + b', "text": "one", "id": "x"}'),
    ManifestCase("manifest_bad_duration", "bad_duration",
                 lambda d, good: _line({"audio_filepath": str(good), "duration": "NaN", "text": "one", "id": "n"})),
]


def write_case_manifest(case: ManifestCase, d: Path, good_wav: Path) -> tuple[Path, int]:
    """A manifest: one good line, then the bad line (line 2). Returns (path, bad line number)."""
    path = d / f"{case.name}.jsonl"
    bad = case.bad_line(d, good_wav)
    if case.whole_file:
        path.write_bytes(bad + b"\n")
        return path, 1
    good = _line({"audio_filepath": str(good_wav), "duration": 1.0, "text": "one", "id": "good"})
    path.write_bytes(good + b"\n" + bad + b"\n")
    return path, 2


def run_manifest(case: ManifestCase, d: Path, good_wav: Path, mode: str) -> Result:
    from asr_s2s.manifest import ManifestError, read_manifest

    path, line = write_case_manifest(case, d, good_wav)
    entry = f"read_manifest({mode})"
    expect = "error" if mode == "raise" else "skip"
    try:
        entries, report = read_manifest(path, tokenizer=char_tokenizer(), on_error=mode)
    except BaseException as exc:  # noqa: BLE001
        if mode == "skip":
            return Result(case.name, entry, expect, "crash", f"skip mode raised {type(exc).__name__}: {exc}")
        outcome, detail = _classify_error(exc, (ManifestError,), [f"{path}:{line}"], case.cause)
        if outcome == "error" and getattr(exc, "cause", None) != case.cause:
            outcome, detail = "crash", f"cause {exc.cause!r}, expected {case.cause!r}: {exc}"
        return Result(case.name, entry, expect, outcome, detail)
    if mode == "raise":
        return Result(case.name, entry, expect, "crash", f"no error; kept {len(entries)} entries")
    want_kept, want_skipped = (0, report.lines) if case.whole_file else (1, 1)
    issues = [i for i in report.issues if i.line == line and i.cause == case.cause]
    if len(entries) != want_kept or report.skipped != want_skipped or not issues or case.cause not in report.summary():
        return Result(case.name, entry, expect, "crash", f"kept {len(entries)}, report: {report.summary()}")
    return Result(case.name, entry, expect, "skip", str(issues[0]))


# ------------------------------------------------------------------------------------------ training
def training_config(manifest: Path, **over):
    from asr_s2s.config import TrainConfig

    d = {
        "features": {"sample_rate": TARGET_RATE, "n_mels": 20},
        "model": {"input": "audio",
                  "encoder": {"cell": "gru", "input_dim": 20, "hidden": 24, "layers": 1, "bidirectional": True,
                              "dropout": 0.2, "subsampling": "conv", "subsample_factor": 4, "conv_channels": 4},
                  "decoder": {"cell": "gru", "embed_dim": 8, "hidden": 24, "layers": 1, "attention": "dot", "dropout": 0.2}},
        "data": {"train": str(manifest), "tokenizer": "char", "max_frames": 1200, "cmvn": "global", "spec_augment": True,
                 "freq_width": 4, "time_width": 0.05, "max_duration": 30.0},
        "optim": {"lr": 0.003, "warmup_steps": 5},
        "epochs": 2, "checkpoint_every": 5, "log_every": 1, "device": "cpu", "threads": 1, "seed": 7,
    }
    for k, v in over.items():
        d[k] = v
    return TrainConfig.from_dict(d)


def fsdd_entries(fsdd_files: list[Path]) -> list[dict]:
    out = []
    for f in fsdd_files:
        info = sf.info(str(f))
        out.append({"audio_filepath": str(f), "duration": info.frames / info.samplerate,
                    "text": DIGITS[int(f.name[0])], "id": f.stem})
    return out


BAD_AUDIO_DURATION = 2.9  # declared for the bad files: they sort together, so one batch holds only bad items


def build_training_manifest(d: Path, fsdd_files: list[Path]) -> tuple[Path, dict]:
    """Good FSDD entries mixed with every bad audio case and every bad manifest line.

    Returns (manifest, expectations): ``unreadable`` ids the dataset must skip (and count) every epoch,
    ``manifest_causes`` the causes the manifest reader must report, ``usable`` ids that must train.
    """
    good = fsdd_entries(fsdd_files)
    lines: list[bytes] = []
    unreadable, usable, manifest_causes = [], [e["id"] for e in good], []
    audio_dir = d / "audio"
    audio_dir.mkdir()
    for case in AUDIO_CASES:
        if not case.train:
            continue
        path = case.build(audio_dir)
        dur = BAD_AUDIO_DURATION if case.expect == "error" else case.seconds
        lines.append(_line({"audio_filepath": str(path), "duration": dur, "text": "one", "id": case.name}))
        if case.skip_cause:
            manifest_causes.append(case.skip_cause)
        elif case.expect == "error":
            unreadable.append(case.name)
        else:
            usable.append(case.name)
    # The hour-long file: filtered (not an error) by max_duration, so the run never loads it.
    hour = make_hour(audio_dir)
    lines.append(_line({"audio_filepath": str(hour), "duration": HOUR, "text": "one", "id": "one_hour"}))
    for case in MANIFEST_CASES:
        if case.whole_file or case.cause in ("unencodable_text",):
            # The training tokenizer is built from the manifest's own text, so nothing is out of vocabulary
            # there; a whole non-JSON file is a manifest of its own (covered by run_manifest).
            continue
        lines.append(case.bad_line(d, Path(good[0]["audio_filepath"])).replace(b'"id": "good"', b'"id": "%s"' % good[0]["id"].encode()))
        manifest_causes.append(case.cause)
    # Interleave: bad lines spread through the good ones.
    out: list[bytes] = []
    step = max(1, len(good) // max(1, len(lines)))
    it = iter(lines)
    for i, e in enumerate(good):
        out.append(_line(e))
        if i % step == step - 1:
            out.extend(x for x in [next(it, None)] if x is not None)
    out.extend(it)
    path = d / "train.jsonl"
    path.write_bytes(b"\n".join(out) + b"\n")
    return path, {"unreadable": sorted(unreadable), "usable": sorted(usable), "manifest_causes": sorted(manifest_causes)}


def run_training(d: Path, fsdd_files: list[Path], **over) -> tuple[list[Result], dict]:
    """A real short training run on the mixed manifest. One Result per bad input fed to it."""
    from asr_s2s.checkpoint import load_checkpoint
    from asr_s2s.train import train

    manifest, want = build_training_manifest(d, fsdd_files)
    out = d / "exp"
    results: list[Result] = []
    info: dict = {"expected": want}
    try:
        model_path = train(training_config(manifest, **over), out, quiet=True)
    except BaseException as exc:  # noqa: BLE001
        detail = f"training died: {type(exc).__name__}: {exc}\n{''.join(traceback.format_exception(exc))}"
        for name in want["unreadable"] + want["manifest_causes"]:
            results.append(Result(name, "train", "skip", "crash", detail))
        return results, info
    state = load_checkpoint(out / "checkpoints" / "last.pt")["state"]
    events = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    skipped_ids = sorted({i for e in events if e.get("event") == "skipped_audio" for i in e.get("ids", [])})
    info.update(state=state, skipped_ids=skipped_ids, model=str(model_path))
    epochs = state["epoch"]
    for name in want["unreadable"]:
        ok = name in skipped_ids
        results.append(Result(name, "train", "skip", "skip" if ok else "crash",
                              "skipped and logged" if ok else f"not reported as skipped (logged: {skipped_ids})"))
    counted = state.get("skipped_utterances", None)
    if counted != len(want["unreadable"]) * epochs:
        results.append(Result("skip_count", "train", "skip", "crash",
                              f"state skipped_utterances={counted}, expected {len(want['unreadable'])} x {epochs} epochs"))
    if set(skipped_ids) - set(want["unreadable"]):
        results.append(Result("usable_audio", "train", "ok", "crash",
                              f"usable audio skipped: {sorted(set(skipped_ids) - set(want['unreadable']))}"))
    manifest_report = state.get("manifest_skipped", {})
    for cause in sorted(set(want["manifest_causes"])):
        n_want = want["manifest_causes"].count(cause)
        n_got = manifest_report.get(cause, 0)
        results.append(Result(f"manifest:{cause}", "train", "skip", "skip" if n_got == n_want else "crash",
                              f"{n_got} reported, {n_want} expected"))
    return results, info
