"""Bad-input suite: broken audio and manifests built on the spot, fed to the real entry points.

Each input must end as a clear error (the message names the file - and line - and the cause), a counted
and reported skip, or a correct load when the input is merely unusual (silence, 6 channels, 1 kHz,
192 kHz, a 1-hour file). Never a crash halfway, never silence. The cases live in ``tests/bad_inputs.py``;
``python bench/reliability_report.py`` runs the same cases and prints the summary table.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path

import pytest

import bad_inputs as B
from asr_s2s.audio import AudioError, audio_info, load_audio
from asr_s2s.manifest import ManifestError, read_manifest


def _explain(r: B.Result) -> str:
    return f"{r.case} via {r.entry}: expected {r.expect}, got {r.outcome}\n{r.detail}"


@pytest.mark.parametrize("case", B.AUDIO_CASES, ids=lambda c: c.name)
def test_load_audio(case: B.AudioCase, tmp_path: Path) -> None:
    r = B.run_load_audio(case, tmp_path)
    assert r.passed, _explain(r)


@pytest.mark.parametrize("case", B.AUDIO_CASES, ids=lambda c: c.name)
def test_audio_dataset_skip_mode(case: B.AudioCase, tmp_path: Path) -> None:
    r = B.run_dataset_skip(case, tmp_path)
    assert r.passed, _explain(r)


@pytest.mark.parametrize("mode", ["raise", "skip"])
@pytest.mark.parametrize("case", B.MANIFEST_CASES, ids=lambda c: c.name)
def test_read_manifest(case: B.ManifestCase, mode: str, tmp_path: Path, fsdd_files: list[Path]) -> None:
    r = B.run_manifest(case, tmp_path, fsdd_files[0], mode)
    assert r.passed, _explain(r)


# ---------------------------------------------------------------------------------------- specifics
def test_silence_is_not_an_error(tmp_path: Path) -> None:
    wave = load_audio(B.make_silent(tmp_path), 16000)
    assert wave.shape == (16000,) and float(wave.abs().max()) == 0.0


def test_error_attributes_name_file_and_cause(tmp_path: Path) -> None:
    p = B.make_truncated(tmp_path)
    with pytest.raises(AudioError) as ei:
        load_audio(p)
    assert ei.value.source == str(p) and "truncated" in ei.value.cause
    m, line = B.write_case_manifest(B.MANIFEST_CASES[3], tmp_path, B.make_silent(tmp_path))  # non-UTF-8 line
    with pytest.raises(ManifestError) as ei:
        read_manifest(m)
    assert (ei.value.path, ei.value.line, ei.value.cause) == (str(m), line, "invalid_utf8")


def test_hour_long_file_slice_is_cheap(tmp_path: Path) -> None:
    """A 1-hour file: the header says so, and a 1 s slice at 30 min reads 1 s, not the hour."""
    p = B.make_hour(tmp_path)
    assert audio_info(p) == (16000, int(B.HOUR * 16000), 1)
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        wave = load_audio(p, 8000, offset=1800.0, duration=1.0)
        dt = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert wave.shape == (8000,)
    assert peak < 8 << 20, f"1 s slice of a 1 h file peaked at {peak >> 20} MiB"
    assert dt < 2.0
    with pytest.raises(AudioError, match="past the end"):
        load_audio(p, offset=B.HOUR + 1)


@pytest.mark.slow
def test_hour_long_file_full_load_memory(tmp_path: Path) -> None:
    """Loading the whole hour works and costs about the output size (float32), not a multiple of it."""
    p = B.make_hour(tmp_path)
    tracemalloc.start()
    try:
        wave = load_audio(p, 16000)
        peak = tracemalloc.get_traced_memory()[1]
        out_bytes = wave.numel() * 4
        assert wave.shape == (int(B.HOUR * 16000),)
        del wave
        tracemalloc.reset_peak()
        wave8 = load_audio(p, 8000)  # + resampling
        peak8 = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert wave8.shape == (int(B.HOUR * 8000),)
    assert peak < 1.5 * out_bytes + (32 << 20), f"peak {peak >> 20} MiB for a {out_bytes >> 20} MiB result"
    assert peak8 < 2.0 * out_bytes + (32 << 20), f"peak {peak8 >> 20} MiB with resampling"


# ------------------------------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory, fsdd_files):
    d = tmp_path_factory.mktemp("mixed_run")
    results, info = B.run_training(d, fsdd_files)
    return d, results, info


def test_training_survives_and_counts_every_bad_input(mixed_run) -> None:
    d, results, info = mixed_run
    bad = [r for r in results if not r.passed]
    assert not bad, "\n".join(_explain(r) for r in bad)
    state = info["state"]
    assert state["done"] and state["step"] > 0
    want = info["expected"]
    # Every unreadable file is skipped once per epoch, counted and logged with its id.
    assert state["skipped_utterances"] == len(want["unreadable"]) * state["epoch"]
    assert info["skipped_ids"] == want["unreadable"]
    assert state["manifest_skipped"]["filtered_too_long"] == 1  # the 1-hour file: filtered, never loaded
    assert Path(info["model"]).is_file()


def test_training_reports_skips_in_metrics(mixed_run) -> None:
    d, _, info = mixed_run
    events = [json.loads(x) for x in (d / "exp" / "metrics.jsonl").read_text().splitlines()]
    man = [e for e in events if e.get("event") == "manifest_skipped"]
    assert man and man[0]["missing_audio"] == info["expected"]["manifest_causes"].count("missing_audio")
    skipped = [e for e in events if e.get("event") == "skipped_audio"]
    assert sum(e["count"] for e in skipped) == info["state"]["skipped_utterances"]


def test_training_on_a_manifest_that_is_not_json(tmp_path: Path) -> None:
    from asr_s2s.train import train

    m = tmp_path / "train.jsonl"
    m.write_bytes(b"<html><body>404 Not Found</body></html>\n")
    with pytest.raises(ValueError, match=rf"{m}.*no usable training entries"):
        train(B.training_config(m), tmp_path / "exp", quiet=True)


def test_training_on_a_missing_manifest(tmp_path: Path) -> None:
    from asr_s2s.train import train

    m = tmp_path / "nope.jsonl"
    with pytest.raises(ManifestError, match=rf"{m}: missing_manifest"):
        train(B.training_config(m), tmp_path / "exp", quiet=True)
