"""Audio loading: any file soundfile reads (WAV, FLAC, OGG/Vorbis, MP3, NIST SPHERE) or an in-memory
array, mixed down to mono float32 and resampled with soxr.

Every failure is an :class:`AudioError` whose message starts with the file and says the cause, so a
training run over a messy corpus can report (or skip and count) exactly what is wrong where.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Union

import numpy as np
import soundfile as sf
import soxr
import torch

SAMPLE_RATE = 16000
MIN_SAMPLE_RATE = 1000
AudioSource = Union[str, os.PathLike, np.ndarray, torch.Tensor]


class AudioError(Exception):
    """Audio that cannot be used; the message names the file (or '<array>') and the cause."""

    def __init__(self, source: object, cause: str):
        self.source = str(source)
        self.cause = cause
        super().__init__(f"{self.source}: {cause}")


def audio_info(path: Union[str, os.PathLike]) -> tuple[int, int, int]:
    """Cheap header read: ``(sample_rate, num_frames, channels)``. Raises AudioError."""
    path = _check_path(path)
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise AudioError(path, f"unreadable or unsupported audio ({_short(exc)})") from None
    return int(info.samplerate), int(info.frames), int(info.channels)


def load_audio(
    source: AudioSource,
    sample_rate: int = SAMPLE_RATE,
    *,
    orig_sample_rate: int | None = None,
    offset: float = 0.0,
    duration: float | None = None,
) -> torch.Tensor:
    """Load audio as a float32 mono tensor of shape ``(N,)`` at ``sample_rate``.

    Args:
        source: a file path, or a numpy array / tensor shaped (N,) or (N, C) (then
            ``orig_sample_rate`` is required). Integer arrays are scaled to [-1, 1].
        sample_rate: target rate; resampled with soxr's high-quality filter when it differs.
        offset, duration: seconds; read only that part of a file (segments in Kaldi/NeMo manifests).
    """
    in_memory = isinstance(source, (np.ndarray, torch.Tensor))
    _check_span("<array>" if in_memory else source, offset, duration)
    if in_memory:
        if orig_sample_rate is None:
            raise AudioError("<array>", "orig_sample_rate is required for in-memory audio")
        if isinstance(source, torch.Tensor):
            t = source.detach().cpu()
            # numpy has no bfloat16 (and no complex32...): widen reduced-precision floats first.
            data = (t.float() if t.is_floating_point() and t.dtype not in (torch.float32, torch.float64) else t).numpy()
        else:
            data = source
        data, rate, name = _to_float(np.asarray(data)), int(orig_sample_rate), "<array>"
        if data.ndim not in (1, 2):
            raise AudioError(name, f"expected (samples,) or (samples, channels), got shape {data.shape}")
        if offset or duration is not None:
            start = _frames(offset, rate)
            stop = None if duration is None else start + _frames(duration, rate)
            data = data[start:stop]
    else:
        name = _check_path(source)
        data, rate = _read_file(name, offset, duration)
    if data.ndim == 2 and data.shape[1] == 0:
        raise AudioError(name, f"zero channels (shape {data.shape})")
    if data.ndim == 2:
        # Mix down: average channels (axis 1 in soundfile's (frames, channels) layout).
        data = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    elif data.ndim != 1:
        raise AudioError(name, f"expected (samples,) or (samples, channels), got shape {data.shape}")
    if data.size == 0:
        raise AudioError(name, "zero samples")
    if not np.isfinite(data).all():
        raise AudioError(name, "non-finite samples (NaN or inf)")
    if rate < MIN_SAMPLE_RATE:
        # A corrupt header claiming e.g. 1 Hz would make resampling allocate 16000x the file.
        raise AudioError(name, f"implausible sample rate {rate} Hz (below {MIN_SAMPLE_RATE} Hz)")
    if rate != sample_rate:
        data = soxr.resample(data, rate, sample_rate, quality="HQ")
        if data.size == 0:  # e.g. 1 sample at 16001 Hz -> 8000 Hz
            raise AudioError(name, f"too short: no samples left after resampling {rate} -> {sample_rate} Hz")
    if not np.isfinite(data).all():  # finite but near float32's limit (corrupt float data) overflows on the way
        raise AudioError(name, "non-finite samples after mixing/resampling (absurd amplitudes: corrupt float data?)")
    return torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))


def _frames(seconds: float, rate: int) -> int:
    """Seconds -> frame count, saturating instead of overflowing for absurd values."""
    return int(round(min(seconds * rate, 2.0**62)))


def _check_span(name: object, offset: float, duration: float | None) -> None:
    """offset >= 0 and duration > 0, both finite: a negative one would silently read the wrong samples."""
    try:
        off_ok = math.isfinite(offset) and offset >= 0
        dur_ok = duration is None or (math.isfinite(duration) and duration > 0)
    except TypeError:
        off_ok = dur_ok = False
    if not off_ok:
        raise AudioError(name, f"invalid offset {offset!r} (seconds, finite, >= 0)")
    if not dur_ok:
        raise AudioError(name, f"invalid duration {duration!r} (seconds, finite, > 0, or None for the rest)")


def _check_path(path: Union[str, os.PathLike]) -> Path:
    p = Path(path)
    if not p.exists():
        raise AudioError(p, "file not found")
    if p.is_dir():
        raise AudioError(p, "is a directory, not an audio file")
    return p


def _wav_shortfall(path: Path) -> int:
    """Bytes a RIFF/WAVE file's data chunk declares beyond the end of the file (0 if complete).

    libsndfile silently shortens a truncated WAV to what is on disk, so the header is checked here.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return 0
            size = os.fstat(f.fileno()).st_size
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    return 0
                cid, clen = chunk[:4], int.from_bytes(chunk[4:], "little")
                if cid == b"data":
                    # 0 and 0xFFFFFFFF are streaming placeholders, not promises.
                    return 0 if clen in (0, 0xFFFFFFFF) else max(0, f.tell() + clen - size)
                f.seek(clen + (clen & 1), os.SEEK_CUR)
    except OSError:
        return 0


def _read_file(path: Path, offset: float, duration: float | None) -> tuple[np.ndarray, int]:
    missing = _wav_shortfall(path)
    if missing:
        raise AudioError(path, f"truncated: the WAV data chunk is {missing} bytes longer than the file")
    try:
        with sf.SoundFile(str(path)) as f:
            rate, declared = f.samplerate, f.frames
            start = _frames(offset, rate)
            if start > declared:
                raise AudioError(path, f"offset {offset:.3f}s is past the end ({declared / rate:.3f}s)")
            want = declared - start if duration is None else min(_frames(duration, rate), declared - start)
            if start:
                f.seek(start)
            data = f.read(frames=want, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as exc:
        raise AudioError(path, f"unreadable or unsupported audio ({_short(exc)})") from None
    if data.shape[0] < want:
        # libsndfile returns what is there when the header promises more: a truncated file.
        raise AudioError(path, f"truncated: header declares {want} frames from offset, only {data.shape[0]} readable")
    return data, int(rate)


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _to_float(data: np.ndarray) -> np.ndarray:
    if np.issubdtype(data.dtype, np.integer):
        half = float(2 ** (8 * data.dtype.itemsize - 1))
        centre = half if np.issubdtype(data.dtype, np.unsignedinteger) else 0.0  # uint8 WAV is offset
        return ((data.astype(np.float64) - centre) / half).astype(np.float32)
    if np.issubdtype(data.dtype, np.floating):
        if data.dtype.itemsize > 4 and data.size and np.isfinite(data).all() and np.abs(data).max() > _FLOAT32_MAX:
            raise AudioError("<array>", f"samples beyond float32's range (max |x| {float(np.abs(data).max()):.3g}): "
                                        "corrupt float data?")
        with np.errstate(over="ignore"):  # NaN/inf are reported by the caller, with the audio's name
            return data.astype(np.float32, copy=False)
    raise AudioError("<array>", f"unsupported sample dtype {data.dtype}")


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
