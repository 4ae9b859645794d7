"""From a TrainConfig to what the trainer consumes: tokenizer(s), datasets, batches, CMVN, dev scoring.

Kept apart from the loop in train.py so the loop reads as a loop. Tokenizers are built once (by rank
0) and stored in EXPDIR/tokenizer.pt, so a resumed or distributed run uses exactly the same one.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist

from .augment import AugmentConfig
from .atomic import atomic_open
from .checkpoint import load_checkpoint
from .config import TrainConfig
from .data import AudioDataset, LengthBucketSampler, TextPairDataset, collate_audio, collate_text
from .features import GlobalCMVN
from .manifest import read_manifest, read_tsv_pairs
from .text import CharTokenizer, SentencePieceTokenizer, tokenizer_from_state_dict


@dataclass
class TrainData:
    model_cfg: Any
    tokenizer: Any
    src_tokenizer: Any
    train_set: Any
    collate: Callable
    sampler: LengthBucketSampler
    evaluate_dev: Callable[..., Optional[dict]]
    cmvn_stats: Optional[tuple[torch.Tensor, torch.Tensor]]
    spec_augment: Optional[dict]
    max_duration: float
    manifest_skipped: dict = field(default_factory=dict)  # cause (or filtered_too_long...) -> entries dropped

    def batches(self, epoch: int) -> list[list[int]]:
        """Every global batch of ``epoch`` (deterministic in the seed and the epoch)."""
        return self.sampler.batches(epoch)


def _build_tokenizer(kind: str, texts: list[str], vocab_size: int, lowercase: bool, strip_punctuation: bool,
                     character_coverage: float = 1.0):
    norm = {"lowercase": lowercase, "strip_punctuation": strip_punctuation}
    if kind == "char":
        return CharTokenizer.build(texts, **norm)
    if kind in ("bpe", "unigram"):
        return SentencePieceTokenizer.train(texts, vocab_size=vocab_size, model_type=kind,
                                            character_coverage=character_coverage, **norm)
    raise ValueError(f"data.tokenizer must be char, bpe or unigram, got {kind!r}")


def _shared_tokenizers(out: Path, build: Callable[[], dict], rank: int, world: int) -> dict:
    """Rank 0 builds (or, on resume, finds) EXPDIR/tokenizer.pt; the other ranks load the same file."""
    path = out / "tokenizer.pt"
    if rank == 0 and not path.exists():
        states = {k: (v.state_dict() if v is not None else None) for k, v in build().items()}
        with atomic_open(path, "wb") as f:
            torch.save(states, f)
    if world > 1:
        dist.barrier()
    states = load_checkpoint(path)  # weights_only: a tampered EXPDIR/tokenizer.pt is refused, never run
    return {k: (tokenizer_from_state_dict(v) if v is not None else None) for k, v in states.items()}


def _say(rank: int, msg: str) -> None:
    if rank == 0:
        print(msg, flush=True)


def build_data(cfg: TrainConfig, out: Path, resume: bool = False, rank: int = 0, world: int = 1) -> TrainData:
    d = cfg.data
    if d.task == "translation":
        return _build_text(cfg, out, rank, world)
    if d.task != "asr":
        raise ValueError(f"data.task must be asr or translation, got {d.task!r}")
    raw, _ = read_manifest(d.train, on_error="skip", min_duration=d.min_duration, max_duration=d.max_duration)
    toks = _shared_tokenizers(out, lambda: {"tokenizer": _build_tokenizer(d.tokenizer, [e.text for e in raw], d.vocab_size,
                                                                           d.lowercase, d.strip_punctuation)}, rank, world)
    tok = toks["tokenizer"]
    train_entries, report = read_manifest(d.train, tokenizer=tok, on_error="skip", min_duration=d.min_duration,
                                          max_duration=d.max_duration)
    if report.skipped:
        _say(rank, f"train manifest: skipped {report.skipped} entries\n{report.summary()}")
    if not train_entries:
        raise ValueError(f"{d.train}: no usable training entries")
    dev_entries = []
    if d.dev:
        dev_entries, dev_report = read_manifest(d.dev, on_error="skip")
        if dev_report.skipped:
            _say(rank, f"dev manifest: skipped {dev_report.skipped} entries\n{dev_report.summary()}")
        dev_entries = dev_entries[: d.max_dev] if d.max_dev else dev_entries
    cache = Path(d.cache_dir) if d.cache_dir else out / "feats"
    augment = AugmentConfig.from_dict(d.augment)
    # The training split only: dev scoring (evaluate_entries) reads its own manifest, never through this set.
    train_set = AudioDataset(train_entries, tok, cfg.features, cache_dir=cache,
                             speed_perturb=(0.9, 1.0, 1.1) if d.speed_perturb else None, on_error="skip",
                             augment=augment if augment.active else None, augment_seed=cfg.seed)
    sampler = LengthBucketSampler(train_set.lengths, d.max_frames, shuffle=True, seed=cfg.seed)
    cmvn_stats = None
    if d.cmvn == "global" and not resume:
        # Deterministic sample of training utterances; unperturbed, cached features (warms the cache too).
        idx = list(range(len(train_entries)))
        random.Random(cfg.seed).shuffle(idx)
        plain = AudioDataset(train_entries, tok, cfg.features, cache_dir=cache, on_error="skip")
        feats = (plain.features(i) for i in idx[: d.cmvn_utterances])
        cm = GlobalCMVN(cfg.features.n_mels).fit(f for f in _skip_bad(feats))
        cmvn_stats = (cm.mean.clone(), cm.std.clone())
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.input = "audio"
    model_cfg.vocab_size = tok.vocab_size
    model_cfg.encoder.input_dim = cfg.features.n_mels
    spec = None
    if d.spec_augment:
        spec = {"freq_masks": d.freq_masks, "freq_width": d.freq_width, "time_masks": d.time_masks, "time_width": d.time_width}

    def collate(batch: list) -> Optional[dict]:
        b = collate_audio(batch)
        if b is None:
            return None
        return {"src": b["feats"], "src_lens": b["feat_lens"], "tgt": b["tokens"], "tgt_lens": b["token_lens"],
                "ids": b["ids"], "duration": float(b["durations"].sum()), "num_skipped": b["num_skipped"]}

    dev_dicts = [e.to_dict() for e in dev_entries]  # once: the dev set is scored every epoch

    def evaluate_dev(model, beam: int = 1, ctc_weight: float = 0.0) -> Optional[dict]:
        if not dev_dicts:
            return None
        from .decoding import DecodeOptions
        from .evaluate import evaluate_entries

        r = evaluate_entries(model, dev_dicts, options=DecodeOptions(beam=beam, ctc_weight=ctc_weight))
        if r.wer is None:  # no dev utterance could be decoded: no dev score (a 0.0 would be kept as the best)
            return None
        return {"metric": "wer", "higher_is_better": False, "wer": r.wer, "cer": r.cer, "dev_utterances": r.num_utterances,
                "dev_rtf": r.rtf}

    return TrainData(model_cfg, tok, None, train_set, collate, sampler, evaluate_dev, cmvn_stats, spec,
                     max(e.duration for e in train_entries),
                     {**report.counts, **{f"filtered_{k}": v for k, v in report.filtered.items()}})


def _skip_bad(feats):
    from .audio import AudioError

    it = iter(feats)
    while True:
        try:
            yield next(it)
        except StopIteration:
            return
        except AudioError:
            continue


def _build_text(cfg: TrainConfig, out: Path, rank: int, world: int) -> TrainData:
    d = cfg.data
    pairs, report = read_tsv_pairs(d.train, on_error="skip")
    if report.skipped:
        _say(rank, f"train pairs: skipped {report.skipped} lines\n{report.summary()}")
    toks = _shared_tokenizers(out, lambda: {
        "src_tokenizer": _build_tokenizer(d.src_tokenizer, [s for s, _ in pairs], d.src_vocab_size, d.lowercase, d.strip_punctuation,
                                          d.character_coverage),
        "tokenizer": _build_tokenizer(d.tokenizer, [t for _, t in pairs], d.vocab_size, d.lowercase, d.strip_punctuation,
                                      d.character_coverage),
    }, rank, world)
    src_tok, tok = toks["src_tokenizer"], toks["tokenizer"]
    dev_pairs = []
    if d.dev:
        dev_pairs, _ = read_tsv_pairs(d.dev, on_error="skip")
        dev_pairs = dev_pairs[: d.max_dev] if d.max_dev else dev_pairs
    try:
        train_set = TextPairDataset(pairs, src_tok, tok, subword_alpha=d.subword_alpha, subword_nbest=d.subword_nbest,
                                    seed=cfg.seed)
    except ValueError as e:
        raise ValueError(f"config data.subword_alpha: {e}") from None
    sampler = LengthBucketSampler(train_set.lengths, d.max_frames, shuffle=True, seed=cfg.seed)
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.input = "text"
    model_cfg.vocab_size = tok.vocab_size
    model_cfg.src_vocab_size = src_tok.vocab_size

    def collate(batch: list) -> dict:
        b = collate_text(batch)
        return {"src": b["src"], "src_lens": b["src_lens"], "tgt": b["tokens"], "tgt_lens": b["token_lens"], "ids": b["ids"],
                "duration": 0.0, "num_skipped": 0}

    def evaluate_dev(model, beam: int = 1, ctc_weight: float = 0.0) -> Optional[dict]:  # no CTC head: config refuses > 0
        if not dev_pairs:
            return None
        from .evaluate import evaluate_pairs

        r = evaluate_pairs(model, dev_pairs, beam=beam)
        return {"metric": "bleu", "higher_is_better": True, "bleu": r["bleu"], "chrf": r["chrf"]}

    return TrainData(model_cfg, tok, src_tok, train_set, collate, sampler, evaluate_dev, None, None, 0.0, dict(report.counts))
