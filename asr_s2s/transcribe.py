"""Transcribe anything: files, folders, globs or in-memory arrays, of any length.

    items ──▶ (short) load whole ─────────────────────────────────────────┐
          └─▶ (long)  pass 1: stream blocks -> silero speech probabilities │
                      (or frame log-energy) -> VAD segments (≤ max)        │
                      pass 2: stream blocks -> cut + resample ─────────────┴─▶ pool of segments
              ──▶ length-sorted batches ──▶ LogMel/CMVN/Seq2Seq search ──▶ repetition guard
              ──▶ tokenizer ──▶ Transcript(text, segments with start/end, score)

Long recordings (longer than the longest utterance the model was trained on, ``model.meta
["max_duration"]``, 15 s when unknown) are never held as features, and not even as a whole
waveform: a file is read twice in blocks (once for the VAD, once to cut the segments), and
segments from any number of files share one bounded pool that is decoded in batches of similar
length. Memory is O(pool x longest segment) plus one VAD score per frame (0.45 MB per hour for
silero, 0.8 MB for the energy VAD), whatever the recording's length.

Voice activity detection (``VADConfig.method``): "silero" (the default where silero-vad is installed,
a trained detector, :mod:`asr_s2s.vad`) or "energy" (the fallback, no model); "auto" picks the first
available. The speech mask comes from

- silero: one speech probability per 32 ms window (at 16 kHz); speech is every run of windows above
  ``neg_threshold`` (0.35) that reaches ``threshold`` (0.5) somewhere (hysteresis, as silero's own
  ``get_speech_timestamps``);
- energy, on non-overlapping 10 ms frames:
  1. log-energy e_t = 10 log10(mean(x^2)), smoothed over 3 frames;
  2. an adaptive threshold from the recording's own energy distribution:
     floor = max(P10(e), P95(e) - 60 dB) (the clamp handles digital silence), peak = P95(e),
     high = floor + max(6 dB, 0.3 (peak - floor)), low = floor + max(6 dB, 0.12 (peak - floor));
     speech is every run of frames above ``low`` that reaches ``high`` somewhere (hysteresis: loud
     onsets detect, weak fricative tails and onsets stay attached); a recording whose range is under
     10 dB has no detectable silence and is treated as all speech;

then, for both:

3. hangover: silences shorter than ``min_silence`` (0.3 s) inside speech are bridged (pauses inside
   a word are never cut), then speech runs shorter than ``min_speech`` (0.1 s) are dropped (clicks);
4. each run longer than ``max_segment`` is hard-split at its least speech-like point (lowest energy or
   probability, 100 ms smoothing) within the last half of the allowed length, repeatedly;
5. the model gets each run plus ``pad`` seconds (never past the middle of the neighbouring silence)
   of context, by default :data:`DEFAULT_PAD` (measured: silero 0, its segments already end ~0.06 s
   after the speech; energy 0.03 s); the reported segment times are the detected speech, without
   the padding.

Guards against the classic attention-decoder failures:

- length cap: the search stops utterance b after ceil(1.5 T'_b) tokens (T'_b its encoder frames,
  ``max_len_ratio`` in :mod:`asr_s2s.seq2seq.search`), so a decoder that never says eos stops in
  proportion to the segment, and segments are never longer than what the model was trained on;
- repetition: :func:`truncate_repetitions` cuts a hypothesis at the first n-gram (n ≤ 10 tokens)
  that repeats back-to-back more than 3 times (4+ copies) over at least 8 tokens, keeping its first
  copy. "one one one one one" -> "one"; "three" ("ee"), "ha ha ha" and "aaa" are left alone.
"""

from __future__ import annotations

import glob
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Sequence, Union

import numpy as np

from .audio import AudioError, _short, _to_float, _wav_shortfall, audio_info, load_audio
from .batching import decode_in_batches

DEFAULT_MAX_SEGMENT = 15.0
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".sph", ".nist", ".aiff", ".aif", ".aifc",
                    ".au", ".snd", ".caf", ".w64", ".rf64", ".wv")
FORMATS = ("txt", "json", "tsv", "srt", "vtt")
BLOCK_SECONDS = 30.0  # how much audio is read at a time when streaming a long file
POOL_BATCHES = 4  # segments are pooled up to POOL_BATCHES * batch_size, then decoded length-sorted


@dataclass
class Segment:
    start: float
    end: float
    text: str


@dataclass
class Transcript:
    """One input's result: text, timed segments, the decoder's score and the source it came from."""

    text: str
    segments: list[Segment] = field(default_factory=list)
    score: float = 0.0
    path: str | None = None

    def to_dict(self) -> dict:
        return {"path": self.path, "text": self.text, "score": self.score,
                "segments": [{"start": round(s.start, 3), "end": round(s.end, 3), "text": s.text} for s in self.segments]}


# ---- voice activity detection ------------------------------------------------------------------
VAD_METHODS = ("auto", "silero", "energy")
# Context added around detected speech, from measurement (10-minute FSDD bench, bundled model, plain decoding):
# the energy VAD's segments hug the speech (within 0.01 s) and 0.03 s on each side was best (WER 0.047; 0: 0.062,
# 0.1: 0.123); silero's start within ~0.02 s of the onset but end 0.06 s after the speech on average (its own
# hangover), which already is the trailing context, and any padding cost (0: 0.041, 0.03: 0.110, 0.1: 0.153).
# The bundled model was trained on tightly trimmed clips: leading noise hurts it far more than trailing.
DEFAULT_PAD = {"silero": 0.0, "energy": 0.03}


@dataclass
class VADConfig:
    """VAD settings (see the module docstring for the rules). ``method``: "silero" (the trained detector,
    :mod:`asr_s2s.vad`), "energy" (the adaptive energy threshold), or "auto" (silero when silero-vad
    is installed, else energy)."""

    method: str = "auto"
    # energy VAD
    frame_ms: float = 10.0
    smooth_frames: int = 3
    floor_percentile: float = 10.0
    peak_percentile: float = 95.0
    rel_threshold: float = 0.3
    rel_low: float = 0.12
    min_margin_db: float = 6.0
    max_range_db: float = 60.0
    min_range_db: float = 10.0
    # silero: speech starts where the probability reaches ``threshold`` and extends while it stays above
    # ``neg_threshold`` (silero's own defaults, 0.5 and 0.5 - 0.15)
    threshold: float = 0.5
    neg_threshold: float = 0.35
    # both
    min_silence: float = 0.3
    min_speech: float = 0.1
    pad: float | None = None  # None: the method's measured default, DEFAULT_PAD
    split_smooth: float = 0.1

    def __post_init__(self) -> None:
        if self.method not in VAD_METHODS:
            raise ValueError(f"VAD method must be one of {VAD_METHODS}, got {self.method!r}")
        if self.pad is not None and not self.pad >= 0:
            raise ValueError(f"VAD pad must be >= 0 seconds, got {self.pad}")

    def pad_for(self, method: str) -> float:
        return DEFAULT_PAD[method] if self.pad is None else float(self.pad)


def resolve_vad_method(method: str) -> str:
    """"auto" -> "silero" where silero-vad is installed, else "energy"; others unchanged."""
    from .vad import INSTALL_HINT, silero_available

    if method == "auto":
        if silero_available():
            return "silero"
        warnings.warn("silero-vad is not installed: long recordings are split with the energy VAD, which is "
                      f"less robust to noise ({INSTALL_HINT})", stacklevel=2)
        return "energy"
    return method


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index ranges where mask is True."""
    if not mask.size:
        return []
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def _smooth(x: np.ndarray, n: int) -> np.ndarray:
    if n <= 1 or x.size < n:
        return x
    return np.convolve(np.pad(x, (n // 2, n - 1 - n // 2), mode="edge"), np.ones(n) / n, mode="valid")


def energy_threshold(energy_db: np.ndarray, cfg: VADConfig | None = None, low: bool = False) -> float | None:
    """The adaptive speech threshold in dB (``low``: the one speech is extended to), or None when the
    recording has no usable dynamic range."""
    cfg = cfg or VADConfig()
    peak = float(np.percentile(energy_db, cfg.peak_percentile))
    floor = max(float(np.percentile(energy_db, cfg.floor_percentile)), peak - cfg.max_range_db)
    if peak - floor < cfg.min_range_db:
        return None
    rel = cfg.rel_low if low else cfg.rel_threshold
    return floor + max(cfg.min_margin_db, rel * (peak - floor))


def _hysteresis(x: np.ndarray, high: float, low: float) -> np.ndarray:
    """Runs of frames above ``low`` that reach ``high`` somewhere: loud onsets detect, weak tails stay attached."""
    speech = np.zeros(x.size, dtype=bool)
    for s, t in _runs(x > low):
        if (x[s:t] >= high).any():
            speech[s:t] = True
    return speech


def _mask_segments(speech: np.ndarray, split_score: np.ndarray, fps: float, max_segment: float, cfg: VADConfig,
                   pad_s: float) -> list[tuple[int, int, int, int]]:
    """Frame speech mask -> padded segments (steps 3-5 of the rule, shared by both VADs). Runs longer
    than ``max_segment`` are cut where ``split_score`` (energy or speech probability) is lowest."""
    n = int(speech.size)
    speech = speech.copy()
    # hangover: bridge short silences between speech runs (pauses inside a word or between close words)
    min_sil = int(round(cfg.min_silence * fps))
    runs = _runs(speech)
    for (_, a), (b, _) in zip(runs, runs[1:]):
        if b - a < min_sil:
            speech[a:b] = True
    min_sp = int(round(cfg.min_speech * fps))
    runs = [r for r in _runs(speech) if r[1] - r[0] >= min_sp]
    # hard split of runs longer than max_segment, at the quietest point of the allowed window
    max_len = max(2, int(max_segment * fps))
    coarse = _smooth(split_score.astype(np.float64), max(1, int(round(cfg.split_smooth * fps))))
    pieces: list[tuple[int, int]] = []
    for s, t in runs:
        while t - s > max_len:
            lo, hi = s + max_len // 2, s + max_len
            cut = lo + int(np.argmin(coarse[lo:hi]))
            pieces.append((s, cut))
            s = cut
        pieces.append((s, t))
    # padding, never past the middle of the gap to a neighbour
    pad = int(round(pad_s * fps))
    out = []
    for k, (s, t) in enumerate(pieces):
        lo, hi = max(0, s - pad), min(n, t + pad)
        if k > 0:
            lo = max(lo, (pieces[k - 1][1] + s) // 2)
        if k + 1 < len(pieces):
            hi = min(hi, (t + pieces[k + 1][0]) // 2)
        out.append((s, t, lo, hi))
    return out


def speech_segments(energy_db: np.ndarray, max_segment: float, cfg: VADConfig | None = None
                    ) -> list[tuple[int, int, int, int]]:
    """Energy VAD: frame log-energies (dB, one per ``cfg.frame_ms``) -> segments as frame indices
    ``(speech_start, speech_end, audio_start, audio_end)``: the detected speech and the padded span
    handed to the model. No segment's speech is longer than ``max_segment`` seconds."""
    cfg = cfg or VADConfig()
    n = int(energy_db.size)
    if n == 0:
        return []
    e = _smooth(energy_db.astype(np.float64), cfg.smooth_frames)
    thr = energy_threshold(e, cfg)
    if thr is None:
        speech = np.ones(n, dtype=bool)
    else:
        speech = _hysteresis(e, thr, energy_threshold(e, cfg, low=True))
    return _mask_segments(speech, energy_db, 1000.0 / cfg.frame_ms, max_segment, cfg, cfg.pad_for("energy"))


def probability_segments(probs: np.ndarray, frame_s: float, max_segment: float, cfg: VADConfig | None = None
                         ) -> list[tuple[int, int, int, int]]:
    """Silero VAD: speech probabilities (one per ``frame_s`` window) -> segments as
    :func:`speech_segments`; over-long runs are split at the lowest-probability point."""
    cfg = cfg or VADConfig()
    if probs.size == 0:
        return []
    speech = _hysteresis(probs.astype(np.float64), cfg.threshold, cfg.neg_threshold)
    return _mask_segments(speech, probs, 1.0 / frame_s, max_segment, cfg, cfg.pad_for("silero"))


# ---- audio sources (stream a file, or slice an array) -----------------------------------------
class _Source:
    """Mono float32 audio at its own rate, readable in blocks (twice: energies, then segments)."""

    def __init__(self, item: Any, sample_rate: int | None):
        self.item = item
        if isinstance(item, (np.ndarray,)) or type(item).__module__.startswith("torch"):
            if sample_rate is None:
                raise AudioError("<array>", "sample_rate is required for in-memory audio")
            data = item.detach().cpu().numpy() if hasattr(item, "detach") else np.asarray(item)
            data = _to_float(data)
            if data.ndim == 2:
                data = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
            if data.ndim != 1:
                raise AudioError("<array>", f"expected (samples,) or (samples, channels), got shape {data.shape}")
            self.name, self.rate, self.frames, self.array = "<array>", int(sample_rate), int(data.shape[0]), data
        else:
            self.name = str(item)
            self.rate, self.frames, _ = audio_info(item)
            self.array = None
            missing = _wav_shortfall(Path(item))
            if missing:
                raise AudioError(item, f"truncated: the WAV data chunk is {missing} bytes longer than the file")
        if self.frames == 0:
            raise AudioError(self.name, "zero samples")

    @property
    def duration(self) -> float:
        return self.frames / self.rate

    def blocks(self, block_frames: int) -> Iterator[np.ndarray]:
        if self.array is not None:
            for i in range(0, self.frames, block_frames):
                yield self.array[i : i + block_frames]
            return
        import soundfile as sf

        got = 0
        try:
            with sf.SoundFile(self.name) as f:
                for block in f.blocks(blocksize=block_frames, dtype="float32", always_2d=True):
                    got += block.shape[0]
                    yield block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
        except AudioError:
            raise
        except Exception as exc:
            raise AudioError(self.name, f"unreadable or unsupported audio ({_short(exc)})") from None
        if got < self.frames:
            raise AudioError(self.name, f"truncated: header declares {self.frames} frames, only {got} readable")

    def checked_blocks(self) -> Iterator[np.ndarray]:
        """Pass 1's blocks: refuses NaN/inf before any VAD sees them."""
        for block in self.blocks(int(BLOCK_SECONDS * self.rate)):
            if not np.isfinite(block).all():
                raise AudioError(self.name, "non-finite samples (NaN or inf)")
            yield block

    def energies(self, cfg: VADConfig) -> tuple[np.ndarray, int]:
        """Pass 1 (energy VAD): per-frame log-energy (dB) and the frame hop in samples."""
        hop = max(1, int(round(self.rate * cfg.frame_ms / 1000)))
        out, rest = [], np.zeros(0, dtype=np.float32)
        for block in self.checked_blocks():
            x = np.concatenate([rest, block])
            m = x.shape[0] // hop
            out.append(np.square(x[: m * hop].reshape(m, hop), dtype=np.float32).mean(axis=1))
            rest = x[m * hop :]
        if rest.size:
            out.append(np.array([np.square(rest).mean()], dtype=np.float32))
        power = np.concatenate(out) if out else np.zeros(0, np.float32)
        return 10.0 * np.log10(power.astype(np.float64) + 1e-10), hop

    def cut(self, spans: list[tuple[int, int]], block_frames: int | None = None) -> Iterator[np.ndarray]:
        """Pass 2: the audio of each ``[start, end)`` sample span (sorted, non-overlapping), streamed."""
        block_frames = block_frames or int(BLOCK_SECONDS * self.rate)
        buf, buf_start, k = np.zeros(0, dtype=np.float32), 0, 0
        for block in self.blocks(block_frames):
            buf = np.concatenate([buf, block])
            while k < len(spans) and buf_start + buf.shape[0] >= spans[k][1]:
                s, e = spans[k]
                yield buf[s - buf_start : e - buf_start].copy()
                k += 1
            keep_from = spans[k][0] if k < len(spans) else buf_start + buf.shape[0]
            # Drop only what was read: when the next span starts beyond this buffer, buf_start must stay
            # at the first unread sample (jumping to keep_from would shift every later segment's audio).
            drop = min(max(0, keep_from - buf_start), buf.shape[0])
            buf, buf_start = buf[drop:], buf_start + drop
        while k < len(spans):  # spans past a short read (cannot happen after the frame check)
            s, e = spans[k]
            yield buf[max(0, s - buf_start) : max(0, e - buf_start)].copy()
            k += 1


def _resample(x: np.ndarray, rate: int, target: int):
    import soxr
    import torch

    if rate != target:
        x = soxr.resample(x, rate, target, quality="HQ")
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _vad_config(vad: VADConfig | str | None) -> VADConfig:
    if vad is None:
        return VADConfig()
    return VADConfig(method=vad) if isinstance(vad, str) else vad


def segment_spans(src: _Source, max_segment: float, vad: VADConfig) -> list[tuple[float, float, int, int]]:
    """Pass 1: ``(speech_start_s, speech_end_s, audio_start_sample, audio_end_sample)`` per segment."""
    method = resolve_vad_method(vad.method)
    if method == "silero":
        from .vad import speech_probabilities

        probs, frame_s = speech_probabilities(src.checked_blocks(), src.rate)
        segs = probability_segments(probs, frame_s, max_segment, vad)
    else:
        energy, hop = src.energies(vad)
        segs = speech_segments(energy, max_segment, vad)
        frame_s = hop / src.rate
    out = []
    for s, e, a, b in segs:
        a_n, b_n = min(src.frames, int(round(a * frame_s * src.rate))), min(src.frames, int(round(b * frame_s * src.rate)))
        if b_n > a_n:
            out.append((s * frame_s, min(src.duration, e * frame_s), a_n, b_n))
    return out


def iter_segments(item: Any, target_rate: int, *, sample_rate: int | None = None, max_segment: float = DEFAULT_MAX_SEGMENT,
                  long_form: bool = True, vad: VADConfig | str | None = None) -> Iterator[tuple[float, float, Any]]:
    """One input -> ``(start_s, end_s, waveform at target_rate)`` segments, streamed. ``vad``: a VADConfig
    or a method name (see VAD_METHODS; default "auto"). Raises AudioError; ImportError for
    ``method="silero"`` without silero-vad installed."""
    vad = _vad_config(vad)
    src = _Source(item, sample_rate)
    if not long_form or src.duration <= max_segment:
        if src.array is not None:
            wave = load_audio(src.array, target_rate, orig_sample_rate=src.rate)
        else:
            wave = load_audio(item, target_rate)
        yield 0.0, src.duration, wave
        return
    segs = segment_spans(src, max_segment, vad)
    for (s, e, _, _), audio in zip(segs, src.cut([(a, b) for _, _, a, b in segs])):
        yield s, e, _resample(audio, src.rate, target_rate)


# ---- repetition guard ---------------------------------------------------------------------------
def truncate_repetitions(tokens: Sequence[int], max_ngram: int = 10, max_repeats: int = 3, min_span: int = 8) -> list[int]:
    """Cut runaway repetition: at the first position where an n-gram (n <= ``max_ngram``) occurs more
    than ``max_repeats`` times back to back and the run covers at least ``min_span`` tokens, keep the
    tokens up to the end of its first copy and drop the rest."""
    toks = list(tokens)
    n_tok = len(toks)
    for p in range(n_tok):
        for n in range(1, max_ngram + 1):
            if p + n * (max_repeats + 1) > n_tok:
                break
            gram = toks[p : p + n]
            k = 1
            while toks[p + k * n : p + (k + 1) * n] == gram:
                k += 1
            if k > max_repeats and k * n >= min_span:
                return toks[: p + n]
    return toks


# ---- the batched transcriber --------------------------------------------------------------------
@dataclass
class _Pending:
    path: str | None
    segments: list = field(default_factory=list)  # (start, end, text, score) as they come back
    expected: int = 0
    complete: bool = False
    error: AudioError | None = None


def model_max_segment(model: Any) -> float:
    """The longest segment handed to the model: what it was trained on (meta), else 15 s."""
    meta = getattr(model, "meta", None) or {}
    try:
        value = float(meta.get("max_duration") or DEFAULT_MAX_SEGMENT)
    except (TypeError, ValueError):
        value = DEFAULT_MAX_SEGMENT
    return value if value > 0 else DEFAULT_MAX_SEGMENT


def iter_transcripts(model: Any, items: Iterable[Any], *, sample_rate: int | None = None, beam: int = 1,
                     batch_size: int = 16, long_form: bool = True, max_segment: float | None = None,
                     vad: VADConfig | str | None = None, errors: str = "raise", max_len_ratio: float = 1.5,
                     repetition: dict | None = None, precision: str = "auto", options: Any = None
                     ) -> Iterator[tuple[int, Any]]:
    """Yield ``(index, Transcript)`` in input order (or ``(index, AudioError)`` with ``errors="skip"``).
    ``options`` (a DecodeOptions) replaces ``beam``, ``precision`` and ``max_len_ratio`` when given."""
    from .decoding import DecodeOptions

    if errors not in ("raise", "skip"):
        raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
    if not model.is_audio:
        raise TypeError("transcribe() needs a speech model; use translate() for text models")
    if options is None:
        options = DecodeOptions(beam=beam, precision=precision, max_len_ratio=max_len_ratio)
    max_segment = max_segment or model_max_segment(model)
    rate = model.features.sample_rate
    rep = dict(repetition or {})
    model.eval()
    pool: list[tuple[int, float, float, Any]] = []
    pending: dict[int, _Pending] = {}
    nxt = 0

    def decode_pool() -> None:
        waves = [c[3] for c in pool]
        for rows, res in decode_in_batches(model, waves, options, batch_size=batch_size, max_len=100000):
            for r, toks, score in zip(rows, res.tokens, res.scores.tolist()):
                idx, s, e, _ = pool[r]
                text = model.tokenizer.decode(truncate_repetitions(toks, **rep)).strip()
                pending[idx].segments.append((s, e, text, score))
        pool.clear()

    def ready() -> Iterator[tuple[int, Any]]:
        nonlocal nxt
        while nxt in pending and pending[nxt].complete and (pending[nxt].error or len(pending[nxt].segments) == pending[nxt].expected):
            p = pending.pop(nxt)
            if p.error is not None:
                yield nxt, p.error
            else:
                segs = sorted(p.segments)
                kept = [x for x in segs if x[2]]
                dur = sum(max(e - s, 1e-3) for s, e, _, _ in segs)
                score = sum(max(e - s, 1e-3) * sc for s, e, _, sc in segs) / dur if segs else 0.0
                yield nxt, Transcript(text=" ".join(x[2] for x in kept), segments=[Segment(s, e, t) for s, e, t, _ in kept],
                                      score=float(score), path=p.path)
            nxt += 1

    import torch

    with torch.inference_mode():
        for idx, item in enumerate(items):
            is_path = isinstance(item, (str, os.PathLike))
            p = pending[idx] = _Pending(path=str(item) if is_path else None)
            try:
                for s, e, wave in iter_segments(item, rate, sample_rate=sample_rate, max_segment=max_segment,
                                                long_form=long_form, vad=vad):
                    pool.append((idx, s, e, wave))
                    p.expected += 1
                    if len(pool) >= POOL_BATCHES * batch_size:
                        decode_pool()
            except AudioError as err:
                if errors == "raise":
                    raise
                p.error = err
            p.complete = True
            yield from ready()
        if pool:
            decode_pool()
        yield from ready()


def transcribe_inputs(model: Any, items: Sequence[Any], sample_rate: int | None = None, beam: int = 1,
                      batch_size: int = 16, long_form: bool = True, **opts: Any) -> list:
    """Paths or arrays -> one Transcript each (raises AudioError on unusable audio). Options as
    :func:`iter_transcripts` (``max_segment``, ``vad``, ``repetition``, ``max_len_ratio``, ``precision``)."""
    out = [None] * len(items)
    for idx, t in iter_transcripts(model, items, sample_rate=sample_rate, beam=beam, batch_size=batch_size,
                                   long_form=long_form, **opts):
        out[idx] = t
    return out


# ---- file discovery -----------------------------------------------------------------------------
@dataclass
class Found:
    """A discovered input: the file and the name its outputs get (relative to the folder it was found in)."""

    path: Path
    name: str


def find_audio(specs: Iterable[Union[str, os.PathLike]], extensions: Sequence[str] = AUDIO_EXTENSIONS
               ) -> tuple[list[Found], list[str]]:
    """Files (any name), folders (recursively, files with an audio extension) and globs -> inputs,
    plus one error message for each spec that matched nothing. Order: as given, folders sorted."""
    exts = {e.lower() for e in extensions}
    found: list[Found] = []
    errors: list[str] = []
    seen: set[Path] = set()

    def add(path: Path, name: str) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            found.append(Found(path, name))

    def add_dir(d: Path) -> int:
        files = sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in exts)
        for f in files:
            add(f, str(f.relative_to(d).with_suffix("")))
        return len(files)

    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            if not add_dir(p):
                errors.append(f"{spec}: no audio files in this folder")
        elif p.exists():
            add(p, p.stem)
        elif glob.has_magic(str(spec)):
            hits = sorted(glob.glob(str(spec), recursive=True))
            n = 0
            for h in map(Path, hits):
                if h.is_dir():
                    n += add_dir(h)
                elif h.suffix.lower() in exts:
                    add(h, h.stem)
                    n += 1
            if not n:
                errors.append(f"{spec}: no audio files match")
        else:
            errors.append(f"{spec}: file not found")
    return found, errors


# ---- output writers -----------------------------------------------------------------------------
def format_timestamp(seconds: float, decimal: str = ",", always_hours: bool = True) -> str:
    """``HH:MM:SS,mmm`` (SRT; ``decimal="."`` for WebVTT), rounded to the millisecond."""
    ms = max(0, int(round(seconds * 1000)))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return (f"{h:02d}:" if always_hours or h else "") + f"{m:02d}:{s:02d}{decimal}{ms:03d}"


def _cues(t: Any) -> list:
    """Segments with text, with end > start (subtitle players reject empty or inverted cues)."""
    return [s for s in t.segments if s.text.strip() and s.end > s.start]


def render_transcript(t: Any, fmt: str) -> str:
    """A Transcript as text in one of FORMATS."""
    if fmt == "txt":
        return t.text + "\n"
    if fmt == "json":
        return json.dumps(t.to_dict(), ensure_ascii=False) + "\n"
    if fmt == "tsv":  # as Whisper: integer milliseconds
        rows = ["start\tend\ttext"] + [f"{round(s.start * 1000)}\t{round(s.end * 1000)}\t{_one_line(s.text)}" for s in t.segments if s.text]
        return "\n".join(rows) + "\n"
    if fmt == "srt":
        return "".join(f"{k}\n{format_timestamp(s.start)} --> {format_timestamp(s.end)}\n{_one_line(s.text)}\n\n"
                       for k, s in enumerate(_cues(t), 1))
    if fmt == "vtt":
        return "WEBVTT\n\n" + "".join(f"{format_timestamp(s.start, '.')} --> {format_timestamp(s.end, '.')}\n"
                                      f"{_one_line(s.text).replace('-->', '->')}\n\n" for s in _cues(t))
    raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def write_transcript(t: Any, fmt: str, stream_or_path: Union[str, os.PathLike, IO[str]]) -> None:
    """Write a Transcript as txt, json, tsv, srt or vtt to an open text stream or a path (UTF-8)."""
    text = render_transcript(t, fmt)
    if isinstance(stream_or_path, (str, os.PathLike)):
        path = Path(stream_or_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    else:
        stream_or_path.write(text)


__all__ = ["VADConfig", "VAD_METHODS", "DEFAULT_PAD", "resolve_vad_method", "speech_segments", "probability_segments", "segment_spans", "energy_threshold", "iter_segments", "truncate_repetitions",
           "iter_transcripts", "transcribe_inputs", "model_max_segment", "find_audio", "Found", "format_timestamp",
           "render_transcript", "write_transcript", "AUDIO_EXTENSIONS", "FORMATS", "DEFAULT_MAX_SEGMENT"]
