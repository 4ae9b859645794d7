"""Feature frontend as batched ``nn.Module``s: log-mel, CMVN (utterance or global), SpecAugment.

Everything works on padded batches with lengths and never lets padding leak: the waveform is
zeroed past each length before the STFT, centre padding is zeros (librosa's default since 0.10),
so a frame of a short utterance sees exactly what it would see alone; padded frames come out 0.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Iterable, Optional

import numpy as np
import torch
from torch import nn


@dataclass
class FeatureConfig:
    """Log-mel settings. Defaults: 80 mels, 25 ms window, 10 ms hop at 16 kHz."""

    sample_rate: int = 16000
    n_mels: int = 80
    win_ms: float = 25.0
    hop_ms: float = 10.0
    n_fft: Optional[int] = None  # None: next power of two >= window
    f_min: float = 0.0
    f_max: Optional[float] = None  # None: Nyquist
    log_floor: float = 1e-10
    mel_scale: str = "slaney"  # "slaney" (librosa default) or "htk"
    mel_norm: Optional[str] = "slaney"  # area normalisation of the filters, or None
    center: bool = True
    # Gain invariance: each utterance's log-mel is shifted so that its loud frames sit at 0 and floored
    # LEVEL_RANGE_DB below them (normalize_level), so a quiet microphone or a hot one gives the same features.
    level_norm: bool = False

    @property
    def win_length(self) -> int:
        return int(round(self.sample_rate * self.win_ms / 1000))

    @property
    def hop_length(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000))

    @property
    def fft_size(self) -> int:
        return self.n_fft or 1 << (self.win_length - 1).bit_length()

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown feature options: {sorted(unknown)}")
        return cls(**d)


def _valid_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,) lengths -> (B, max_len) bool mask of real positions."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def zero_padding(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """x (B, T, ...) with the frames past each length set to 0; x itself where no row is padded and that is known
    without a device sync (lengths on the CPU): two kernels fewer per batch-1 utterance."""
    if lengths.device.type == "cpu" and int(lengths.min()) >= x.shape[1]:
        return x
    mask = _valid_mask(lengths, x.shape[1])
    return x.masked_fill(~mask.view(*mask.shape, *(1,) * (x.dim() - 2)), 0.0)


def hz_to_mel(hz: np.ndarray, htk: bool = False) -> np.ndarray:
    """Hertz -> mels: HTK's ``2595 log10(1 + f/700)``, or Slaney's (linear below 1 kHz, logarithmic above)."""
    hz = np.asanyarray(hz, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + hz / 700.0)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    mels = hz / f_sp
    return np.where(hz >= min_log_hz, min_log_hz / f_sp + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep, mels)


def mel_to_hz(mels: np.ndarray, htk: bool = False) -> np.ndarray:
    """The inverse of :func:`hz_to_mel`."""
    mels = np.asanyarray(mels, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), f_sp * mels)


def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None, *,
                   htk: bool = False, norm: str | None = "slaney") -> np.ndarray:
    """Triangular mel filters ``(n_mels, n_fft // 2 + 1)`` float32, the same matrix as
    ``librosa.filters.mel`` (a test holds them equal). Written here because importing librosa's filters
    pulls in scipy.signal and numba: ~1.5-3 s of every process start, for one small matrix."""
    fmax = sr / 2.0 if fmax is None else fmax
    fft_hz = np.linspace(0.0, sr / 2.0, n_fft // 2 + 1)
    mel_hz = mel_to_hz(np.linspace(hz_to_mel(fmin, htk), hz_to_mel(fmax, htk), n_mels + 2), htk)
    widths = np.diff(mel_hz)
    ramps = mel_hz[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    if norm == "slaney":
        weights *= (2.0 / (mel_hz[2 : n_mels + 2] - mel_hz[:n_mels]))[:, None]
    elif norm is not None:
        raise ValueError(f"mel norm must be 'slaney' or None, not {norm!r}")
    return weights.astype(np.float32)


class LogMel(nn.Module):
    """Waveforms ``(B, N)`` + lengths ``(B,)`` -> log-mel ``(B, T, n_mels)`` + frame lengths ``(B,)``."""

    def __init__(self, cfg: FeatureConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or FeatureConfig()
        if cfg.win_length > cfg.fft_size:
            raise ValueError(f"window {cfg.win_length} longer than n_fft {cfg.fft_size}")
        mel = mel_filterbank(cfg.sample_rate, cfg.fft_size, cfg.n_mels, cfg.f_min, cfg.f_max,
                             htk=cfg.mel_scale == "htk", norm=cfg.mel_norm)
        # (n_freq, n_mels): a matmul on the last axis; buffers follow .to(device) and aren't trained.
        self.register_buffer("mel_fb", torch.from_numpy(mel).T.contiguous(), persistent=False)
        self.register_buffer("window", torch.hann_window(cfg.win_length, periodic=True), persistent=False)

    def num_frames(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frame count for sample counts, without computing features."""
        hop = self.cfg.hop_length
        if self.cfg.center:
            return lengths // hop + 1
        return torch.clamp((lengths - self.cfg.fft_size) // hop + 1, min=0)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if wave.dim() == 1:
            wave = wave[None]
        if lengths is None:
            lengths = torch.full((wave.shape[0],), wave.shape[1], dtype=torch.long, device=wave.device)
        lengths = lengths.to(wave.device)
        frames = self.num_frames(lengths)
        out = wave.new_zeros(wave.shape[0], int(self.num_frames(torch.tensor(wave.shape[1]))), self.cfg.n_mels)
        # Work through the batch in row chunks of about CHUNK_SAMPLES, each trimmed to its own
        # longest row: the complex STFT is 6x the size of the log-mel, and keeping it cache-sized
        # is ~5x faster on CPU than one batch-wide STFT (measured by bench/bench_features.py).
        rows = max(1, self.CHUNK_SAMPLES // max(1, wave.shape[1]))
        for i in range(0, wave.shape[0], rows):
            n = int(lengths[i : i + rows].max())
            feats = self._logmel(wave[i : i + rows, :n].float(), lengths[i : i + rows])
            if feats.shape == out.shape:  # one chunk, the longest row as long as the batch: nothing to place
                out = feats
            else:
                out[i : i + rows, : feats.shape[1]] = feats
        if self.cfg.level_norm:
            out = normalize_level(out, frames)
        return zero_padding(out, frames), frames

    CHUNK_SAMPLES = 1 << 17

    def _logmel(self, wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(b, n) waveforms -> (b, t, n_mels) log-mel; padding zeroed first so it cannot leak."""
        if int(lengths.min()) < wave.shape[1]:
            wave = wave * _valid_mask(lengths, wave.shape[1])
        cfg = self.cfg
        spec = torch.stft(
            wave, n_fft=cfg.fft_size, hop_length=cfg.hop_length, win_length=cfg.win_length,
            window=self.window, center=cfg.center, pad_mode="constant", return_complex=True,
        )  # (b, F, t)
        power = spec.real.square() + spec.imag.square()
        mel = torch.matmul(power.transpose(1, 2), self.mel_fb)  # (b, t, n_mels)
        return torch.log(torch.clamp(mel, min=cfg.log_floor))


LEVEL_TOP_PERCENT = 5  # the reference: the frame energy 5% from the top, i.e. loud speech rather than one click
LEVEL_RANGE_DB = 80.0  # what is kept below that level; digital silence and the log floor land on the same value


def normalize_level(feats: torch.Tensor, lengths: torch.Tensor, top_percent: int = LEVEL_TOP_PERCENT,
                    range_db: float = LEVEL_RANGE_DB) -> torch.Tensor:
    """Log-mel ``(B, T, F)`` (frames past ``lengths`` ignored) -> the same shifted per utterance so that its reference
    level is 0, clamped at ``-range_db``.

    A frame's energy is the log of its mean mel power; the reference is the energy of an utterance's frame at rank
    ``(n - 1) * top_percent // 100`` from the loudest (integer arithmetic, so every runtime picks the same frame).
    A gain g on the waveform adds 2 ln g to every value and to the reference, so it cancels wherever no value sat at
    the log floor; the clamp makes the rest agree too. Global CMVN then sees every recording at one
    level, which neither a ±6 dB gain augmentation nor the training corpora's few microphones teach a model."""
    t = feats.shape[1]
    energy = feats.exp().mean(-1).log()  # (B, T); exp is safe: mel powers of audio in [-1, 1] are far below overflow
    energy = energy.masked_fill(~_valid_mask(lengths, t), float("-inf"))
    ordered = energy.sort(dim=1, descending=True).values
    k = (lengths.clamp(min=1, max=t) - 1) * top_percent // 100  # (B,) rank of the reference frame
    ref = ordered.gather(1, k[:, None])  # (B, 1)
    return (feats - ref[..., None]).clamp_(min=-range_db * math.log(10.0) / 10.0)


class UtteranceCMVN(nn.Module):
    """Per-utterance mean/variance normalisation over the valid frames only."""

    def __init__(self, norm_vars: bool = True, eps: float = 1e-5):
        super().__init__()
        self.norm_vars, self.eps = norm_vars, eps

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = _valid_mask(lengths, feats.shape[1])[..., None].to(feats.dtype)  # (B, T, 1)
        count = mask.sum(1, keepdim=True).clamp(min=1)
        mean = (feats * mask).sum(1, keepdim=True) / count
        out = feats - mean
        if self.norm_vars:
            var = (out.square() * mask).sum(1, keepdim=True) / count
            out = out / torch.sqrt(var + self.eps)
        return out * mask


class GlobalCMVN(nn.Module):
    """Corpus-level mean/std (fitted on training features, saved with the model as buffers)."""

    def __init__(self, n_mels: int = 80, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(n_mels))
        self.register_buffer("std", torch.ones(n_mels))

    @torch.no_grad()
    def fit(self, feats: Iterable[torch.Tensor]) -> "GlobalCMVN":
        """Accumulate statistics from ``(T, F)`` feature matrices (valid frames only), in float64."""
        total = sq = None
        count = 0
        for f in feats:
            f = f.to(torch.float64).reshape(-1, f.shape[-1])
            total = f.sum(0) if total is None else total + f.sum(0)
            sq = f.square().sum(0) if sq is None else sq + f.square().sum(0)
            count += f.shape[0]
        if not count:
            raise ValueError("GlobalCMVN.fit got no frames")
        mean = total / count
        var = (sq / count - mean.square()).clamp(min=0)
        self.mean.copy_(mean.float())
        self.std.copy_(torch.sqrt(var + self.eps).float())
        return self

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return zero_padding((feats - self.mean) / self.std, lengths)


class SpecAugment(nn.Module):
    """Frequency and time masking (Park et al. 2019), active only in training mode.

    Masks are drawn per utterance inside its valid region; the masked value is 0, i.e. the mean
    after CMVN. Time-mask width is a fraction of each utterance's length, so short utterances
    are not wiped out.
    """

    def __init__(self, freq_masks: int = 2, freq_width: int = 27, time_masks: int = 2, time_width: float = 0.05):
        super().__init__()
        self.freq_masks, self.freq_width = freq_masks, freq_width
        self.time_masks, self.time_width = time_masks, time_width

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return feats
        b, t, f = feats.shape
        dev = feats.device
        keep = torch.ones(b, t, f, dtype=torch.bool, device=dev)
        bins = torch.arange(f, device=dev)[None, :]
        for _ in range(self.freq_masks):
            width = torch.randint(0, self.freq_width + 1, (b, 1), device=dev).clamp(max=f)
            start = (torch.rand(b, 1, device=dev) * (f - width + 1)).long()
            keep &= ~((bins >= start) & (bins < start + width))[:, None, :]
        steps = torch.arange(t, device=dev)[None, :]
        max_w = (lengths.to(dev).float() * self.time_width).floor().long()[:, None]
        for _ in range(self.time_masks):
            width = (torch.rand(b, 1, device=dev) * (max_w + 1).float()).long()
            start = (torch.rand(b, 1, device=dev) * (lengths.to(dev)[:, None] - width + 1).clamp(min=1).float()).long()
            keep &= ~((steps >= start) & (steps < start + width))[:, :, None]
        return feats * keep


def feature_frames(duration_s: float, cfg: FeatureConfig) -> int:
    """Frames an utterance of ``duration_s`` seconds yields (for length bucketing without loading audio)."""
    samples = int(round(duration_s * cfg.sample_rate))
    return samples // cfg.hop_length + 1 if cfg.center else max(0, (samples - cfg.fft_size) // cfg.hop_length + 1)


__all__ = ["FeatureConfig", "LogMel", "UtteranceCMVN", "GlobalCMVN", "SpecAugment", "feature_frames"]
