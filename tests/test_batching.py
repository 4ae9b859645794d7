"""The length-batching helper and the batched decode loop that transcription, evaluation and the bench share."""

from __future__ import annotations

import math
import random

import pytest
import torch

from asr_s2s.batching import decode_in_batches, length_batches


@pytest.mark.parametrize("seed", range(5))
def test_length_batches_sort_cap_and_keep_every_item(seed):
    rng = random.Random(seed)
    lengths = [rng.choice([rng.uniform(0.5, 20.0), 3.0]) for _ in range(rng.randint(1, 60))]
    max_items, max_total = rng.randint(1, 9), rng.uniform(15.0, 60.0)
    batches = length_batches(lengths, max_items, max_total)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert flat == sorted(range(len(lengths)), key=lambda i: lengths[i])  # sorted, ties in input order
    for b in batches:
        assert 1 <= len(b) <= max_items
        longest = max(lengths[i] for i in b)
        assert len(b) == 1 or longest * len(b) <= max_total  # an oversized item alone, never dropped
    # Greedy: a batch ends only where the next item would break a cap.
    for b, nxt in zip(batches, batches[1:]):
        grown = b + [nxt[0]]
        assert len(grown) > max_items or max(lengths[i] for i in grown) * len(grown) > max_total


def test_length_batches_without_a_total_are_fixed_size_chunks_of_the_sorted_order():
    lengths = [5, 1, 4, 1, 3, 9, 2]
    assert length_batches(lengths, 3) == [[1, 3, 6], [4, 2, 0], [5]]
    assert length_batches([], 4) == []
    with pytest.raises(ValueError):
        length_batches(lengths, 0)
    assert length_batches([2.0, 50.0, 1.0], 8, max_total=math.inf) == [[2, 0, 1]]


def test_decode_in_batches_covers_every_wave_once_as_decode_waves_does(model_path):
    from asr_s2s.decoding import DecodeOptions
    from asr_s2s.model import load_model

    model = load_model(model_path)
    rate = model.features.sample_rate
    gen = torch.Generator().manual_seed(0)
    waves = [torch.randn(int(rate * s), generator=gen) * 0.05 for s in (0.4, 1.1, 0.3, 0.8, 0.6)]
    options = DecodeOptions(precision="fp32")
    seen = []
    limits = [3, 1, 4, 2, 5]
    for idx, res in decode_in_batches(model, waves, options, batch_size=2, max_len=limits):
        assert 1 <= len(idx) <= 2 and len(res.tokens) == len(idx)
        same = model.decode_waves([waves[i] for i in idx], options, max_len=torch.tensor([limits[i] for i in idx]))
        assert res.tokens == same.tokens  # the same batch through the same path
        assert all(len(t) <= limits[i] for i, t in zip(idx, res.tokens))
        seen += idx
    assert seen == [2, 0, 4, 3, 1]
