"""Tokenizers and text normalization."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asr_s2s.text import (
    EOS,
    PAD,
    SOS,
    UNK,
    CharTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    normalize_text,
    tokenizer_from_state_dict,
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "She said: don't worry, it's fine!",
    "Numbers like 42 and 7 appear too",
    "A rose is a rose is a rose",
    "Speech recognition with attention decoders",
    "Hello world", "good bye world", "zero one two three four five six seven eight nine",
] * 5


def torch_roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


# --------------------------------------------------------------------------------------------------- normalization
def test_constants():
    assert (PAD, SOS, EOS, UNK) == (0, 1, 2, 3)


@pytest.mark.parametrize(
    "raw, kwargs, expected",
    [
        ("  Hello\t\n  World  ", {}, "hello world"),
        ("Hello", {"lowercase": False}, "Hello"),
        ("ｆｕｌｌｗｉｄｔｈ", {}, "fullwidth"),  # NFKC
        ("zero\u200bwidth", {}, "zerowidth"),
        ("Don't say 'hi', ok?", {"strip_punctuation": True}, "don't say hi ok"),
        ("rock’n’roll", {"strip_punctuation": True}, "rock'n'roll"),
        ("well-known e.g. U.S.", {"strip_punctuation": True}, "well known e g u s"),
        ("'tis the dogs' bone", {"strip_punctuation": True}, "tis the dogs bone"),
        ("非常に良い。", {"strip_punctuation": True}, "非常に良い"),
        ("", {}, ""),
    ],
)
def test_normalize_cases(raw, kwargs, expected):
    assert normalize_text(raw, **kwargs) == expected


def test_normalize_rejects_non_str():
    with pytest.raises(TypeError):
        normalize_text(b"bytes")  # type: ignore[arg-type]


@given(st.text(), st.booleans(), st.booleans())
@settings(max_examples=300, deadline=None)
def test_normalize_idempotent(text, lower, strip):
    once = normalize_text(text, lowercase=lower, strip_punctuation=strip)
    assert normalize_text(once, lowercase=lower, strip_punctuation=strip) == once
    assert once == once.strip() and "  " not in once


# ------------------------------------------------------------------------------------------------------- char
def test_char_build_deterministic_and_specials():
    tok = CharTokenizer.build(CORPUS)
    tok2 = CharTokenizer.build(list(reversed(CORPUS)))
    assert tok.itos == tok2.itos
    assert tok.itos[:5] == ["<pad>", "<sos>", "<eos>", "<unk>", " "]
    assert tok.encode(" ") == [] and tok.encode("a b")[1] == 4
    ids = tok.encode("hello world")
    assert min(ids) > UNK
    assert tok.decode(ids) == "hello world"
    assert tok.decode([SOS] + ids + [EOS, PAD, PAD]) == "hello world"
    assert tok.decode(torch.tensor(ids)) == "hello world"


def test_char_unknown():
    tok = CharTokenizer.build(["abc"])
    assert tok.encode("abz") == [tok.stoi["a"], tok.stoi["b"], UNK]
    assert not tok.can_encode("abz") and tok.unknown_chars("zab Y") == ["y", "z"]
    assert tok.can_encode("CAB")  # lowercased first
    with pytest.raises(ValueError):
        tok.decode([tok.vocab_size])
    with pytest.raises(ValueError):
        tok.decode([-1])
    with pytest.raises(TypeError):
        tok.decode(["a"])  # type: ignore[list-item]


def test_char_state_dict_roundtrip():
    tok = CharTokenizer.build(CORPUS, strip_punctuation=True)
    d = torch_roundtrip(tok.state_dict())
    tok2 = tokenizer_from_state_dict(d)
    assert isinstance(tok2, CharTokenizer) and tok2.itos == tok.itos
    assert tok2.strip_punctuation and tok2.encode("Don't, go!") == tok.encode("don't go")
    assert Tokenizer.from_state_dict(tok.state_dict()).itos == tok.itos


def test_from_state_dict_errors():
    with pytest.raises(ValueError):
        tokenizer_from_state_dict({"vocab": []})
    with pytest.raises(ValueError):
        tokenizer_from_state_dict({"type": "wordpiece"})


CHAR_TOK = CharTokenizer.build(CORPUS)


@given(st.text())
@settings(max_examples=300, deadline=None)
def test_char_arbitrary_text(text):
    ids = CHAR_TOK.encode(text)
    assert all(0 <= i < CHAR_TOK.vocab_size for i in ids)
    if CHAR_TOK.can_encode(text):
        assert CHAR_TOK.decode(ids) == CHAR_TOK.normalize(text)
    else:
        assert UNK in ids


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz ABC'.,\t\n", max_size=60))
@settings(max_examples=200, deadline=None)
def test_char_invocab_roundtrip(text):
    assert CHAR_TOK.can_encode(text)
    assert CHAR_TOK.decode(CHAR_TOK.encode(text)) == normalize_text(text)


# ------------------------------------------------------------------------------------------------ sentencepiece
@pytest.fixture(scope="module")
def spm_tok():
    return SentencePieceTokenizer.train(CORPUS, vocab_size=60, model_type="unigram")


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_spm_train_and_roundtrip(model_type, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tok = SentencePieceTokenizer.train(iter(CORPUS), vocab_size=50, model_type=model_type)
    assert list(tmp_path.iterdir()) == []  # trained in memory: no files left behind
    assert [tok.sp.id_to_piece(i) for i in range(4)] == ["<pad>", "<sos>", "<eos>", "<unk>"]
    assert tok.vocab_size <= 50
    text = "the quick brown fox says hello"
    ids = tok.encode(text)
    assert min(ids) > UNK
    assert tok.decode([SOS] + ids + [EOS, PAD]) == text


def test_spm_unknown_and_state(spm_tok):
    assert spm_tok.unknown_chars("hello €uro") == ["€"]
    assert UNK in spm_tok.encode("€")
    assert spm_tok.can_encode("hello world")
    d = spm_tok.state_dict()
    assert isinstance(d["model"], bytes)
    tok2 = tokenizer_from_state_dict(torch_roundtrip(d))
    assert isinstance(tok2, SentencePieceTokenizer)
    assert tok2.encode("a rose is a rose") == spm_tok.encode("a rose is a rose")
    tok3 = pickle.loads(pickle.dumps(spm_tok))
    assert tok3.encode("hello") == spm_tok.encode("hello")


def test_spm_meta_symbol_is_space(spm_tok):
    assert spm_tok.normalize("a\u2581rose") == "a rose"
    assert spm_tok.decode(spm_tok.encode("a\u2581rose")) == "a rose"


def test_spm_byte_fallback_and_cjk():
    lines = [l.split("\t")[1] for l in _tatoeba_lines()] or ["안녕하세요 세계", "좋은 아침", "감사합니다"] * 20
    tok = SentencePieceTokenizer.train(lines, vocab_size=1000, character_coverage=0.98, byte_fallback=True)
    assert tok.can_encode("뷁")  # byte fallback: nothing is unknown
    assert tok.decode(tok.encode(lines[0])) == tok.normalize(lines[0])


def _tatoeba_lines():
    import os

    p = Path(os.environ.get("ASR_S2S_DATA", "data")) / "tatoeba_kor_eng" / "kor.txt"
    if not p.exists():
        return []
    return p.read_text(encoding="utf-8").splitlines()[:1500]


def test_spm_empty_corpus():
    with pytest.raises(ValueError):
        SentencePieceTokenizer.train(["", "   "], vocab_size=10)


SPM_TOK = SentencePieceTokenizer.train(CORPUS, vocab_size=60, model_type="bpe")


@given(st.text())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_spm_arbitrary_text(text):
    ids = SPM_TOK.encode(text)
    assert all(0 <= i < SPM_TOK.vocab_size for i in ids)
    if SPM_TOK.can_encode(text):
        assert SPM_TOK.decode(ids) == SPM_TOK.normalize(text)
    else:
        assert UNK in ids


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz THE'\t", max_size=60))
@settings(max_examples=200, deadline=None)
def test_spm_invocab_roundtrip(text):
    if SPM_TOK.can_encode(text):
        assert SPM_TOK.decode(SPM_TOK.encode(text)) == SPM_TOK.normalize(text)
