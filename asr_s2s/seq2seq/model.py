"""Seq2Seq: (text frontend) -> Encoder -> Decoder, with label-smoothed CE and optional joint CTC."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn

from ..tokens import CTC_BLANK, EOS, PAD, SOS, UNK  # noqa: F401  (re-exported by the seq2seq package)
from .decoder import DecoderConfig, make_decoder
from .encoder import Encoder, EncoderConfig, EncoderOutput, RecurrentEncoder
from . import search
from ..dataclass_dict import from_dict_strict

# The encoders a config can name (`model.encoder.type`). The registry lives here, not in encoder.py, so that an
# encoder in its own file can import the base classes from encoder.py without an import circle.
ENCODERS: dict[str, type[Encoder]] = {"recurrent": RecurrentEncoder}


def make_encoder(cfg: EncoderConfig) -> Encoder:
    """The encoder `cfg.type` names."""
    if cfg.type not in ENCODERS:
        raise ValueError(f"encoder type must be one of {sorted(ENCODERS)}, got {cfg.type!r}")
    return ENCODERS[cfg.type](cfg)

@dataclass
class ModelConfig:
    """Whole-model hyper-parameters; `to_dict()` gives plain types (YAML / checkpoint safe)."""

    input: str = "audio"  # audio | text
    vocab_size: int = 32  # target vocabulary
    src_vocab_size: int | None = None  # source vocabulary (input == "text")
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    label_smoothing: float = 0.1
    ctc_weight: float = 0.0  # loss = (1 - w) * CE + w * CTC over encoder states

    def __post_init__(self) -> None:
        if isinstance(self.encoder, dict):
            self.encoder = EncoderConfig.from_dict(self.encoder)
        if isinstance(self.decoder, dict):
            self.decoder = DecoderConfig.from_dict(self.decoder)
        if self.encoder.type not in ENCODERS:
            raise ValueError(f"encoder type must be one of {sorted(ENCODERS)}, got {self.encoder.type!r}")
        if self.input not in ("audio", "text"):
            raise ValueError(f"input must be 'audio' or 'text', got {self.input!r}")
        if self.input == "text" and not self.src_vocab_size:
            raise ValueError("input 'text' needs src_vocab_size")
        if not 0.0 <= self.ctc_weight <= 1.0:
            raise ValueError(f"ctc_weight must be in [0, 1], got {self.ctc_weight}")
        if self.vocab_size <= EOS:
            raise ValueError(f"vocab_size must exceed the special tokens, got {self.vocab_size}")

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["encoder"], d["decoder"] = self.encoder.to_dict(), self.decoder.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        return from_dict_strict(cls, d)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> "ModelConfig":
        return cls.from_dict(yaml.safe_load(text))


class Seq2Seq(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # Text input: a source embedding feeds the same encoder (subsampling is usually "none").
        self.frontend = (nn.Embedding(cfg.src_vocab_size, cfg.encoder.input_dim, padding_idx=PAD)
                         if cfg.input == "text" else None)
        self.encoder = make_encoder(cfg.encoder)
        self.decoder = make_decoder(cfg.decoder, cfg.vocab_size, cfg.encoder)
        self.ctc = nn.Linear(self.encoder.output_dim, cfg.vocab_size) if cfg.ctc_weight > 0 else None

    def num_parameters(self, trainable_only: bool = True) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def encode(self, src: Tensor, src_lens: Tensor) -> EncoderOutput:
        """src: features (B, T, F) float, or token ids (B, S) long for text; src_lens (B,)."""
        if self.frontend is not None:
            src = self.frontend(src)
        return self.encoder(src, src_lens)

    @staticmethod
    def decoder_io(tgt: Tensor, tgt_lens: Tensor) -> tuple[Tensor, Tensor]:
        """tgt (B, U) without sos/eos -> inputs `<sos> y` and outputs `y <eos>`, both (B, U+1), pad after."""
        b, u = tgt.shape
        real = torch.arange(u, device=tgt.device)[None, :] < tgt_lens[:, None]
        tgt = tgt.masked_fill(~real, PAD)  # whatever was beyond the length becomes pad
        tgt_in = torch.cat([tgt.new_full((b, 1), SOS), tgt], dim=1)
        tgt_out = torch.cat([tgt, tgt.new_full((b, 1), PAD)], dim=1)
        tgt_out.scatter_(1, tgt_lens[:, None].long(), EOS)
        return tgt_in, tgt_out

    def forward(self, src: Tensor, src_lens: Tensor, tgt: Tensor, tgt_lens: Tensor,
                teacher_forcing: float = 1.0) -> tuple[Tensor, Tensor]:
        """-> logits (B, U+1, V) for `y <eos>`, attention weights (B, U+1, T')."""
        enc = self.encode(src, src_lens)
        tgt_in, _ = self.decoder_io(tgt, tgt_lens)
        return self.decoder(enc, tgt_in, teacher_forcing)

    def loss(self, src: Tensor, src_lens: Tensor, tgt: Tensor, tgt_lens: Tensor,
             teacher_forcing: float = 1.0) -> dict[str, Tensor]:
        """Per-token losses: {loss, ce, ctc, ntokens}. ce is label-smoothed cross-entropy over
        `y <eos>` ignoring pad; ctc (0 when ctc_weight == 0) is summed over utterances and divided by
        the same token count, so the two terms share a scale. Everything stays a tensor (no sync)."""
        enc = self.encode(src, src_lens)
        tgt_in, tgt_out = self.decoder_io(tgt, tgt_lens)
        logits, _ = self.decoder(enc, tgt_in, teacher_forcing)
        ntokens = (tgt_out != PAD).sum()
        denom = ntokens.clamp(min=1).to(logits.dtype)
        ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), tgt_out.reshape(-1),
                             ignore_index=PAD, label_smoothing=self.cfg.label_smoothing, reduction="sum") / denom
        w = self.cfg.ctc_weight
        if self.ctc is not None:
            lp = torch.log_softmax(self.ctc(enc.states).float(), dim=-1).transpose(0, 1)  # (T', B, V)
            ctc = F.ctc_loss(lp, tgt, enc.lengths, tgt_lens, blank=CTC_BLANK, reduction="sum",
                             zero_infinity=True) / denom
        else:
            ctc = ce.new_zeros(())
        return {"loss": (1.0 - w) * ce + w * ctc, "ce": ce, "ctc": ctc, "ntokens": ntokens}

    # ---- decoding (see search.py; plain modules: the recognizer decodes through asr_s2s.accel) ---------
    def greedy(self, src: Tensor, src_lens: Tensor, **opts: Any) -> search.SearchResult:
        """Batched greedy decoding; opts as search.greedy_search."""
        return search.greedy_search(self, src, src_lens, **opts)

    def beam_search(self, src: Tensor, src_lens: Tensor, beam: int = 4, **opts: Any) -> search.SearchResult:
        """Batched beam search; opts as search.beam_search."""
        return search.beam_search(self, src, src_lens, beam=beam, **opts)
