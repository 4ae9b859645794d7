"""Audio loading: every format through soundfile, resampling, mixdown, and one error type naming the file."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from asr_s2s.audio import AudioError, audio_info, load_audio


def tone(seconds: float, rate: int, channels: int = 1, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = 0.5 * np.sin(2 * math.pi * freq * t).astype(np.float32)
    return np.stack([x * (c + 1) / channels for c in range(channels)], axis=1) if channels > 1 else x


@pytest.mark.parametrize(
    "fmt,subtype,ext",
    [("WAV", "PCM_16", "wav"), ("WAV", "PCM_24", "wav"), ("WAV", "PCM_U8", "wav"), ("WAV", "FLOAT", "wav"),
     ("FLAC", "PCM_16", "flac"), ("OGG", "VORBIS", "ogg"), ("MP3", "MPEG_LAYER_III", "mp3")],
)
def test_formats_load_to_right_length_and_rate(tmp_path: Path, fmt: str, subtype: str, ext: str) -> None:
    path = tmp_path / f"a.{ext}"
    sf.write(path, tone(1.5, 22050), 22050, format=fmt, subtype=subtype)
    wave = load_audio(path, 16000)
    assert wave.dtype == torch.float32 and wave.dim() == 1
    # Lossy codecs add encoder delay/padding of a few ms; lossless must be exact to the sample.
    slack = 0 if fmt in ("WAV", "FLAC") else int(0.1 * 16000)
    assert abs(len(wave) - 24000) <= slack
    assert 0.2 < wave.abs().max() <= 1.0


def test_fsdd_wav_8k_is_resampled(fsdd_files: list[Path]) -> None:
    path = fsdd_files[0]
    rate, frames, channels = audio_info(path)
    assert (rate, channels) == (8000, 1)
    wave = load_audio(path, 16000)
    assert abs(len(wave) - 2 * frames) <= 1
    native = load_audio(path, 8000)
    assert len(native) == frames


def test_an4_sphere_loads(an4_dir: Path) -> None:
    sph = next(iter(sorted((an4_dir / "wav").rglob("*.sph"))))
    rate, frames, _ = audio_info(sph)
    assert rate == 16000
    wave = load_audio(sph)
    assert len(wave) == frames and torch.isfinite(wave).all() and wave.abs().max() > 0


def test_resampling_preserves_a_tone(tmp_path: Path) -> None:
    path = tmp_path / "t.wav"
    sf.write(path, tone(1.0, 44100, freq=1000.0), 44100)
    wave = load_audio(path, 16000).numpy()
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * 16000 / len(wave) - 1000.0) < 2.0


def test_multichannel_is_mixed_down(tmp_path: Path) -> None:
    path = tmp_path / "st.wav"
    stereo = tone(0.5, 16000, channels=2)
    sf.write(path, stereo, 16000, subtype="FLOAT")
    wave = load_audio(path)
    np.testing.assert_allclose(wave.numpy(), stereo.mean(axis=1), atol=1e-6)


def test_offset_and_duration(tmp_path: Path) -> None:
    path = tmp_path / "seg.wav"
    x = np.linspace(-0.5, 0.5, 16000, dtype=np.float32)
    sf.write(path, x, 16000, subtype="FLOAT")
    seg = load_audio(path, offset=0.25, duration=0.5)
    np.testing.assert_allclose(seg.numpy(), x[4000:12000], atol=1e-7)


def test_arrays_int_and_float(tmp_path: Path) -> None:
    x = (tone(0.25, 8000) * 32767).astype(np.int16)
    wave = load_audio(x, 16000, orig_sample_rate=8000)
    assert len(wave) == 4000 and 0.45 < wave.abs().max() < 0.55
    same = load_audio(torch.from_numpy(tone(0.25, 16000)), 16000, orig_sample_rate=16000)
    assert len(same) == 4000
    u8 = np.full(100, 128, dtype=np.uint8)
    assert load_audio(u8, 8000, orig_sample_rate=8000).abs().max() == 0


def _truncated(tmp: Path) -> Path:
    p = tmp / "trunc.wav"
    sf.write(p, tone(1.0, 16000), 16000)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return p


def _header_only(tmp: Path) -> Path:
    p = tmp / "hdr.wav"
    sf.write(p, tone(1.0, 16000), 16000)
    p.write_bytes(p.read_bytes()[:44])
    return p


def _empty(tmp: Path) -> Path:
    p = tmp / "empty.wav"
    sf.write(p, np.zeros(0, dtype=np.float32), 16000)
    return p


def _garbage(tmp: Path) -> Path:
    p = tmp / "noise.wav"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return p


def _nan(tmp: Path) -> Path:
    p = tmp / "nan.wav"
    x = tone(0.1, 16000)
    x[10] = np.nan
    sf.write(p, x, 16000, subtype="FLOAT")
    return p


def _unsupported(tmp: Path) -> Path:
    p = tmp / "doc.txt"
    p.write_text("this is not audio\n")
    return p


def _directory(tmp: Path) -> Path:
    p = tmp / "dir.wav"
    p.mkdir()
    return p


@pytest.mark.parametrize(
    "make,cause",
    [(lambda t: t / "missing.wav", "file not found"), (_truncated, "truncated"), (_header_only, "truncated"),
     (_empty, "zero samples"), (_garbage, "unreadable"), (_nan, "non-finite"), (_unsupported, "unreadable"),
     (_directory, "directory")],
)
def test_errors_name_the_file_and_cause(tmp_path: Path, make, cause: str) -> None:
    path = make(tmp_path)
    with pytest.raises(AudioError) as err:
        load_audio(path)
    assert str(path) in str(err.value) and cause in str(err.value)
    assert err.value.source == str(path)


def test_array_errors() -> None:
    with pytest.raises(AudioError, match="orig_sample_rate"):
        load_audio(np.zeros(10, dtype=np.float32))
    with pytest.raises(AudioError, match="zero samples"):
        load_audio(np.zeros(0, dtype=np.float32), orig_sample_rate=16000)
    with pytest.raises(AudioError, match="non-finite"):
        load_audio(np.array([0.0, np.inf], dtype=np.float32), orig_sample_rate=16000)
    # finite float64 samples that float32 cannot hold: named as such, not as NaN/inf
    with pytest.raises(AudioError, match="beyond float32's range"):
        load_audio(np.array([0.0, 1e300]), orig_sample_rate=16000)
    with pytest.raises(AudioError, match="non-finite"):
        load_audio(np.array([0.0, np.nan]), orig_sample_rate=16000)
    assert load_audio(np.array([0.0, 0.5, -0.25]), 16000, orig_sample_rate=16000).dtype == torch.float32
