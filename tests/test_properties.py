"""Property tests (hypothesis): whatever the input, only the documented exceptions escape.

- ``load_audio``: arbitrary bytes under .wav/.flac/.mp3/.ogg/.sph names, mutated real WAV/FLAC files, arbitrary
  arrays/tensors (any dtype incl. NaN/inf, ints, bool, complex; 0-3 dims; odd rates, offsets, durations)
  -> a float32 mono finite non-empty tensor, or :class:`AudioError` naming the source.
- ``read_manifest``: arbitrary bytes, arbitrary JSON values per field -> entries + report in skip mode (never
  an exception), :class:`ManifestError` in raise mode.
- tokenizers: arbitrary unicode encodes to in-vocabulary ids; ``decode`` of anything raises only the
  documented ``ValueError`` (id out of range) or ``TypeError`` (not integers).

Example counts are modest for CI (``ASR_S2S_HYPOTHESIS_EXAMPLES`` scales them, e.g. 1000 for a long soak).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from asr_s2s.audio import AudioError, load_audio
from asr_s2s.manifest import ManifestError, read_manifest
from asr_s2s.text import CharTokenizer, SentencePieceTokenizer, tokenizer_from_state_dict

N = int(os.environ.get("ASR_S2S_HYPOTHESIS_EXAMPLES", "100"))
SETTINGS = settings(max_examples=N, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                          HealthCheck.too_slow])


def check_wave(wave: torch.Tensor) -> None:
    assert isinstance(wave, torch.Tensor) and wave.dtype == torch.float32 and wave.ndim == 1
    assert wave.numel() > 0 and bool(torch.isfinite(wave).all())


def check_error(err: AudioError, name: str) -> None:
    assert str(err).startswith(f"{name}: ") and err.cause, str(err)


# ------------------------------------------------------------------------------------------ audio files
EXTS = [".wav", ".flac", ".mp3", ".ogg", ".sph", ".WAV", ""]


def _real(fmt: str, subtype: str, seconds: float = 0.05, channels: int = 1) -> bytes:
    buf = io.BytesIO()
    x = (0.3 * np.sin(np.arange(int(8000 * seconds)) / 3.0)).astype(np.float32)
    sf.write(buf, np.repeat(x[:, None], channels, 1), 8000, format=fmt, subtype=subtype)
    return buf.getvalue()


SEEDS = {"wav16": _real("WAV", "PCM_16"), "wavf": _real("WAV", "FLOAT"), "wav_st": _real("WAV", "PCM_24", channels=2),
         "flac": _real("FLAC", "PCM_16"), "ogg": _real("OGG", "VORBIS")}


@st.composite
def mutated(draw) -> bytes:
    """A real audio file with random damage: byte flips, truncation, insertions (headers stay plausible)."""
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "header"]))
        if op == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        elif op == "header" and len(data) > 48:  # hit the first 48 bytes: sizes, rates, channels, formats
            i = draw(st.integers(0, 47))
            data[i] = draw(st.integers(0, 255))
        elif op == "cut":
            data = data[: draw(st.integers(0, len(data)))]
        else:
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(max_size=16))
    return bytes(data)


def _load_file(tmp_path: Path, payload: bytes, ext: str, **kw) -> None:
    p = tmp_path / f"fuzz{ext}"
    p.write_bytes(payload)
    try:
        wave = load_audio(p, 16000, **kw)
    except AudioError as err:
        check_error(err, str(p))
    else:
        check_wave(wave)


@given(payload=st.binary(max_size=2048), ext=st.sampled_from(EXTS))
@SETTINGS
def test_load_audio_arbitrary_bytes(tmp_path: Path, payload: bytes, ext: str) -> None:
    _load_file(tmp_path, payload, ext)


@given(payload=mutated(), ext=st.sampled_from(EXTS))
@SETTINGS
def test_load_audio_damaged_real_files(tmp_path: Path, payload: bytes, ext: str) -> None:
    _load_file(tmp_path, payload, ext)


@given(payload=st.sampled_from(sorted(SEEDS)).map(SEEDS.get),
       offset=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 0.1)),
       duration=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 0.1)))
@SETTINGS
def test_load_audio_any_offset_duration(tmp_path: Path, payload: bytes, offset: float, duration) -> None:
    _load_file(tmp_path, payload, ".audio", offset=offset, duration=duration)


# ------------------------------------------------------------------------------------------ in-memory audio
DTYPES = st.sampled_from([np.float32, np.float64, np.float16, np.int8, np.int16, np.int32, np.int64, np.uint8,
                          np.uint16, np.bool_, np.complex64])


@st.composite
def any_array(draw) -> np.ndarray:
    dtype = draw(DTYPES)
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=12))
    return draw(hnp.arrays(dtype, shape))  # floats include NaN, inf, subnormals


@given(arr=any_array(), rate=st.one_of(st.integers(-10, 200_000), st.sampled_from([8000, 16000, 44100])),
       target=st.sampled_from([8000, 16000]), as_tensor=st.booleans(),
       offset=st.one_of(st.just(0.0), st.floats(allow_nan=True)), duration=st.one_of(st.none(), st.floats(allow_nan=True)))
@SETTINGS
def test_load_audio_arbitrary_arrays(arr, rate, target, as_tensor, offset, duration) -> None:
    assume(arr.size * max(1, target // max(rate, 1)) < 5_000_000)  # keep the resampled output small
    src = arr
    if as_tensor:
        if arr.dtype in (np.uint16,):  # torch has no uint16 from numpy on every version
            return
        src = torch.from_numpy(np.ascontiguousarray(arr))
    try:
        wave = load_audio(src, target, orig_sample_rate=rate, offset=offset, duration=duration)
    except AudioError as err:
        check_error(err, "<array>")
    else:
        check_wave(wave)


@given(dtype=st.sampled_from([torch.bfloat16, torch.float16, torch.float64, torch.int16, torch.int32, torch.uint8]),
       n=st.integers(0, 64), channels=st.integers(0, 3))
@SETTINGS
def test_load_audio_tensor_dtypes(dtype, n, channels) -> None:
    shape = (n,) if channels == 0 else (n, channels)
    t = (torch.randn(shape) * 0.5).to(dtype) if dtype.is_floating_point else torch.randint(0, 100, shape).to(dtype)
    try:
        wave = load_audio(t, 16000, orig_sample_rate=16000)
    except AudioError as err:
        check_error(err, "<array>")
        assert n == 0 or channels == 0 and n == 0 or "zero" in err.cause
    else:
        check_wave(wave)
        assert wave.shape == (n,)


# ------------------------------------------------------------------------------------------------ manifests
TOK = CharTokenizer.build(["zero one two three four five six seven eight nine"])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def manifest_bytes(draw, wav: str) -> bytes:
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["bytes", "object", "good", "number"]))
        if kind == "bytes":
            lines.append(draw(st.binary(max_size=40)))
        elif kind == "number":
            lines.append(draw(st.sampled_from([b"1e999", b"-0", b"[" * 3000, b'"\\ud800"', b"1" + b"0" * 5000, b"\xef\xbb\xbf{}"])))
        else:
            obj = {"audio_filepath": wav, "duration": 0.05, "text": "one"} if kind == "good" else {}
            for k in draw(st.lists(st.sampled_from(["audio_filepath", "duration", "text", "id", "offset", "speaker", "x"]),
                                   max_size=7)):
                obj[k] = draw(json_values)
            lines.append(json.dumps(obj, allow_nan=True).encode())
    sep = draw(st.sampled_from([b"\n", b"\r\n", b"\r"]))
    return sep.join(lines)


@pytest.fixture(scope="module")
def wav(tmp_path_factory) -> str:
    p = tmp_path_factory.mktemp("prop") / "a.wav"
    p.write_bytes(SEEDS["wav16"])
    return str(p)


@given(data=st.data())
@SETTINGS
def test_read_manifest_arbitrary(tmp_path: Path, wav: str, data) -> None:
    raw = data.draw(st.one_of(st.binary(max_size=400), manifest_bytes(wav)))
    m = tmp_path / "m.jsonl"
    m.write_bytes(raw)
    for tok in (None, TOK):
        for check in ("exists", "header"):
            entries, report = read_manifest(m, tokenizer=tok, on_error="skip", check_audio=check)
            assert report.kept == len(entries) and report.skipped == len(report.issues)
            report.summary()
            for e in entries:
                assert e.duration > 0 and e.offset >= 0 and os.path.isfile(e.audio_filepath)
                assert tok is None or tok.can_encode(e.text)
            try:
                read_manifest(m, tokenizer=tok, on_error="raise", check_audio=check)
            except ManifestError as err:
                assert str(err).startswith(f"{m}:") and report.issues and err.cause == report.issues[0].cause
            else:
                assert report.ok


# ------------------------------------------------------------------------------------------------ tokenizers
SPM = SentencePieceTokenizer.train(["zero one two three four five six seven eight nine"] * 5 + ["ok yes no"],
                                   vocab_size=40, model_type="unigram")
TOKS = {"char": TOK, "spm": SPM}


@given(name=st.sampled_from(sorted(TOKS)), text=st.text())
@SETTINGS
def test_tokenizer_arbitrary_unicode(name: str, text: str) -> None:
    tok = TOKS[name]
    ids = tok.encode(text)
    assert all(isinstance(i, int) and 0 <= i < tok.vocab_size for i in ids)
    out = tok.decode(ids)
    assert isinstance(out, str)
    if tok.can_encode(text):
        assert out == tok.normalize(text)


any_id = st.one_of(st.integers(), st.booleans(), st.floats(allow_nan=True), st.text(max_size=2), st.none(),
                   st.lists(st.integers(0, 5), max_size=2))


@given(name=st.sampled_from(sorted(TOKS)), ids=st.lists(any_id, max_size=8), as_tensor=st.booleans())
@SETTINGS
def test_tokenizer_decode_only_documented_errors(name: str, ids: list, as_tensor: bool) -> None:
    tok = TOKS[name]
    if as_tensor:
        ints = [i for i in ids if isinstance(i, int) and not isinstance(i, bool) and -2**63 <= i < 2**63]
        ids = torch.tensor(ints, dtype=torch.long)
    try:
        out = tok.decode(ids)
    except ValueError as err:  # documented: an id outside [0, vocab_size)
        assert "outside the vocabulary" in str(err)
    except TypeError as err:  # documented: not integers
        assert "integers" in str(err)
    else:
        assert isinstance(out, str)


@given(state=st.dictionaries(st.sampled_from(["type", "vocab", "model", "normalizer", "version"]), json_values, max_size=5))
@SETTINGS
def test_tokenizer_state_dict_garbage(state: dict) -> None:
    """A crafted tokenizer state (as found in an untrusted model file) fails with ValueError/TypeError only."""
    try:
        tokenizer_from_state_dict(state)
    except (ValueError, TypeError):
        pass
