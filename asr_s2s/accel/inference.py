"""`Accelerated`: the search interface (seq2seq.inference.Inference) of a model on prepared weights."""

from __future__ import annotations

from torch import Tensor, nn

from ..seq2seq.encoder import EncoderOutput
from ..seq2seq.inference import Inference, Step
from . import decoder, encoder
from .precision import resolve_precision


class Accelerated(Inference):
    """`model` (a Seq2Seq) decoded in `precision` ("fp32", "bf16", "int8" or "auto", resolved here for the
    model's device; see the package doc). Holds no weights itself: what it prepares is cached beside the model's
    modules and rebuilt when a weight changes, so one Accelerated per decode call is cheap."""

    def __init__(self, model: nn.Module, precision: str = "fp32") -> None:
        super().__init__(model)
        self.precision = resolve_precision(precision, model.decoder.output.weight.device)

    def encode(self, src: Tensor, src_lens: Tensor) -> EncoderOutput:
        return encoder.encode(self.model, src, src_lens, self.precision)

    def stepper(self) -> Step:
        return decoder.stepper(self.model.decoder, self.precision)


def accelerate(model: nn.Module | Inference, precision: str = "fp32") -> Accelerated:
    """The search interface of a Seq2Seq `model` (or of an Inference's model) on prepared weights, in
    `precision`."""
    if isinstance(model, Inference):
        model = model.model
    return Accelerated(model, precision)
