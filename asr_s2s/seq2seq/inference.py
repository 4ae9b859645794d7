"""What search needs from a model: encode, the decoder's initial state, and a step.

`Inference` is that interface, and its plain implementation: it runs the model's own modules (the same
arithmetic as training, without dropout). Search (search.py) talks only to it. `asr_s2s.accel.Accelerated` is
the same interface on prepared weights (oneDNN layouts, bf16, int8, compiled kernels); it overrides `encode` and
`stepper` and computes the same function up to rounding.

    inf = Inference(model)                       # or asr_s2s.accel.accelerate(model, "bf16")
    enc = inf.encode(src, src_lens)              # EncoderOutput: states (B, T', H), lengths (B,), final
    state, mem = inf.initial_state(enc)          # DecoderState (N rows), AttentionMemory (N rows)
    step = inf.stepper()                         # once per search
    logits, state, weights = step(tokens, state, mem)   # tokens (N,) -> (N, V), state, (N, T')

A search may reorder or cut rows of `state` and `mem` between steps (their `index_select`).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from .attention import AttentionMemory
from .decoder import DecoderState
from .encoder import EncoderOutput

Step = Callable[[Tensor, DecoderState, AttentionMemory], tuple[Tensor, DecoderState, Tensor]]


class Inference:
    """The plain search interface of a Seq2Seq `model` (see the module doc)."""

    def __init__(self, model: nn.Module) -> None:  # a Seq2Seq (not imported: model.py imports search)
        self.model = model

    @property
    def has_ctc(self) -> bool:
        return getattr(self.model, "ctc", None) is not None

    def encode(self, src: Tensor, src_lens: Tensor) -> EncoderOutput:
        """src: features (B, T, F) float, or token ids (B, S) long for text; src_lens (B,) -> fp32 output."""
        return self.model.encode(src, src_lens)

    def initial_state(self, enc: EncoderOutput) -> tuple[DecoderState, AttentionMemory]:
        """The decoder's state before its first step (one row per utterance) and the attention memory."""
        dec = self.model.decoder
        mem = dec.prepare(enc)
        return dec.init_state(enc, mem), mem

    def stepper(self) -> Step:
        """The step function for one search: (tokens (N,), state, mem) -> logits (N, V), state, weights (N, T').
        Asked once per search, so that an implementation can look up what it prepared once, not every step."""
        return self.model.decoder.step

    def ctc_log_probs(self, enc: EncoderOutput) -> Tensor:
        """The CTC head's log-probabilities (B, T', V), fp32."""
        if not self.has_ctc:
            raise ValueError("CTC decoding needs a model trained with a CTC head (model.ctc_weight > 0)")
        return torch.log_softmax(self.model.ctc(enc.states).float(), dim=-1)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Inference mode with the model in eval mode (no dropout), given back in the mode it came in. A model
        already in eval mode is left alone: eval() / train() walk every submodule (~0.45 ms per batch for the
        reference model, under cProfile)."""
        with eval_mode(self.model):
            yield


def as_inference(model: nn.Module | Inference) -> Inference:
    """`model` itself when it is an Inference, else the plain Inference of a Seq2Seq."""
    return model if isinstance(model, Inference) else Inference(model)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """See Inference.running."""
    was_training = model.training
    switch = any(m.training for m in model.modules())
    if switch:
        model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        if switch:
            model.train(was_training)
