"""Length-sorted batches, and decoding waveforms in them: the one loop that transcription, evaluation and the
bench share.

Batching utterances of similar length keeps the padding (compute spent on nothing) small; the order within a
batch does not change any utterance's result beyond float rounding (the encoder and the search are
padding-exact, see seq2seq/).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterator, Sequence

if TYPE_CHECKING:  # torch itself is imported where a batch is decoded: the CLI reaches this module before it
    from torch import Tensor


def length_batches(lengths: Sequence[float], max_items: int, max_total: float = math.inf) -> list[list[int]]:
    """Indices into `lengths`, sorted by length (stable: equal lengths keep their order) and cut greedily into
    batches of at most `max_items` whose padded size (items x the longest) stays within `max_total`; an item
    longer than `max_total` forms a batch of its own (nothing is dropped)."""
    if max_items < 1:
        raise ValueError(f"max_items must be >= 1, got {max_items}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    out: list[list[int]] = []
    cur: list[int] = []
    longest = 0.0
    for i in order:
        longest2 = max(longest, lengths[i])
        if cur and (longest2 * (len(cur) + 1) > max_total or len(cur) >= max_items):
            out.append(cur)
            cur, longest2 = [], lengths[i]
        cur.append(i)
        longest = longest2
    if cur:
        out.append(cur)
    return out


def decode_in_batches(model: Any, waves: Sequence[Tensor], options: Any, *, batch_size: int,
                      max_len: int | Sequence[int] = 200) -> Iterator[tuple[list[int], Any]]:
    """Decode waveforms (each (N_i,) at the model's sample rate) with an ASRModel in length-sorted batches of at
    most `batch_size`. `options`: a DecodeOptions; `max_len`: one token limit, or one per waveform.
    -> yields (indices into `waves`, that batch's SearchResult: row j is waves[indices[j]])."""
    import torch

    for idx in length_batches([len(w) for w in waves], batch_size):
        limit = max_len if isinstance(max_len, int) else torch.tensor([max_len[i] for i in idx])
        yield idx, model.decode_waves([waves[i] for i in idx], options, max_len=limit)
