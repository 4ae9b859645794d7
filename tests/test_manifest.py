"""Manifest validation, writing, Kaldi data dirs and TSV pairs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr_s2s.manifest import (
    ManifestEntry,
    ManifestError,
    export_kaldi_dir,
    import_kaldi_dir,
    read_manifest,
    read_tsv_pairs,
    write_manifest,
)
from asr_s2s.text import CharTokenizer

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def fsdd_entry(f: Path, **kw) -> dict:
    info = sf.info(str(f))
    d = {"audio_filepath": str(f), "duration": info.frames / info.samplerate, "text": DIGITS[int(f.stem.split("_")[0])]}
    d.update(kw)
    return d


def synth_wav(path: Path, seconds: float = 1.0, sr: int = 16000) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    sf.write(str(path), (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr)
    return path


def write_lines(path: Path, lines: list) -> Path:
    with open(path, "wb") as f:
        for line in lines:
            if isinstance(line, bytes):
                f.write(line + b"\n")
            elif isinstance(line, str):
                f.write(line.encode() + b"\n")
            else:
                f.write(json.dumps(line, ensure_ascii=False).encode() + b"\n")
    return path


@pytest.fixture()
def tok():
    return CharTokenizer.build(DIGITS)


def test_read_good_manifest_relative_paths(tmp_path, fsdd_files, tok):
    synth_wav(tmp_path / "a.wav", 1.5)
    (tmp_path / "sub").mkdir()
    synth_wav(tmp_path / "sub" / "b.wav", 0.5)
    lines = [fsdd_entry(f) for f in fsdd_files[:3]]
    lines += [
        {"audio_filepath": "a.wav", "duration": 1.5, "text": "One Two", "speaker": 7},
        {"audio_filepath": "sub/b.wav", "duration": 0.25, "offset": 0.25, "text": "three"},
        "",  # blank lines are fine
    ]
    m = write_lines(tmp_path / "m.jsonl", lines)
    entries, report = read_manifest(m, tokenizer=tok, check_audio="header")
    assert report.ok and report.kept == 5 and len(entries) == 5
    a, b = entries[3], entries[4]
    assert a.audio_filepath == str(tmp_path / "a.wav") and a.id == "a" and a.speaker == "7"
    assert b.id == "sub/b-00000250" and b.offset == 0.25
    assert "kept 5" in report.summary()


BAD_CASES = {
    "invalid_json": lambda d, tmp: '{"audio_filepath": "x.wav", "duration": 1, ',
    "invalid_utf8": lambda d, tmp: json.dumps(d).encode().replace(b'"text": "', b'"text": "\xff'),
    "missing_field": lambda d, tmp: {k: v for k, v in d.items() if k != "duration"},
    "missing_audio": lambda d, tmp: {**d, "audio_filepath": str(tmp / "nope.wav")},
    "empty_text": lambda d, tmp: {**d, "text": "   "},
    "unencodable_text": lambda d, tmp: {**d, "text": "zero €"},
    "bad_duration": lambda d, tmp: {**d, "duration": 0},
    "bad_offset": lambda d, tmp: {**d, "offset": -1},
    "bad_field": lambda d, tmp: {**d, "text": 5},
}


@pytest.mark.parametrize("cause", sorted(BAD_CASES))
def test_each_bad_kind_raises_with_line(tmp_path, fsdd_files, tok, cause):
    good = fsdd_entry(fsdd_files[0])
    bad = BAD_CASES[cause](fsdd_entry(fsdd_files[1]), tmp_path)
    m = write_lines(tmp_path / "m.jsonl", [good, bad, fsdd_entry(fsdd_files[2])])
    with pytest.raises(ManifestError) as ei:
        read_manifest(m, tokenizer=tok)
    err = ei.value
    assert err.cause == cause and err.line == 2 and str(m) in str(err) and f":2: {cause}" in str(err)


def test_skip_mode_counts_every_cause(tmp_path, fsdd_files, tok):
    lines, expected = [], {}
    for i, (cause, make) in enumerate(sorted(BAD_CASES.items())):
        lines.append(fsdd_entry(fsdd_files[i]))
        lines.append(make(fsdd_entry(fsdd_files[i + 10]), tmp_path))
        expected[cause] = 1
    lines += [
        fsdd_entry(fsdd_files[0], duration=float("nan")) | {"id": "x"},
        {**fsdd_entry(fsdd_files[0]), "duration": 1e9},  # absurd
        fsdd_entry(fsdd_files[0]),  # duplicate id (derived from the path)
        fsdd_entry(fsdd_files[1], id="dup"),
        fsdd_entry(fsdd_files[2], id="dup"),
        fsdd_entry(fsdd_files[3], duration=100.0, id="long"),  # filtered by max_duration, not an error
        "[1, 2]",
    ]
    expected["bad_duration"] += 2
    expected["duplicate_id"] = 2
    expected["invalid_json"] += 1
    m = write_lines(tmp_path / "m.jsonl", lines)
    entries, report = read_manifest(m, tokenizer=tok, max_duration=30, on_error="skip")
    assert dict(report.counts) == expected
    assert report.filtered["too_long"] == 1
    assert len(entries) == len(BAD_CASES) + 1
    summary = report.summary()
    for cause in expected:
        assert cause in summary
    issue = next(i for i in report.issues if i.cause == "missing_audio")
    assert issue.file.endswith("nope.wav") and issue.line == 14  # 7th cause alphabetically, bad line of pair 7


def test_header_check_catches_unreadable_and_mismatch(tmp_path, tok):
    synth_wav(tmp_path / "ok.wav", 1.0)
    (tmp_path / "junk.wav").write_bytes(b"not audio at all" * 10)
    m = write_lines(
        tmp_path / "m.jsonl",
        [
            {"audio_filepath": "junk.wav", "duration": 1.0, "text": "one"},
            {"audio_filepath": "ok.wav", "duration": 3.0, "text": "two"},
            {"audio_filepath": "ok.wav", "duration": 1.0, "text": "two", "id": "fine"},
        ],
    )
    entries, report = read_manifest(m, tokenizer=tok, on_error="skip", check_audio="header")
    assert dict(report.counts) == {"unreadable_audio": 1, "duration_mismatch": 1}
    assert [e.id for e in entries] == ["fine"]


def test_write_manifest_roundtrip(tmp_path, fsdd_files):
    synth_wav(tmp_path / "a.wav")
    entries = [ManifestEntry(str(tmp_path / "a.wav"), 1.0, "héllo", "u1", "spk", 0.0, {"lang": "en"})]
    entries += [ManifestEntry(str(f), 0.5, "x", f.stem) for f in fsdd_files[:2]]
    out = tmp_path / "out" / "m.jsonl"
    (tmp_path / "out").mkdir()
    write_manifest(tmp_path / "m.jsonl", entries)
    first = json.loads((tmp_path / "m.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert first["audio_filepath"] == "a.wav" and first["lang"] == "en" and "offset" not in first
    back, report = read_manifest(tmp_path / "m.jsonl")
    assert report.ok and back == entries
    write_manifest(out, back)
    assert read_manifest(out)[0] == entries
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_missing_manifest(tmp_path):
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "none.jsonl")


# ------------------------------------------------------------------------------------------------------- Kaldi
def test_kaldi_roundtrip_plain(tmp_path, fsdd_files):
    entries = [
        ManifestEntry(str(f), sf.info(str(f)).duration, DIGITS[int(f.stem[0])] + " x", f.stem, f.stem.split("_")[1])
        for f in fsdd_files[:6]
    ]
    d = export_kaldi_dir(entries, tmp_path / "kd")
    assert not (d / "segments").exists()
    assert (d / "spk2utt").read_text().startswith("jackson ")
    back = import_kaldi_dir(d)
    assert sorted(back, key=lambda e: e.id) == sorted(entries, key=lambda e: e.id)


def test_kaldi_roundtrip_segments(tmp_path):
    wav = synth_wav(tmp_path / "long rec.wav", 3.0)
    entries = [
        ManifestEntry(str(wav), 1.0, "first part", "s1", "spk"),
        ManifestEntry(str(wav), 1.5, "second part", "s2", "spk", 1.25),
    ]
    d = export_kaldi_dir(entries, tmp_path / "kd")
    assert (d / "segments").read_text().splitlines()[1] == "s2 long_rec 1.250 2.750"
    back = import_kaldi_dir(d)
    assert [(e.id, e.offset, round(e.duration, 3), e.text, e.speaker) for e in back] == [
        ("s1", 0.0, 1.0, "first part", "spk"),
        ("s2", 1.25, 1.5, "second part", "spk"),
    ]


def test_kaldi_rejects_pipes_and_reports(tmp_path):
    synth_wav(tmp_path / "a.wav")
    d = tmp_path / "kd"
    d.mkdir()
    (d / "wav.scp").write_text(f"u1 {tmp_path / 'a.wav'}\nu2 sox x.wav -t wav - |\nu3 feats.ark:123\n")
    (d / "text").write_text("u1 hello\nu2 there\nu3 x\n")
    with pytest.raises(ManifestError, match=r"wav.scp:2: piped_command"):
        import_kaldi_dir(d)
    with pytest.warns(UserWarning, match="skipped 2"):
        back = import_kaldi_dir(d, on_error="skip")
    assert [e.id for e in back] == ["u1"] and back[0].duration == pytest.approx(1.0)
    (d / "segments").write_text("seg1 u1 0.5 -1\nseg2 u1 0.7 0.2\n")
    with pytest.warns(UserWarning):
        back = import_kaldi_dir(d, on_error="skip")
    assert [] == back  # seg1 has no transcript, seg2 has end < start
    (d / "text").write_text("seg1 hi\n")
    with pytest.warns(UserWarning):
        (e,) = import_kaldi_dir(d, on_error="skip")
    assert e.offset == 0.5 and e.duration == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------------------- TSV
def test_tsv_pairs(tmp_path):
    p = tmp_path / "pairs.tsv"
    p.write_bytes(
        "Go.\t가.\tCC-BY attribution\n".encode()
        + b"no tab here\n"
        + b"\t empty source\n"
        + b"bad \xff utf8\tx\n"
        + "Hi.\t안녕.\n".encode()
    )
    pairs, report = read_tsv_pairs(p)
    assert pairs == [("Go.", "가."), ("Hi.", "안녕.")]
    assert dict(report.counts) == {"bad_line": 1, "empty_text": 1, "invalid_utf8": 1}
    assert [i.line for i in report.issues] == [2, 3, 4]
    with pytest.raises(ManifestError, match=":2: bad_line"):
        read_tsv_pairs(p, on_error="raise")
    tok = CharTokenizer.build(["go."])  # knows "Go." but not "Hi."
    pairs, report = read_tsv_pairs(p, tokenizers=(tok, None))
    assert pairs == [("Go.", "가.")] and report.counts["unencodable_text"] == 1


def test_tsv_tatoeba(tmp_path):
    import os

    p = Path(os.environ.get("ASR_S2S_DATA", "data")) / "tatoeba_kor_eng" / "kor.txt"
    if not p.exists():
        pytest.skip("tatoeba not available")
    pairs, report = read_tsv_pairs(p)
    assert len(pairs) > 1000 and report.ok


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=6,
)
_fields = st.fixed_dictionaries(
    {},
    optional={
        "audio_filepath": st.sampled_from(["a.wav", "missing.wav", "", 3]) | st.text(max_size=5),
        "duration": _json_values,
        "text": _json_values,
        "offset": _json_values,
        "id": _json_values,
        "speaker": _json_values,
    },
)
_line = st.one_of(st.binary(max_size=30), _fields.map(lambda d: json.dumps(d).encode()), st.just(b"{}"))


@given(st.lists(_line, max_size=6))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_fuzz_manifest_only_documented_errors(tmp_path, lines):
    synth = tmp_path / "a.wav"
    if not synth.exists():
        synth_wav(synth, 0.2)
    m = tmp_path / "fuzz.jsonl"
    m.write_bytes(b"\n".join(lines))
    tok = CharTokenizer.build(["abc"])
    entries, report = read_manifest(m, tokenizer=tok, on_error="skip")
    assert report.kept == len(entries) and report.lines >= len(entries)
    for e in entries:
        assert e.duration > 0 and e.offset >= 0 and tok.can_encode(e.text) and Path(e.audio_filepath).is_file()
    try:
        read_manifest(m, tokenizer=tok, on_error="raise")
    except ManifestError as err:
        assert report.issues and err.cause == report.issues[0].cause
    else:
        assert report.ok
