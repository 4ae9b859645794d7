"""Check transcripts against audio with a recognizer's CTC head.

A prompt corpus (speakers asked to read a given text) has transcripts that may not match what was
said: a misread digit, a skipped word, a wrong file. The CTC loss of a transcript given the audio,
per token, measures how well the text aligns with the sound; comparing it with the loss of other
utterances' texts on the same audio tells a fitting transcript from a wrong one even where the
recognizer itself is weak (accents, phone microphones).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from .tokens import CTC_BLANK


@dataclass(frozen=True)
class Fit:
    """How well texts fit one recording: ``losses[i]`` is the CTC loss per token of ``texts[i]``."""

    texts: tuple[str, ...]
    losses: tuple[float, ...]

    @property
    def best(self) -> int:
        return min(range(len(self.losses)), key=self.losses.__getitem__)


@torch.inference_mode()
def ctc_log_probs(model, wave: torch.Tensor) -> torch.Tensor:
    """CTC log-probabilities ``(T', V)`` of one waveform ``(N,)`` at the model's sample rate."""
    if model.seq2seq.ctc is None:
        raise ValueError("this model has no CTC head: checking transcripts needs one (ctc_weight > 0)")
    feats, lens = model.features_of([wave])
    src = model.prepare_source(feats, lens)
    enc = model.seq2seq.encode(src, lens)
    lp = torch.log_softmax(model.seq2seq.ctc(enc.states).float(), dim=-1)
    return lp[0, : int(enc.lengths[0])]


def per_token_losses(log_probs: torch.Tensor, texts: Sequence[str], tokenizer) -> list[float]:
    """CTC loss per token of each text given ``log_probs`` ``(T', V)``; inf where a text cannot align
    (longer than the frames allow) or has no token."""
    ids = [tokenizer.encode(t) for t in texts]
    out = [float("inf")] * len(texts)
    keep = [i for i, x in enumerate(ids) if x]
    if not keep:
        return out
    t = log_probs.size(0)
    lp = log_probs[:, None, :].expand(t, len(keep), log_probs.size(1))  # (T', K, V)
    targets = torch.cat([torch.tensor(ids[i]) for i in keep])
    tlens = torch.tensor([len(ids[i]) for i in keep])
    loss = F.ctc_loss(lp, targets, torch.full((len(keep),), t), tlens, blank=CTC_BLANK, reduction="none",
                      zero_infinity=False)
    for j, i in enumerate(keep):
        out[i] = float(loss[j]) / len(ids[i])
    return out


def fit(model, path: str | Path, texts: Sequence[str]) -> Fit:
    """Per-token CTC losses of *texts* on the recording at *path* (read and resampled by soundfile/soxr)."""
    from .audio import load_audio

    wave = load_audio(path, model.features.sample_rate)
    return Fit(tuple(texts), tuple(per_token_losses(ctc_log_probs(model, wave), texts, model.tokenizer)))
