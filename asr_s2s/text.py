"""Text normalization and tokenizers (characters, SentencePiece).

Every tokenizer uses the same special ids (see docs/interfaces.md)::

    PAD = 0  <pad>    SOS = 1  <sos>    EOS = 2  <eos>    UNK = 3  <unk>

Tokenizers normalize their input themselves (``tok.normalize(text)``), so the same options are used
when the vocabulary is built and every time text is encoded later.  ``decode`` drops the special ids.

Example::

    tok = CharTokenizer.build(["Hello world", "good bye"])
    ids = tok.encode("hello")            # [..] without <sos>/<eos>
    tok.decode(ids)                       # 'hello'
    d = tok.state_dict()                  # plain python types, torch.save/torch.load(weights_only=True) safe
    tok2 = tokenizer_from_state_dict(d)

Documented exceptions: ``encode``/``normalize``/``can_encode``/``unknown_chars`` accept any ``str`` and raise
only ``TypeError`` for a non-string; ``decode`` raises ``ValueError`` for an id outside ``[0, vocab_size)``
and ``TypeError`` for something that is not a sequence of integers; ``train``/``build`` raise ``ValueError``
for an unusable corpus (nothing to learn from).
"""

from __future__ import annotations

import io
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

from .tokens import EOS, PAD, SOS, SPECIALS, UNK  # noqa: F401  (re-exported: the tokenizers' ids)

# Typographic apostrophes that people type interchangeably with the ASCII one.
_APOSTROPHES = {"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u0060": "'", "\u00b4": "'"}
_DROP_CATEGORIES = {"Cc", "Cf", "Cs", "Co"}  # control, format (zero-width...), surrogates, private use


def _is_punct(ch: str) -> bool:
    cat = unicodedata.category(ch)
    return cat[0] == "P" or cat[0] == "S"


def _strip_punct(text: str) -> str:
    """Replace punctuation/symbols by spaces, keeping an apostrophe between two word characters."""
    out = []
    n = len(text)
    for i, ch in enumerate(text):
        if ch == "'" and 0 < i < n - 1 and text[i - 1].isalnum() and text[i + 1].isalnum():
            out.append(ch)
        elif _is_punct(ch):
            out.append(" ")
        else:
            out.append(ch)
    return "".join(out)


def _normalize_once(text: str, lowercase: bool, strip_punctuation: bool, unify_apostrophes: bool) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = "".join(
        " " if ch.isspace() else ch for ch in text if ch.isspace() or unicodedata.category(ch) not in _DROP_CATEGORIES
    )
    if unify_apostrophes:
        text = "".join(_APOSTROPHES.get(ch, ch) for ch in text)
    if lowercase:
        text = text.lower()
    if strip_punctuation:
        text = _strip_punct(text)
    return " ".join(text.split())


def normalize_text(
    text: str,
    lowercase: bool = True,
    strip_punctuation: bool = False,
    unify_apostrophes: bool = True,
) -> str:
    """Normalize ``text`` for modelling.

    Unicode NFKC; control / zero-width / surrogate / private-use characters removed; every kind of
    whitespace collapsed to one ASCII space and stripped at both ends.  Options:

    - ``lowercase``: ``str.lower()``.
    - ``strip_punctuation``: punctuation and symbols (unicode categories P*, S*) become spaces, except
      an apostrophe inside a word (``don't`` stays, ``'quoted'`` loses its quotes).
    - ``unify_apostrophes``: typographic apostrophes (’ ‘ ʼ ` ´) become ``'``.

    The result is idempotent: ``normalize_text(normalize_text(x)) == normalize_text(x)``.
    """
    if not isinstance(text, str):
        raise TypeError(f"expected str, got {type(text).__name__}")
    # NFKC and lowercasing do not commute for a handful of characters; iterate to a fixed point.
    for _ in range(4):
        new = _normalize_once(text, lowercase, strip_punctuation, unify_apostrophes)
        if new == text:
            break
        text = new
    return text


class Tokenizer:
    """Common interface of the tokenizers."""

    kind = "base"

    def __init__(self, lowercase: bool = True, strip_punctuation: bool = False, unify_apostrophes: bool = True):
        self.lowercase = bool(lowercase)
        self.strip_punctuation = bool(strip_punctuation)
        self.unify_apostrophes = bool(unify_apostrophes)

    # -- normalization -------------------------------------------------------------------------------------------
    def normalizer_options(self) -> dict[str, bool]:
        return {
            "lowercase": self.lowercase,
            "strip_punctuation": self.strip_punctuation,
            "unify_apostrophes": self.unify_apostrophes,
        }

    def normalize(self, text: str) -> str:
        return normalize_text(text, **self.normalizer_options())

    # -- to implement ---------------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _decode_clean(self, ids: list[int]) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def unknown_chars(self, text: str) -> list[str]:  # pragma: no cover - abstract
        """Distinct characters of the normalized ``text`` that the tokenizer cannot represent (sorted)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------------------------
    def can_encode(self, text: str) -> bool:
        return not self.unknown_chars(text)

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text; ``<pad>``, ``<sos>``, ``<eos>`` and ``<unk>`` are dropped. Accepts lists and 1-D tensors."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        clean = []
        size = self.vocab_size
        for i in ids:
            if isinstance(i, bool) or not isinstance(i, int):
                try:
                    if float(i) != int(i):
                        raise TypeError
                    i = int(i)
                except (TypeError, ValueError, OverflowError):
                    raise TypeError(f"token ids must be integers, got {i!r}") from None
            if i < 0 or i >= size:
                raise ValueError(f"token id {i} outside the vocabulary [0, {size})")
            if i > UNK:
                clean.append(i)
        return self._decode_clean(clean)

    def __len__(self) -> int:
        return self.vocab_size

    @staticmethod
    def from_state_dict(d: dict[str, Any]) -> "Tokenizer":
        return tokenizer_from_state_dict(d)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, {self.normalizer_options()})"


def _check_str(text: Any) -> None:
    if not isinstance(text, str):
        raise TypeError(f"expected str, got {type(text).__name__}")


class CharTokenizer(Tokenizer):
    """One token per character of the normalized text; the space is a token (id 4)."""

    kind = "char"

    def __init__(self, chars: Sequence[str], **normalizer: bool):
        super().__init__(**normalizer)
        chars = list(chars)
        if " " in chars:
            chars.remove(" ")
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise ValueError("chars must be distinct single characters")
        self.itos: list[str] = list(SPECIALS) + [" "] + chars
        self.stoi: dict[str, int] = {c: i for i, c in enumerate(self.itos) if i > UNK}

    @classmethod
    def build(
        cls,
        texts: Iterable[str],
        lowercase: bool = True,
        strip_punctuation: bool = False,
        unify_apostrophes: bool = True,
        min_count: int = 1,
    ) -> "CharTokenizer":
        """Vocabulary = the characters of the normalized ``texts`` seen at least ``min_count`` times,
        in code-point order (deterministic), after the 4 specials and the space."""
        opts = dict(lowercase=lowercase, strip_punctuation=strip_punctuation, unify_apostrophes=unify_apostrophes)
        counts: dict[str, int] = {}
        for t in texts:
            for ch in normalize_text(t, **opts):
                counts[ch] = counts.get(ch, 0) + 1
        chars = sorted(c for c, n in counts.items() if n >= min_count and c != " ")
        return cls(chars, **opts)

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        _check_str(text)
        get = self.stoi.get
        return [get(ch, UNK) for ch in self.normalize(text)]

    def _decode_clean(self, ids: list[int]) -> str:
        return "".join(self.itos[i] for i in ids)

    def unknown_chars(self, text: str) -> list[str]:
        _check_str(text)
        return sorted({ch for ch in self.normalize(text) if ch not in self.stoi})

    def state_dict(self) -> dict[str, Any]:
        return {"type": "char", "version": 1, "vocab": list(self.itos), "normalizer": self.normalizer_options()}

    @classmethod
    def _from_state(cls, d: dict[str, Any]) -> "CharTokenizer":
        vocab = list(d["vocab"])
        if tuple(vocab[:4]) != SPECIALS or vocab[4] != " ":
            raise ValueError("char tokenizer state: vocabulary must start with <pad> <sos> <eos> <unk> ' '")
        return cls(vocab[5:], **d.get("normalizer", {}))


class SentencePieceTokenizer(Tokenizer):
    """Subword tokenizer backed by the ``sentencepiece`` library (unigram or BPE).

    Trained in memory (no files); sentencepiece's own specials are configured as
    ``<pad>``=0, ``<sos>``=1, ``<eos>``=2, ``<unk>``=3.  Text is normalized by :func:`normalize_text`
    (sentencepiece's own normalization is off), and the meta symbol ``▁`` (U+2581) is mapped to a space.
    """

    kind = "sentencepiece"

    def __init__(self, model_proto: bytes, **normalizer: bool):
        super().__init__(**normalizer)
        import sentencepiece as spm

        self._proto = bytes(model_proto)
        self.sp = spm.SentencePieceProcessor(model_proto=self._proto)
        for i, piece in enumerate(SPECIALS):
            if self.sp.id_to_piece(i) != piece:
                raise ValueError(f"sentencepiece model: id {i} is {self.sp.id_to_piece(i)!r}, expected {piece!r}")
        self._unk_cache: dict[str, bool] = {}

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        model_type: str = "unigram",
        character_coverage: float = 1.0,
        lowercase: bool = True,
        strip_punctuation: bool = False,
        unify_apostrophes: bool = True,
        byte_fallback: bool = False,
        hard_vocab_limit: bool = False,
        seed_sentencepiece_size: int | None = None,
        max_sentences: int = 2_000_000,
        num_threads: int = 1,
    ) -> "SentencePieceTokenizer":
        """Train on ``texts`` (any iterable, consumed once).

        ``hard_vocab_limit=False`` lets a small corpus give a smaller vocabulary instead of failing.
        ``character_coverage`` < 1 (e.g. 0.9995 for CJK) maps rare characters to ``<unk>``; with
        ``byte_fallback=True`` they become UTF-8 byte pieces instead.
        """
        import sentencepiece as spm

        if model_type not in ("unigram", "bpe"):
            raise ValueError(f"model_type must be 'unigram' or 'bpe', got {model_type!r}")
        opts = dict(lowercase=lowercase, strip_punctuation=strip_punctuation, unify_apostrophes=unify_apostrophes)
        proto_tok = cls.__new__(cls)
        Tokenizer.__init__(proto_tok, **opts)
        normalized = [s for s in (proto_tok.normalize(t) for t in texts) if s]
        if not normalized:
            raise ValueError("cannot train a sentencepiece model: no non-empty text")
        model = io.BytesIO()
        kwargs: dict[str, Any] = dict(
            sentence_iterator=iter(normalized),
            model_writer=model,
            vocab_size=int(vocab_size),
            model_type=model_type,
            character_coverage=float(character_coverage),
            pad_id=PAD,
            bos_id=SOS,
            eos_id=EOS,
            unk_id=UNK,
            pad_piece=SPECIALS[PAD],
            bos_piece=SPECIALS[SOS],
            eos_piece=SPECIALS[EOS],
            unk_piece=SPECIALS[UNK],
            normalization_rule_name="identity",
            hard_vocab_limit=bool(hard_vocab_limit),
            byte_fallback=bool(byte_fallback),
            input_sentence_size=int(max_sentences),
            shuffle_input_sentence=True,
            num_threads=int(num_threads),
            minloglevel=2,
        )
        if seed_sentencepiece_size:
            kwargs["seed_sentencepiece_size"] = int(seed_sentencepiece_size)
        try:
            spm.SentencePieceTrainer.train(**kwargs)
        except RuntimeError as e:  # sentencepiece reports bad settings (vocab too large...) this way
            raise ValueError(f"sentencepiece training failed: {e}") from e
        return cls(model.getvalue(), **opts)

    def normalize(self, text: str) -> str:
        text = super().normalize(text)
        if "\u2581" in text:
            text = " ".join(text.replace("\u2581", " ").split())
        return text

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        _check_str(text)
        return list(self.sp.encode(self.normalize(text)))

    def sample_encode(self, text: str, alpha: float, nbest: int, rng: "np.random.Generator") -> list[int]:
        """One segmentation of ``text`` drawn from its ``nbest`` most likely ones with probability proportional to
        P(segmentation)^alpha: the l-best sampling of subword regularisation (Kudo, 2018). The draw comes from
        ``rng``, not sentencepiece's own generator, so it is a function of whoever seeds ``rng``. A BPE model has
        one segmentation, which is returned."""
        import numpy as np

        _check_str(text)
        norm = self.normalize(text)
        cands = [list(c) for c in self.sp.nbest_encode_as_ids(norm, int(nbest))] if self.model_type == "unigram" else []
        if len(cands) <= 1:
            return cands[0] if cands else list(self.sp.encode(norm))
        logp = np.array([sum(self.sp.get_score(i) for i in c) for c in cands], dtype=np.float64) * float(alpha)
        p = np.exp(logp - logp.max())
        return cands[int(rng.choice(len(cands), p=p / p.sum()))]

    @property
    def model_type(self) -> str:
        """``unigram`` or ``bpe``, from the model itself."""
        from sentencepiece import sentencepiece_model_pb2 as pb

        if not hasattr(self, "_model_type"):
            m = pb.ModelProto()
            m.ParseFromString(self._proto)
            self._model_type = pb.TrainerSpec.ModelType.Name(m.trainer_spec.model_type).lower()
        return self._model_type

    def _decode_clean(self, ids: list[int]) -> str:
        return self.sp.decode(ids)

    def _char_unknown(self, ch: str) -> bool:
        hit = self._unk_cache.get(ch)
        if hit is None:
            hit = UNK in self.sp.encode(ch)
            self._unk_cache[ch] = hit
        return hit

    def unknown_chars(self, text: str) -> list[str]:
        _check_str(text)
        return sorted({ch for ch in self.normalize(text) if ch != " " and self._char_unknown(ch)})

    def pieces(self, text: str) -> list[str]:
        return list(self.sp.encode(self.normalize(text), out_type=str))

    def state_dict(self) -> dict[str, Any]:
        return {"type": "sentencepiece", "version": 1, "model": self._proto, "normalizer": self.normalizer_options()}

    @classmethod
    def _from_state(cls, d: dict[str, Any]) -> "SentencePieceTokenizer":
        return cls(bytes(d["model"]), **d.get("normalizer", {}))

    def __getstate__(self) -> dict[str, Any]:  # picklable for DataLoader workers
        return self.state_dict()

    def __setstate__(self, d: dict[str, Any]) -> None:
        self.__init__(bytes(d["model"]), **d.get("normalizer", {}))


_REGISTRY: dict[str, type] = {"char": CharTokenizer, "sentencepiece": SentencePieceTokenizer}


def tokenizer_from_state_dict(d: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from ``tokenizer.state_dict()``."""
    if not isinstance(d, dict) or "type" not in d:
        raise ValueError("not a tokenizer state dict (missing 'type')")
    cls = _REGISTRY.get(d["type"])
    if cls is None:
        raise ValueError(f"unknown tokenizer type {d['type']!r}; known: {sorted(_REGISTRY)}")
    return cls._from_state(d)
