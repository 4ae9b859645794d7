"""Subword regularisation (``data.subword_alpha``): l-best sampling of sentencepiece unigram segmentations, keyed by
(seed, epoch, pair) so that runs, workers and resumes draw the same; off, the dataset encodes as before."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from asr_s2s.config import load_config
from asr_s2s.data import TextPairDataset
from asr_s2s.text import CharTokenizer, SentencePieceTokenizer

WORDS = ["seven", "seventeen", "seventy", "one", "eleven", "hundred", "thousand", "and", "forty", "four", "fourteen"]


def sentences(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(2, 7)))) for _ in range(n)]


@pytest.fixture(scope="module")
def unigram() -> SentencePieceTokenizer:
    return SentencePieceTokenizer.train(sentences(400, 0), vocab_size=40, model_type="unigram")


@pytest.fixture(scope="module")
def pairs() -> list[tuple[str, str]]:
    src = sentences(30, 1)
    return [(s, " ".join(reversed(s.split()))) for s in src]


def test_a_sample_spells_the_sentence_and_comes_from_the_nbest(unigram: SentencePieceTokenizer) -> None:
    text = "seventeen hundred and forty four"
    nbest = [tuple(c) for c in unigram.sp.nbest_encode_as_ids(unigram.normalize(text), 8)]
    assert len(set(nbest)) > 1, "the fixture's sentence must have several segmentations"
    rng = np.random.default_rng(0)
    draws = Counter(tuple(unigram.sample_encode(text, 0.5, 8, rng)) for _ in range(300))
    assert set(draws) <= set(nbest) and len(draws) > 1
    assert all(unigram.decode(list(d)) == text for d in draws)
    # The best segmentation is the most likely draw, and a sharp alpha draws nothing else.
    assert draws.most_common(1)[0][0] == tuple(unigram.encode(text))
    sharp = {tuple(unigram.sample_encode(text, 50.0, 8, rng)) for _ in range(50)}
    assert sharp == {tuple(unigram.encode(text))}


def test_alpha_zero_is_the_plain_encoding(unigram: SentencePieceTokenizer, pairs: list) -> None:
    ds = TextPairDataset(pairs, unigram, unigram)
    for i, (s, t) in enumerate(pairs):
        item = ds[i]
        assert item["src"].tolist() == unigram.encode(s) and item["tokens"].tolist() == unigram.encode(t)


def test_draws_are_keyed_by_seed_epoch_and_pair(unigram: SentencePieceTokenizer, pairs: list) -> None:
    def epoch_items(ds: TextPairDataset, epoch: int, order: list[int]) -> dict[int, tuple]:
        ds.set_epoch(epoch)
        return {i: (tuple(ds[i]["src"].tolist()), tuple(ds[i]["tokens"].tolist())) for i in order}

    forward = list(range(len(pairs)))
    a = TextPairDataset(pairs, unigram, unigram, subword_alpha=0.3, subword_nbest=8, seed=5)
    a0, a1 = epoch_items(a, 0, forward), epoch_items(a, 1, forward)
    # A fresh dataset that starts at epoch 1 (a resumed run) and reads in another order draws the same.
    b = TextPairDataset(pairs, unigram, unigram, subword_alpha=0.3, subword_nbest=8, seed=5)
    assert epoch_items(b, 1, forward[::-1]) == a1
    assert a0 != a1, "another epoch must re-segment"
    c = TextPairDataset(pairs, unigram, unigram, subword_alpha=0.3, subword_nbest=8, seed=6)
    assert epoch_items(c, 1, forward) != a1, "another seed must draw differently"
    for i, (s, t) in enumerate(pairs):  # whatever the segmentation, the text is the pair's
        assert unigram.decode(list(a1[i][0])) == s and unigram.decode(list(a1[i][1])) == t


def test_only_unigram_tokenizers_are_accepted(unigram: SentencePieceTokenizer, pairs: list) -> None:
    bpe = SentencePieceTokenizer.train(sentences(400, 0), vocab_size=40, model_type="bpe")
    chars = CharTokenizer.build(s for p in pairs for s in p)
    with pytest.raises(ValueError, match="source side's is bpe"):
        TextPairDataset(pairs, bpe, unigram, subword_alpha=0.2)
    with pytest.raises(ValueError, match="target side's is CharTokenizer"):
        TextPairDataset(pairs, unigram, chars, subword_alpha=0.2)
    TextPairDataset(pairs, bpe, chars)  # off: any tokenizer
    with pytest.raises(ValueError, match="data.subword_alpha"):
        load_config(None, ["data.subword_alpha=-0.1"])
    with pytest.raises(ValueError, match="data.subword_nbest"):
        load_config(None, ["data.subword_nbest=0"])


def test_a_translation_run_with_subword_sampling_trains_and_repeats(tmp_path: Path) -> None:
    """The option reaches a real run: two runs with the same seed give the same weights, and the loss falls."""
    from asr_s2s.train import train

    tsv = tmp_path / "train.tsv"
    tsv.write_text("".join(f"{s}\t{' '.join(reversed(s.split()))}\n" for s in sentences(120, 2)), encoding="utf-8")
    sets = [f"data.train={tsv}", "data.task=translation", "data.tokenizer=unigram", "data.src_tokenizer=unigram",
            "data.vocab_size=40", "data.src_vocab_size=40", "data.max_frames=400", "data.subword_alpha=0.3",
            "model.encoder.hidden=32", "model.encoder.layers=1", "model.encoder.input_dim=16", "model.decoder.hidden=32",
            "model.decoder.embed_dim=16", "model.encoder.subsampling=none", "epochs=3", "threads=1", "log_every=1",
            "checkpoint_every=0", "optim.warmup_steps=5"]
    weights = []
    for run in ("a", "b"):
        out = train(load_config(None, sets), tmp_path / run, quiet=True)
        weights.append(torch.load(out, weights_only=True)["model"])
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    import json

    losses = [json.loads(line)["loss"] for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line]
    assert losses[-1] < losses[0]
