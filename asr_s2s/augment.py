"""Waveform augmentation that simulates new speakers, rooms and channels, drawn on the fly per training item.

Configured by ``data.augment`` (a mapping of parts, each with its probability ``p``; an empty mapping is off)::

    data:
      augment:
        vtlp:      {p: 0.3, alpha: [0.9, 1.1]}          # vocal-tract-length (formant) warp, STFT domain
        pitch:     {p: 0.0, semitones: [-2, 2]}          # pitch shift, length kept (librosa; costly, see below)
        reverb:    {p: 0.3, rt60: [0.2, 0.8], rooms: 32} # simulated shoebox rooms (pyroomacoustics), FFT convolution
        noise:     {p: 0.5, snr_db: [5, 30], sources: [colored, babble, nonspeech]}
        gain:      {p: 0.5, db: [-6, 6]}
        telephone: {p: 0.2, mulaw: 0.5}                  # 300-3400 Hz band-pass, then mu-law 8 bit with prob. mulaw
        codec:     {p: 0.1, formats: [mp3, ogg], quality: [0.5, 1.0]}  # real lossy encode/decode round trip

Parts apply in that order (speaker -> room -> noise in the room -> microphone gain -> channel -> codec).
Speed perturbation stays ``data.speed_perturb`` (it changes the length, these parts never do): every part
maps a waveform ``(N,)`` float32 at rate ``sr`` to ``(N,)`` float32 at the same rate.

Determinism: each part of item ``index`` in epoch ``epoch`` draws from its own generator seeded with
``(seed, epoch, index, part)``, never from a global RNG, so the draws depend neither on DataLoader workers nor
on the order items are loaded in, a resumed run draws exactly what an uninterrupted one does, and changing one
part's probability leaves the other parts' draws as they were.

Noise sources (no noise corpus is needed): ``colored`` synthesises white, pink or brown noise (1/f^beta
spectrum, beta 0, 1 or 2); ``babble`` mixes 3-5 other training utterances; ``nonspeech`` tiles the
lowest-energy frames (pauses, room tone) of another training utterance.

Measured cost on one core, 8 kHz, ms per second of audio (``bench/augment_cost.py``): see recipes/fsdd/README.md.
"""

from __future__ import annotations

import dataclasses
import io
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

PARTS = ("vtlp", "pitch", "reverb", "noise", "gain", "telephone", "codec")
NOISE_SOURCES = ("colored", "babble", "nonspeech")
CODEC_FORMATS = {"mp3": ("MP3", "MPEG_LAYER_III"), "ogg": ("OGG", "VORBIS"), "opus": ("OGG", "OPUS")}


# ------------------------------------------------------------------------------------------------- config
@dataclass
class VtlpConfig:
    p: float = 0.0
    alpha: tuple[float, float] = (0.9, 1.1)  # frequency warp factor range (Jaitly & Hinton 2013 used 0.9-1.1)


@dataclass
class PitchConfig:
    p: float = 0.0
    semitones: tuple[float, float] = (-2.0, 2.0)


@dataclass
class ReverbConfig:
    p: float = 0.0
    rt60: tuple[float, float] = (0.2, 0.8)  # seconds
    rooms: int = 32  # impulse responses in the bank (simulated once per process, seeded)


@dataclass
class NoiseConfig:
    p: float = 0.0
    snr_db: tuple[float, float] = (5.0, 30.0)
    sources: tuple[str, ...] = NOISE_SOURCES


@dataclass
class GainConfig:
    p: float = 0.0
    db: tuple[float, float] = (-6.0, 6.0)


@dataclass
class TelephoneConfig:
    p: float = 0.0
    mulaw: float = 0.5  # probability of 8-bit mu-law companding after the band-pass


@dataclass
class CodecConfig:
    p: float = 0.0
    formats: tuple[str, ...] = ("mp3", "ogg")
    quality: tuple[float, float] = (0.5, 1.0)  # libsndfile compression level: 1 is the lowest bit rate


_SECTIONS: dict[str, type] = {"vtlp": VtlpConfig, "pitch": PitchConfig, "reverb": ReverbConfig, "noise": NoiseConfig,
                              "gain": GainConfig, "telephone": TelephoneConfig, "codec": CodecConfig}
# Ranges a pair's values must lie in: (low, high) inclusive.
_PAIR_BOUNDS: dict[str, tuple[float, float]] = {
    "vtlp.alpha": (0.5, 2.0), "pitch.semitones": (-12.0, 12.0), "reverb.rt60": (0.05, 3.0), "noise.snr_db": (-20.0, 100.0),
    "gain.db": (-60.0, 60.0), "codec.quality": (0.0, 1.0)}


@dataclass
class AugmentConfig:
    """Validated ``data.augment``: one section per part (absent = probability 0)."""

    vtlp: VtlpConfig = field(default_factory=VtlpConfig)
    pitch: PitchConfig = field(default_factory=PitchConfig)
    reverb: ReverbConfig = field(default_factory=ReverbConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    gain: GainConfig = field(default_factory=GainConfig)
    telephone: TelephoneConfig = field(default_factory=TelephoneConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)

    @property
    def active(self) -> bool:
        return any(getattr(self, name).p > 0 for name in PARTS)

    @classmethod
    def from_dict(cls, d: Optional[dict], prefix: str = "data.augment") -> "AugmentConfig":
        """Check ``d`` and build the config; a ValueError names the offending key (``data.augment.noise.p``)."""
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise ValueError(f"config {prefix} must be a mapping of parts ({', '.join(PARTS)}), got {d!r}")
        unknown = sorted(set(d) - set(PARTS))
        if unknown:
            raise ValueError(f"unknown config keys: {[f'{prefix}.{k}' for k in unknown]} (parts: {', '.join(PARTS)})")
        out = cls()
        for name, sec in d.items():
            key = f"{prefix}.{name}"
            if sec is None:
                continue
            if not isinstance(sec, dict):
                raise ValueError(f"config {key} must be a mapping such as {{p: 0.3}}, got {sec!r}")
            sec_cls = _SECTIONS[name]
            names = {f.name for f in dataclasses.fields(sec_cls)}
            bad = sorted(set(sec) - names)
            if bad:
                raise ValueError(f"unknown config keys: {[f'{key}.{k}' for k in bad]} (known: {', '.join(sorted(names))})")
            values = {}
            for f in dataclasses.fields(sec_cls):
                if f.name in sec:
                    values[f.name] = _check(f"{key}.{f.name}", f"{name}.{f.name}", sec[f.name], getattr(sec_cls(), f.name))
            setattr(out, name, sec_cls(**values))
        return out

    def to_dict(self) -> dict:
        """Only the parts that are on, with lists for ranges (YAML-friendly)."""
        d: dict[str, Any] = {}
        for name in PARTS:
            sec = getattr(self, name)
            if sec.p > 0:
                d[name] = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(sec).items()}
        return d


def _number(key: str, v: Any) -> float:
    if isinstance(v, str):  # YAML 1.1 reads 3e-1 as a string
        try:
            v = float(v)
        except ValueError:
            pass
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"config {key} must be a number, got {v!r}")
    return float(v)


def _check(key: str, short: str, v: Any, default: Any) -> Any:
    field_name = short.split(".")[1]
    if field_name in ("p", "mulaw"):
        x = _number(key, v)
        if not 0.0 <= x <= 1.0:
            raise ValueError(f"config {key} must be a probability in [0, 1], got {v!r}")
        return x
    if field_name == "rooms":
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1024:
            raise ValueError(f"config {key} must be an integer in [1, 1024], got {v!r}")
        return v
    if field_name in ("sources", "formats"):
        allowed = NOISE_SOURCES if field_name == "sources" else tuple(CODEC_FORMATS)
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, (list, tuple)) or not v or any(s not in allowed for s in v):
            raise ValueError(f"config {key} must be a non-empty list of {', '.join(allowed)}, got {v!r}")
        return tuple(v)
    # a [low, high] range (a single number means a fixed value)
    if isinstance(v, (int, float, str)) and not isinstance(v, bool):
        v = [v, v]
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise ValueError(f"config {key} must be a [low, high] pair, got {v!r}")
    lo, hi = _number(key, v[0]), _number(key, v[1])
    blo, bhi = _PAIR_BOUNDS[short]
    if not blo <= lo <= hi <= bhi:
        raise ValueError(f"config {key} must be [low, high] with {blo} <= low <= high <= {bhi}, got {list(v)!r}")
    return (lo, hi)


# ------------------------------------------------------------------------------------------------ the parts
def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def colored_noise(n: int, beta: float, rng: np.random.Generator) -> np.ndarray:
    """``(n,)`` float32 noise of unit RMS with power spectrum ~ 1/f^beta (0 white, 1 pink, 2 brown)."""
    spec = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    f = np.arange(n // 2 + 1, dtype=np.float64)
    f[0] = 1.0  # no infinite DC for pink/brown; DC is zeroed below anyway
    spec *= f ** (-beta / 2.0)
    spec[0] = 0.0
    x = np.fft.irfft(spec, n=n)
    r = _rms(x)
    return (x / r if r > 0 else x).astype(np.float32)


def nonspeech_frames(wave: np.ndarray, sr: int, quantile: float = 0.2) -> np.ndarray:
    """The ``quantile`` lowest-energy 20 ms frames of ``wave (N,)``, concatenated (pauses and room tone)."""
    hop = max(1, int(0.02 * sr))
    nfr = wave.size // hop
    if nfr < 2:
        return wave.astype(np.float32)
    frames = wave[: nfr * hop].reshape(nfr, hop)
    energy = np.mean(frames.astype(np.float64) ** 2, axis=1)
    keep = np.sort(np.argsort(energy)[: max(1, int(round(quantile * nfr)))])
    return frames[keep].reshape(-1).astype(np.float32)


def _tile(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``x`` repeated from a random start to exactly ``n`` samples."""
    if x.size == 0:
        return np.zeros(n, np.float32)
    reps = -(-(n + x.size) // x.size)
    start = int(rng.integers(x.size))
    return np.tile(x, reps)[start : start + n]


def add_noise(wave: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``wave + noise`` scaled so that the signal-to-noise ratio is ``snr_db`` (both ``(N,)``)."""
    ps, pn = _rms(wave), _rms(noise)
    if ps == 0 or pn == 0:
        return wave
    return (wave + noise * (ps / pn / 10 ** (snr_db / 20))).astype(np.float32)


def vtlp(wave: np.ndarray, sr: int, alpha: float) -> np.ndarray:
    """Vocal-tract-length perturbation: the STFT's frequency axis warped by ``alpha`` (piecewise linear,
    Jaitly & Hinton 2013: ``f -> alpha f`` below a boundary, then a line to ``sr/2``), resynthesised with
    the warped complex spectra; ``(N,)`` -> ``(N,)``. alpha > 1 sounds like a shorter vocal tract."""
    import torch

    n = wave.size
    n_fft = 256 if sr <= 8000 else 512
    if n < n_fft or alpha == 1.0:
        return wave
    hop = n_fft // 4
    win = torch.hann_window(n_fft, dtype=torch.float64)
    spec = torch.stft(torch.from_numpy(wave.astype(np.float64)), n_fft, hop, window=win, return_complex=True).numpy()
    nyq = sr / 2
    f = np.linspace(0, nyq, spec.shape[0])
    boundary = 0.8 * nyq * min(alpha, 1.0) / alpha  # so the warped boundary stays inside the band
    # Output bin at frequency g takes the input at the inverse warp of g.
    fb = boundary * alpha
    src = np.where(f <= fb, f / alpha, boundary + (f - fb) * (nyq - boundary) / (nyq - fb))
    pos = src / nyq * (spec.shape[0] - 1)
    lo = np.clip(np.floor(pos).astype(int), 0, spec.shape[0] - 1)
    hi = np.clip(lo + 1, 0, spec.shape[0] - 1)
    w = (pos - lo)[:, None]
    warped = spec[lo] * (1 - w) + spec[hi] * w
    out = torch.istft(torch.from_numpy(warped), n_fft, hop, window=win, length=n).numpy()
    # Keep the level: the warp moves energy between bands, it should not change loudness.
    r_in, r_out = _rms(wave), _rms(out)
    return (out * (r_in / r_out) if r_out > 0 else out).astype(np.float32)


def pitch_shift(wave: np.ndarray, sr: int, semitones: float) -> np.ndarray:
    """librosa's phase-vocoder pitch shift (duration kept), ``(N,)`` -> ``(N,)``."""
    import librosa

    if semitones == 0.0 or wave.size < 512:
        return wave
    n_fft = 256 if sr <= 8000 else 512
    y = librosa.effects.pitch_shift(wave.astype(np.float32), sr=sr, n_steps=semitones, n_fft=n_fft, res_type="soxr_hq")
    return _fit(y, wave.size)


def _fit(y: np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(y, dtype=np.float32).reshape(-1)
    return y[:n] if y.size >= n else np.pad(y, (0, n - y.size))


def rir_bank(sr: int, rt60: tuple[float, float], rooms: int, seed: int) -> list[np.ndarray]:
    """``rooms`` impulse responses of simulated shoebox rooms (pyroomacoustics image source method), each
    float32 ``(L,)`` starting at its direct path with unit peak; rooms, source and microphone drawn from ``seed``."""
    try:
        import pyroomacoustics as pra
    except ImportError:
        raise ImportError("data.augment.reverb needs pyroomacoustics: pip install 'asr-s2s[augment]'") from None
    rng = np.random.default_rng([seed, 0x5EB])
    bank = []
    for _ in range(rooms):
        dims = np.array([rng.uniform(3, 10), rng.uniform(3, 8), rng.uniform(2.4, 4.0)])
        t60 = float(rng.uniform(*rt60))
        try:
            absorption, max_order = pra.inverse_sabine(t60, dims)
        except ValueError:  # the room is too small for so long a reverberation: take the longest it allows
            absorption, max_order = 1.0 - 1e-3, 1
        # The image source count grows as max_order^3: capped so a 1 s RT60 bank still builds in seconds; the
        # tail beyond is what little a 8-16 kHz recognizer hears of it.
        room = pra.ShoeBox(dims, fs=sr, materials=pra.Material(float(absorption)), max_order=min(int(max_order), 12))
        margin = 0.5
        src = [rng.uniform(margin, d - margin) for d in dims]
        mic = [rng.uniform(margin, d - margin) for d in dims]
        room.add_source(src)
        room.add_microphone(mic)
        room.compute_rir()
        h = np.asarray(room.rir[0][0], dtype=np.float64)
        start = int(np.argmax(np.abs(h)))  # align on the direct path: no delay, the transcript timing is kept
        h = h[start:]
        h = h[: min(h.size, int(sr * min(1.5 * t60, 1.0)) + 1)]
        bank.append((h / np.max(np.abs(h))).astype(np.float32))
    return bank


def reverberate(wave: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """``wave (N,)`` convolved with ``rir (L,)`` (FFT), cut to ``N`` and brought back to the input's RMS."""
    from scipy.signal import fftconvolve

    out = fftconvolve(wave.astype(np.float64), rir.astype(np.float64))[: wave.size]
    r_in, r_out = _rms(wave), _rms(out)
    return (out * (r_in / r_out) if r_out > 0 else out).astype(np.float32)


def mulaw(wave: np.ndarray, bits: int = 8) -> np.ndarray:
    """Mu-law compress, quantise to ``bits``, expand (G.711-style), ``(N,)`` -> ``(N,)``."""
    mu = 2**bits - 1
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    if peak == 0:
        return wave
    x = np.clip(wave / peak, -1, 1)  # normalised first so a quiet file uses the whole code range, as a real level does
    y = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    q = np.round((y + 1) / 2 * mu) / mu * 2 - 1
    return (np.sign(q) * ((1 + mu) ** np.abs(q) - 1) / mu * peak).astype(np.float32)


def telephone(wave: np.ndarray, sr: int) -> np.ndarray:
    """A 300-3400 Hz band-pass (4th-order Butterworth, causal like a real channel), ``(N,)`` -> ``(N,)``."""
    from scipy.signal import butter, sosfilt

    hi = min(3400.0, 0.95 * sr / 2)
    sos = butter(4, [300.0, hi], btype="bandpass", fs=sr, output="sos")
    return sosfilt(sos, wave.astype(np.float64)).astype(np.float32)


def codec(wave: np.ndarray, sr: int, fmt: str, quality: float) -> np.ndarray:
    """A real lossy encode/decode round trip in memory (libsndfile: MP3, Vorbis or Opus), ``(N,)`` -> ``(N,)``."""
    import soundfile as sf

    container, subtype = CODEC_FORMATS[fmt]
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    scale = 0.9 / peak if peak > 0.9 else 1.0  # the encoders take [-1, 1]: avoid clipping a boosted waveform
    buf = io.BytesIO()
    try:
        sf.write(buf, wave * scale, sr, format=container, subtype=subtype, compression_level=float(quality))
    except sf.LibsndfileError:
        # libsndfile's LAME wrapper refuses some levels at and just below 1 (1.0 and 0.99994 failed, 0.9999 and every
        # multiple of 0.005 up to 0.995 passed, at 8-44.1 kHz): those take 0.99, the nearest level known to work.
        # (Retried rather than clamped up front so that every level that works keeps its exact bit rate.)
        if quality <= 0.99:
            raise
        buf = io.BytesIO()
        sf.write(buf, wave * scale, sr, format=container, subtype=subtype, compression_level=0.99)
    buf.seek(0)
    y, _ = sf.read(buf, dtype="float32")
    return _fit(y, wave.size) / scale


# ------------------------------------------------------------------------------------------------ augmenter
class Augmenter:
    """Applies an :class:`AugmentConfig` to training waveforms.

    ``other_wave(j)`` returns training utterance ``j``'s clean waveform ``(M,)`` at ``sample_rate`` (for babble
    and non-speech noise), ``num_items`` is how many there are. Picklable before first use (the RIR bank is built
    lazily in each DataLoader worker, identical in all since it depends on ``seed`` only)."""

    def __init__(self, cfg: AugmentConfig, sample_rate: int, seed: int,
                 other_wave: Optional[Callable[[int], np.ndarray]] = None, num_items: int = 0):
        self.cfg, self.sr, self.seed = cfg, int(sample_rate), int(seed)
        self.other_wave, self.num_items = other_wave, int(num_items)
        self._rirs: Optional[list[np.ndarray]] = None
        if cfg.noise.p > 0 and set(cfg.noise.sources) - {"colored"} and (other_wave is None or num_items < 2):
            raise ValueError("data.augment.noise: babble and nonspeech sources need other training utterances")
        if cfg.reverb.p > 0:
            try:
                import pyroomacoustics  # noqa: F401  (refused at setup, not minutes into a run)
            except ImportError:
                raise ValueError("config data.augment.reverb needs pyroomacoustics: pip install 'asr-s2s[augment]'") from None

    def __getstate__(self) -> dict:
        d = self.__dict__.copy()
        d["_rirs"] = None
        return d

    @property
    def rirs(self) -> list[np.ndarray]:
        if self._rirs is None:
            c = self.cfg.reverb
            self._rirs = rir_bank(self.sr, c.rt60, c.rooms, self.seed)
        return self._rirs

    def _rng(self, epoch: int, index: int, part: str) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(epoch), int(index), PARTS.index(part) + 1])

    def plan(self, epoch: int, index: int) -> dict[str, dict]:
        """What item ``index`` of ``epoch`` gets: part -> its drawn parameters (only the parts that fire)."""
        c = self.cfg
        out: dict[str, dict] = {}
        for part in PARTS:
            sec = getattr(c, part)
            if sec.p <= 0:
                continue
            rng = self._rng(epoch, index, part)
            if rng.random() >= sec.p:
                continue
            if part == "vtlp":
                out[part] = {"alpha": float(rng.uniform(*sec.alpha))}
            elif part == "pitch":
                out[part] = {"semitones": float(rng.uniform(*sec.semitones))}
            elif part == "reverb":
                out[part] = {"room": int(rng.integers(sec.rooms))}
            elif part == "noise":
                src = sec.sources[int(rng.integers(len(sec.sources)))]
                d: dict[str, Any] = {"source": src, "snr_db": float(rng.uniform(*sec.snr_db)), "seed": int(rng.integers(2**31))}
                if src == "colored":
                    d["beta"] = float(rng.choice([0.0, 1.0, 2.0]))
                else:
                    k = int(rng.integers(3, 6)) if src == "babble" else 1
                    d["others"] = [int(j) for j in rng.choice(self.num_items - 1, size=min(k, self.num_items - 1), replace=False)]
                    d["others"] = [j + (j >= index) for j in d["others"]]  # never the utterance itself
                out[part] = d
            elif part == "gain":
                out[part] = {"db": float(rng.uniform(*sec.db))}
            elif part == "telephone":
                out[part] = {"mulaw": bool(rng.random() < sec.mulaw)}
            elif part == "codec":
                out[part] = {"format": sec.formats[int(rng.integers(len(sec.formats)))],
                             "quality": float(rng.uniform(*sec.quality))}
        return out

    def apply(self, wave: np.ndarray, plan: dict[str, dict]) -> np.ndarray:
        """``wave (N,)`` float32 with the ``plan``'s parts applied in order; ``(N,)`` float32 at the same rate."""
        x = np.asarray(wave, dtype=np.float32)
        n = x.size
        for part, d in plan.items():
            if part == "vtlp":
                x = vtlp(x, self.sr, d["alpha"])
            elif part == "pitch":
                x = pitch_shift(x, self.sr, d["semitones"])
            elif part == "reverb":
                x = reverberate(x, self.rirs[d["room"] % len(self.rirs)])
            elif part == "noise":
                x = add_noise(x, self._noise(d, n), d["snr_db"])
            elif part == "gain":
                x = (x * 10 ** (d["db"] / 20)).astype(np.float32)
            elif part == "telephone":
                x = telephone(x, self.sr)
                if d["mulaw"]:
                    x = mulaw(x)
            elif part == "codec":
                x = codec(x, self.sr, d["format"], d["quality"])
        if x.shape != (n,):  # every part's contract; a violation here is a bug in the part, not bad data
            raise RuntimeError(f"augmentation changed the waveform's shape from ({n},) to {x.shape}: {list(plan)}")
        return x

    def __call__(self, wave: np.ndarray, epoch: int, index: int) -> np.ndarray:
        return self.apply(wave, self.plan(epoch, index))

    def _noise(self, d: dict, n: int) -> np.ndarray:
        rng = np.random.default_rng(d["seed"])
        if d["source"] == "colored":
            return colored_noise(n, d["beta"], rng)
        assert self.other_wave is not None
        if d["source"] == "nonspeech":
            return _tile(nonspeech_frames(np.asarray(self.other_wave(d["others"][0]), np.float32), self.sr), n, rng)
        mix = np.zeros(n, np.float32)
        for j in d["others"]:  # babble: talkers at equal level
            y = _tile(np.asarray(self.other_wave(j), np.float32), n, rng)
            r = _rms(y)
            if r > 0:
                mix += y / r
        return mix


__all__ = ["AugmentConfig", "Augmenter", "PARTS", "add_noise", "codec", "colored_noise", "mulaw", "nonspeech_frames",
           "pitch_shift", "reverberate", "rir_bank", "telephone", "vtlp"]
