"""How a recognizer turns encoder states into tokens: one frozen options object, and the scorers it asks for.

`DecodeOptions` travels whole from the command line and the Python API to search. `decode_batch` picks the
search it describes:

- beam 1, no CTC, LM, bonus or vocabulary: greedy attention decoding (`greedy_search`, the fastest);
- ctc_weight 1 with beam 1 and nothing else: best-path CTC decoding of the model's CTC head;
- anything else: `beam_search` over weighted scorers (CTC prefix, LM, vocabulary; see seq2seq/scorers.py),
  beam 1 included (greedy with the scorers).

Each search runs the model through `asr_s2s.accel.accelerate(model, opts.precision)`, the search interface on
weights prepared for speed.

A model file may carry the options it was tuned with (`ASRModel.recommended_decoding`); `evaluate` and
`transcribe` use them unless the user describes the search (`choose_options`).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from .accel import PRECISIONS, accelerate
from .seq2seq.scorers import LMScorer, VocabularyConstraint, ctc_greedy
from .seq2seq.inference import as_inference
from .seq2seq.search import LENGTH_NORMS, SearchResult, beam_search, greedy_search
from .dataclass_dict import from_dict_strict

VOCABULARY_MODES = ("phrases", "words")


@dataclass(frozen=True)
class DecodeOptions:
    """beam: hypotheses kept per utterance (1: greedy). ctc_weight λ: the CTC head's share of the score, the
    decoder's is 1 - λ. lm / lm_weight β: a language model file (asr-s2s train-lm) and its weight; with no
    file, the model's own LM if it carries one. length_bonus γ: added per token (offsets the scorers' bias
    to short outputs). length_norm / alpha: how finished hypotheses are normalised (see search.py).
    vocabulary: allowed phrases (or words, vocabulary_mode "words"); None allows everything. precision: see
    asr_s2s/accel/__init__.py. max_len_ratio: at most this many tokens per encoder frame. pre_beam: CTC scores the best
    ceil(pre_beam * beam) tokens of each hypothesis."""

    beam: int = 1
    ctc_weight: float = 0.0
    lm: str | None = None
    lm_weight: float = 0.0
    length_bonus: float = 0.0
    length_norm: str = "length"
    alpha: float = 1.0
    vocabulary: tuple[str, ...] | None = None
    vocabulary_mode: str = "phrases"
    precision: str = "fp32"
    max_len_ratio: float = 2.0
    pre_beam: float = 1.5

    def __post_init__(self) -> None:
        if isinstance(self.vocabulary, list):
            object.__setattr__(self, "vocabulary", tuple(self.vocabulary))
        if isinstance(self.beam, bool) or not isinstance(self.beam, int) or self.beam < 1:
            raise ValueError(f"beam must be an integer >= 1, got {self.beam!r}")
        if not 0.0 <= self.ctc_weight <= 1.0:
            raise ValueError(f"ctc_weight must be in [0, 1], got {self.ctc_weight}")
        if not self.lm_weight >= 0.0:
            raise ValueError(f"lm_weight must be >= 0, got {self.lm_weight}")
        if self.length_norm not in LENGTH_NORMS:
            raise ValueError(f"length_norm must be one of {LENGTH_NORMS}, got {self.length_norm!r}")
        if not self.alpha >= 0.0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        if self.vocabulary_mode not in VOCABULARY_MODES:
            raise ValueError(f"vocabulary_mode must be one of {VOCABULARY_MODES}, got {self.vocabulary_mode!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not self.max_len_ratio > 0.0:
            raise ValueError(f"max_len_ratio must be > 0, got {self.max_len_ratio}")
        if not self.pre_beam >= 1.0:
            raise ValueError(f"pre_beam must be >= 1, got {self.pre_beam}")
        if self.vocabulary is not None and not self.vocabulary:
            raise ValueError("vocabulary is empty")

    def replace(self, **changes: Any) -> "DecodeOptions":
        """A copy with `changes` (None values are ignored, so parsed flags that were not given pass through)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["vocabulary"] = list(self.vocabulary) if self.vocabulary is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DecodeOptions":
        return from_dict_strict(cls, d)

    @property
    def plain_greedy(self) -> bool:
        return (self.beam == 1 and self.ctc_weight == 0.0 and self.lm_weight == 0.0 and self.length_bonus == 0.0
                and self.vocabulary is None)


# The fields that describe the search itself. Given any of them, a command or a call decodes with what it gave
# and plain defaults for the rest, not with the model's recommended setting: `--beam 1 --ctc-weight 0` is greedy
# attention decoding, whatever the model recommends. The other fields (vocabulary, precision, ...) apply on top.
SEARCH_FIELDS = ("beam", "ctc_weight", "lm", "lm_weight", "length_bonus", "length_norm", "alpha")


def choose_options(recommended: DecodeOptions, **given: Any) -> DecodeOptions:
    """The options for a decode: `recommended` (a model's), or plain defaults when `given` names any search
    field; then every field in `given` that is not None."""
    search = any(given.get(f) is not None for f in SEARCH_FIELDS)
    return (DecodeOptions() if search else recommended).replace(**given)


def read_vocabulary(path: str | os.PathLike) -> tuple[str, ...]:
    """One allowed word or phrase per line (blank lines and lines starting with # ignored). Errors name the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such vocabulary file") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a folder, not a vocabulary file (one word or phrase per line)") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a UTF-8 text vocabulary file ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot read the vocabulary file ({e.strerror})") from None
    entries = tuple(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    if not entries:
        raise ValueError(f"{path}: the vocabulary file has no entry (one word or phrase per line)")
    return entries


def vocabulary_constraint(tokenizer: Any, entries: Sequence[str], mode: str, source: str = "vocabulary"
                          ) -> VocabularyConstraint:
    """The trie scorer for `entries` under `tokenizer`; an entry the tokenizer cannot spell is an error naming it."""
    seqs = []
    for i, entry in enumerate(entries, 1):
        bad = tokenizer.unknown_chars(entry)
        if bad:
            raise ValueError(f"{source}: entry {i} ({entry!r}) has characters the model cannot write: "
                             f"{''.join(bad)!r}")
        if mode == "words" and len(tokenizer.normalize(entry).split()) > 1 and tokenizer.kind != "char":
            raise ValueError(f"{source}: entry {i} ({entry!r}) is several words; vocabulary mode 'words' takes one "
                             "word per line")
        ids = tokenizer.encode(entry)
        if not ids:
            raise ValueError(f"{source}: entry {i} ({entry!r}) is empty after normalisation")
        seqs.append(ids)
    separator = [tokenizer.stoi[" "]] if getattr(tokenizer, "kind", "") == "char" else []
    return VocabularyConstraint(seqs, tokenizer.vocab_size, mode=mode, separator=separator)


def decode_batch(model: Any, src: Tensor, src_lens: Tensor, opts: DecodeOptions, *, lm: Any = None,
                 vocabulary: VocabularyConstraint | None = None, max_len: int | Tensor = 200) -> SearchResult:
    """Search a Seq2Seq `model` on prepared inputs with `opts`; `lm` (an LSTMLM, needed when lm_weight > 0) and
    `vocabulary` come built (ASRModel caches them). -> SearchResult."""
    inf = accelerate(model, opts.precision)
    common = dict(max_len=max_len, max_len_ratio=opts.max_len_ratio, length_norm=opts.length_norm,
                  alpha=opts.alpha)
    if opts.plain_greedy:
        return greedy_search(inf, src, src_lens, **common)
    if opts.ctc_weight == 1.0 and opts.beam == 1 and opts.lm_weight == 0.0 and opts.vocabulary is None:
        return ctc_greedy_search(inf, src, src_lens)
    scorers: list[tuple[Any, float]] = []
    if opts.lm_weight > 0.0:
        if lm is None:
            raise ValueError("lm_weight > 0 needs a language model (--lm FILE)")
        scorers.append((LMScorer(lm), opts.lm_weight))
    if vocabulary is not None:
        scorers.append((vocabulary, 1.0))
    return beam_search(inf, src, src_lens, beam=opts.beam, ctc_weight=opts.ctc_weight, scorers=scorers,
                       length_bonus=opts.length_bonus, pre_beam=opts.pre_beam, **common)


def ctc_greedy_search(model: Any, src: Tensor, src_lens: Tensor) -> SearchResult:
    """Best-path decoding of the CTC head of `model` (a Seq2Seq or an Inference). Scores: the best path's
    log-probability per token; attention: zeros (L_b, T'_b)."""
    inf = as_inference(model)
    if not inf.has_ctc:
        raise ValueError("CTC decoding needs a model trained with a CTC head (model.ctc_weight > 0)")
    with inf.running():
        enc = inf.encode(src, src_lens)
        logp = inf.ctc_log_probs(enc)
        tokens = ctc_greedy(logp, enc.lengths)
        t = logp.size(1)
        real = (torch.arange(t)[None, :] < enc.lengths[:, None].cpu()).to(logp.device)
        path = (logp.max(dim=-1).values * real).sum(dim=1)
        lengths = torch.tensor([len(x) for x in tokens], dtype=torch.long)
        scores = path / lengths.clamp(min=1).to(path)
        att = [torch.zeros(len(x), int(n)) for x, n in zip(tokens, enc.lengths.tolist())]
        return SearchResult(tokens, lengths, scores, att)
