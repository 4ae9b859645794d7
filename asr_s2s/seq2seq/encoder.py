"""Encoders: the interface every encoder serves (`Encoder`), and the recurrent encoder with time subsampling.

An encoder is picked by `EncoderConfig.type` from `seq2seq.model.ENCODERS` (name -> class); a new one is a
subclass of `Encoder` in its own file plus one entry there. Its contract: `Encoder(cfg)`, `output_dim`
(= `cfg.output_dim`, what the decoder and the CTC head are built for), `output_lengths(lengths)` exact without
running the network, and `forward(x (B, T, F), lengths (B,)) -> EncoderOutput` with states zero past each length
and a real frame's output independent of the padding. `final` feeds the decoder's bridge (`DecoderConfig.bridge`).

`RecurrentEncoder` (type "recurrent", the only one so far, and what every model file before the registry holds):

    feats (B, T, F) ──subsampling──▶ (B, T', D) ──RNN/LSTM/GRU (packed)──▶ states (B, T', H_out)
                                                                       └─▶ final (the context vector)

Padding never changes a real frame's output: padded frames are zeroed before every convolution /
stacking stage (so a real frame next to the padding sees exactly the zeros it would see if the
utterance were alone), and the recurrent layers compute what they would on packed sequences (CUDA: packed
sequences for cuDNN; CPU: `run_rnn_padded`, one fused oneDNN call per layer and direction).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..dataclass_dict import from_dict_strict

CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
SUBSAMPLING = ("conv", "stack", "none")


def make_rnn(cell: str, input_size: int, hidden: int, layers: int, *, bidirectional: bool = False,
             dropout: float = 0.0) -> nn.RNNBase:
    """A batch-first recurrent stack of the named cell type (dropout only between layers)."""
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; expected one of {sorted(CELLS)}")
    return CELLS[cell](input_size, hidden, num_layers=layers, batch_first=True,
                       bidirectional=bidirectional, dropout=dropout if layers > 1 else 0.0)


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """``F.dropout`` (inverted: kept values scaled by 1/(1-p)), with the CPU mask drawn by ``torch.rand``:
    torch's CPU ``bernoulli_`` draws one number at a time, 17 ms for a (51, 98, 512) mask against 7 ms for
    ``rand`` (2 threads), and the encoder's dropouts run on tensors that size every training batch."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return nn.functional.dropout(x, p, training=True)
    keep = torch.rand(x.shape, device=x.device) >= p  # fp32 uniforms also under autocast: P(keep) = 1 - p
    return x * keep.to(x.dtype).mul_(1.0 / (1.0 - p))


class Dropout(nn.Dropout):
    """nn.Dropout through `dropout` (same module name and state, faster mask on CPU)."""

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)


def lengths_mask(lengths: Tensor, max_len: int) -> Tensor:
    """(B,) lengths -> (B, max_len) bool, True on real positions."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


@dataclass
class EncoderConfig:
    """Encoder hyper-parameters. `hidden` is per direction: H_out = hidden * (2 if bidirectional else 1)."""

    type: str = "recurrent"  # which encoder (seq2seq.model.ENCODERS); model files without it mean "recurrent"
    cell: str = "lstm"  # rnn | lstm | gru
    input_dim: int = 80  # feature dim (audio) or source-embedding dim (text)
    hidden: int = 256
    layers: int = 3
    bidirectional: bool = True
    dropout: float = 0.1
    subsampling: str = "conv"  # conv | stack | none
    subsample_factor: int = 4
    conv_channels: int = 32

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"encoder cell must be one of {sorted(CELLS)}, got {self.cell!r}")
        if self.subsampling not in SUBSAMPLING:
            raise ValueError(f"subsampling must be one of {SUBSAMPLING}, got {self.subsampling!r}")
        f = self.subsample_factor
        if f < 1 or (self.subsampling == "conv" and f & (f - 1)):
            raise ValueError(f"subsample_factor must be >= 1 (a power of 2 for conv), got {f}")

    @property
    def output_dim(self) -> int:
        return self.hidden * (2 if self.bidirectional else 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EncoderConfig":
        return from_dict_strict(cls, d)


class EncoderOutput(NamedTuple):
    """states (B, T', H_out) zero beyond `lengths`; lengths (B,) long;
    final: the last real step's hidden state, (layers*dirs, B, hidden) — a (h, c) pair for LSTM.
    Layout as in torch.nn.LSTM: index layer*dirs + direction; the backward direction's "last"
    step is frame 0, which has seen the whole utterance."""

    states: Tensor
    lengths: Tensor
    final: Tensor | tuple[Tensor, Tensor]


class Conv2dSubsampling(nn.Module):
    """ESPnet-style Conv2d subsampling: log2(factor) x [Conv2d(3x3, stride 2, pad 1) + ReLU], then a
    linear layer to `out_dim`. With padding 1 every stage maps a length L to ceil(L/2) exactly, and
    no input is ever too short (L >= 1 -> L' >= 1)."""

    def __init__(self, in_dim: int, out_dim: int, factor: int, channels: int) -> None:
        super().__init__()
        self.stages = int(math.log2(factor))
        convs, c_in, f = [], 1, in_dim
        for _ in range(self.stages):
            convs.append(nn.Conv2d(c_in, channels, kernel_size=3, stride=2, padding=1))
            c_in, f = channels, (f + 1) // 2
        self.convs = nn.ModuleList(convs)
        self.out = nn.Linear(c_in * f, out_dim)
        self.out_channels, self.out_freqs = c_in, f

    def output_lengths(self, lengths: Tensor) -> Tensor:
        for _ in range(self.stages):
            lengths = (lengths + 1) // 2  # ceil(L / 2)
        return lengths

    def forward(self, x: Tensor, lengths: Tensor, out_weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x (B, T, F), lengths (B,) -> (B, T', out_dim), (B,). out_weight: `permuted_out_weight()`, where the
        caller keeps it between calls (inference: accel.encoder); formed here otherwise."""
        # Channels-last (NHWC) activations and weights: oneDNN's convolutions run ~1.8x faster forward and
        # backward than on NCHW here (measured on AN4 batches, (68, 1, 291, 80) -> (68, 32, 73, 20)). The input
        # gets channels-last strides explicitly: with one channel, .contiguous(channels_last) keeps NCHW strides,
        # so the first conv would run NCHW and its output be re-laid out for the second (explicit strides take
        # subsampling forward+backward on a (40, 1, 290, 80) batch from 98.5 to 81.7 ms, one-off timings).
        h = x.unsqueeze(3).permute(0, 3, 1, 2)  # (B, 1, T, F), strides (T*F, 1, F, 1)
        # Padding must not reach a real output (nor its gradient). Without padding there is nothing to do, which
        # is known without a device sync on CPU. With padding, each stage's input is masked, as ReLU(bias) makes
        # padded frames non-zero again. Without autograd, the stages after the first zero only the one padded
        # frame that real outputs read (_zero_frame_past_end), in place; under autograd that in-place write's
        # gradient costs two passes over the stage, more than the mask's one.
        padded = lengths.device.type != "cpu" or int(lengths.min()) < x.size(1)
        one_frame = not torch.is_grad_enabled()
        for i, conv in enumerate(self.convs):
            if padded and (i == 0 or not one_frame):
                h = h * lengths_mask(lengths, h.size(2))[:, None, :, None].to(h.dtype)
            h = nn.functional.conv2d(h, _channels_last(conv.weight), conv.bias, conv.stride, conv.padding)
            lengths = (lengths + 1) // 2
            if padded and one_frame and i + 1 < len(self.convs):
                _zero_frame_past_end(h, lengths)
            h = h.relu_()  # in place: the conv's backward does not need its output, and a fresh stage-sized
            # tensor costs page faults (with the one-frame zeroing: padded batch of 16 in bf16, 12.9 -> 4.3 ms)
        b, c, t, f = h.shape
        # The linear reads (B, T, F, C), the channels-last memory order (a free view), with its weight's columns
        # permuted to match: same function as self.out on (B, T, C*F), but the gradient reaching the convs
        # stays channels-last (the (C, F) order made relu's backward and the conv's run on mixed layouts plus a
        # layout copy: -2.6% training time of the reference model, A/B in one process).
        if out_weight is None:
            out_weight = self.permuted_out_weight()
        return nn.functional.linear(h.permute(0, 2, 3, 1).reshape(b, t, f * c), out_weight, self.out.bias), lengths

    def permuted_out_weight(self) -> Tensor:
        """self.out's weight (D, C*F) with its columns in (F, C) order: (D, F*C)."""
        c, f = self.out_channels, self.out_freqs
        return self.out.weight.view(-1, c, f).transpose(1, 2).reshape(-1, f * c)


def _zero_frame_past_end(h: Tensor, lengths: Tensor) -> None:
    """Zero frame lengths[b] of each row b of a stage's output h (B, C, T, F) (conv output, before the ReLU),
    where the row is shorter than T: in place, no device sync.

    Why that one frame is enough: the next stage (3x3, stride 2, padding 1) computes output t from input
    frames 2t-1 .. 2t+1, and its real outputs (t < ceil(L/2)) read frames up to 2 ceil(L/2) - 1 <= L. So frame
    L, where an utterance alone would see the conv's zero padding, is the only padded frame a real output
    reads; frames past it feed only padded outputs. Masking the whole stage instead costs a pass over its
    largest tensor."""
    rows = torch.arange(h.size(0), device=h.device)
    end = lengths.clamp(max=h.size(2) - 1)  # rows without padding rewrite their last frame unchanged (x 1)
    h[rows, :, end] *= (lengths >= h.size(2)).to(h.dtype)[:, None, None]


def _channels_last(w: Tensor) -> Tensor:
    """A conv weight (O, I, kH, kW) with channels-last strides, also for I = 1 (see Conv2dSubsampling.forward)."""
    return w.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)


class FrameStacking(nn.Module):
    """Stack `factor` consecutive frames into one (B, T, F) -> (B, ceil(T/factor), factor*F).
    The same as pyramidal stacking of 2 frames log2(factor) times, done in one reshape."""

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = factor

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return (lengths + self.factor - 1) // self.factor

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        b, t, f = x.shape
        k = self.factor
        x = x * lengths_mask(lengths, t)[:, :, None].to(x.dtype)  # the last partial group sees zeros
        pad = (-t) % k
        if pad:
            x = torch.cat([x, x.new_zeros(b, pad, f)], dim=1)
        return x.reshape(b, (t + pad) // k, k * f), self.output_lengths(lengths)


class Encoder(nn.Module):
    """What every encoder offers (see the module doc); subclasses define `forward` and, where they change the
    length, `output_lengths`."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg

    @property
    def output_dim(self) -> int:
        """H_out, the size of each output state."""
        return self.cfg.output_dim

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Exact output lengths (B,) for input lengths (B,), without running the network."""
        return lengths

    def forward(self, x: Tensor, lengths: Tensor) -> EncoderOutput:
        """x (B, T, F) float, lengths (B,) long (each >= 1) -> EncoderOutput (states (B, T', H_out))."""
        raise NotImplementedError


class RecurrentEncoder(Encoder):
    """Subsampling + a (bi)directional recurrent stack; padding never changes a real frame's output."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__(cfg)
        if cfg.subsampling == "conv" and cfg.subsample_factor > 1:
            self.subsample: nn.Module | None = Conv2dSubsampling(cfg.input_dim, cfg.hidden, cfg.subsample_factor,
                                                                 cfg.conv_channels)
            rnn_in = cfg.hidden
        elif cfg.subsampling == "stack" and cfg.subsample_factor > 1:
            self.subsample = FrameStacking(cfg.subsample_factor)
            rnn_in = cfg.input_dim * cfg.subsample_factor
        else:
            self.subsample, rnn_in = None, cfg.input_dim
        self.dropout = Dropout(cfg.dropout)
        self.rnn = make_rnn(cfg.cell, rnn_in, cfg.hidden, cfg.layers, bidirectional=cfg.bidirectional,
                            dropout=cfg.dropout)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Exact encoder output lengths for input lengths (B,), without running the network."""
        if self.subsample is None:
            return lengths
        return self.subsample.output_lengths(lengths)

    def forward(self, x: Tensor, lengths: Tensor) -> EncoderOutput:
        """x (B, T, F) float, lengths (B,) long (each >= 1) -> EncoderOutput."""
        x, lengths = self.subsampled(x, lengths)
        states, final = self.recurrent(x, lengths)
        return EncoderOutput(self.dropout(states), lengths, final)

    def subsampled(self, x: Tensor, lengths: Tensor, **subsample_args: Tensor) -> tuple[Tensor, Tensor]:
        """The recurrent stack's input: x (B, T, F) -> (B, T', D) subsampled, dropout applied; lengths -> (B,)."""
        if self.subsample is not None:
            x, lengths = self.subsample(x, lengths, **subsample_args)
        return self.dropout(x), lengths

    def recurrent(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor | tuple[Tensor, Tensor]]:
        """The recurrent stack over a padded batch: x (B, T', D) -> states (B, T', H_out) zero past each length
        (before the output dropout), final (see EncoderOutput)."""
        if x.device.type == "cpu":
            return run_rnn_padded(self.rnn, x, lengths)
        # pack_padded_sequence wants lengths on the CPU: one small copy per batch.
        seqs = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, final = self.rnn(seqs)
        states, _ = pad_packed_sequence(out, batch_first=True, total_length=x.size(1))
        return states, final


# Added to the pre-activations of the gates that hold the state on padded frames (see run_rnn_padded):
# the sigmoids saturate exactly (1 or 0 in fp32 and bf16), so the state passes through unchanged.
_FREEZE = 1.0e4


def freeze_params(params: list[Tensor], hidden: int, is_lstm: bool) -> list[Tensor]:
    """Weights for an input with one extra column, 1.0 on padded frames: weight_ih gets a column that
    saturates the LSTM's forget gate to 1 and its input gate to 0 (c is held), or the GRU's update gate
    to 1 (h is held); torch's gate order is i, f, g, o (LSTM) and r, z, n (GRU)."""
    w_ih = params[0]
    col = w_ih.new_zeros(w_ih.size(0), 1)
    if is_lstm:
        col[:hidden] = -_FREEZE
    col[hidden:2 * hidden] = _FREEZE
    return [torch.cat([w_ih, col], dim=1), *params[1:]]


def run_rnn_padded(rnn: nn.RNNBase, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor | tuple[Tensor, Tensor]]:
    """What ``rnn(pack_padded_sequence(x, lengths))`` + ``pad_packed_sequence`` compute, without packed
    sequences: on CPU the packed path runs step by step through autograd (its backward re-zeroes the whole
    packed input at every step: quadratic in T), while unpacked calls use oneDNN's fused kernels.

    Each layer and direction is one fused call over the whole padded batch (not one per distinct length:
    oneDNN reorders the weights on every call, ~0.8 ms for a 512->256 LSTM layer, measured). For LSTM and
    GRU the input gets one more column, 1.0 on padded frames, whose weights saturate the gates that hold
    the state (LSTM: forget 1, input 0, so c is held; GRU: update 1, so h is held); the derivatives of
    saturated gates are 0, so no gradient flows through padded steps either. Then:

    - forward direction: the padding comes after each row's last real frame, so real outputs never see
      it; the final c (LSTM) or h (GRU) leaves the padding as it entered; an LSTM's final h (which the
      padding does change) is its output at the last real frame;
    - backward direction: the batch is flipped in time, so the padding comes first; a zero state held
      through it is still zero (LSTM: h = o * tanh(0) = 0) when the row's real frames start, and the
      final state is the call's own.

    A plain RNN has no gate to hold: its backward direction runs on each row reversed within its length
    (a gather), its finals are read from the outputs.

    (In inference, accel.encoder runs LSTM layers on weights prepared once, with the same hold column.)
    -> states (B, T, dirs*H) zero past each length, final ((layers*dirs, B, H), or an (h, c) pair for LSTM)."""
    b, t, _ = x.shape
    padded = not bool((lengths == t).all())
    if not padded:  # the module's own fused multi-layer call is exact
        return rnn(x)
    is_lstm, is_gru = isinstance(rnn, nn.LSTM), isinstance(rnn, nn.GRU)
    hold = is_lstm or is_gru
    dirs = 2 if rnn.bidirectional else 1
    if is_lstm:
        fn = torch.lstm
    elif is_gru:
        fn = torch.gru
    else:
        fn = torch.rnn_tanh if rnn.nonlinearity == "tanh" else torch.rnn_relu
    mask = lengths_mask(lengths, t)
    last = (lengths - 1).clamp(min=0)[:, None, None]  # (B,1,1): each row's last real step
    if hold:  # the hold column
        pad_col = (~mask)[:, :, None].to(x.dtype)
        pad_cols = (pad_col, pad_col.flip(1))
    else:
        steps = torch.arange(t, device=x.device)[None, :]
        rev = torch.where(mask, lengths[:, None] - 1 - steps, steps)[:, :, None]  # reverse within length
    train = torch.is_grad_enabled()  # oneDNN keeps its workspace for backward only in "train" mode
    inp, hs, cs = x, [], []
    for layer in range(rnn.num_layers):
        outs = []
        for d in range(dirs):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            params = [getattr(rnn, f"weight_ih{sfx}"), getattr(rnn, f"weight_hh{sfx}")]
            if rnn.bias:
                params += [getattr(rnn, f"bias_ih{sfx}"), getattr(rnn, f"bias_hh{sfx}")]
            if d == 0:
                xi = inp
            else:
                xi = inp.flip(1) if hold else inp.gather(1, rev.expand(-1, -1, inp.size(2)))
            h0 = xi.new_zeros(1, b, rnn.hidden_size)
            if hold:
                xi = torch.cat([xi, pad_cols[d]], dim=2)
                params = freeze_params(params, rnn.hidden_size, is_lstm)
            if is_lstm:
                out, h_n, c_n = fn(xi, (h0, h0), params, rnn.bias, 1, 0.0, train, False, True)
                cs.append(c_n)
            else:
                out, h_n = fn(xi, h0, params, rnn.bias, 1, 0.0, train, False, True)
            if (is_lstm and d == 0) or not hold:  # the call's final h is not the last real frame's
                h_n = out.gather(1, last.expand(-1, -1, out.size(2))).transpose(0, 1)
            hs.append(h_n)
            if d == 1:
                out = out.flip(1) if hold else out.gather(1, rev.expand(-1, -1, out.size(2)))
            outs.append(out)
        inp = torch.cat(outs, dim=-1) if dirs == 2 else outs[0]
        if layer < rnn.num_layers - 1 and rnn.dropout and rnn.training:
            inp = dropout(inp, rnn.dropout)
    states = inp * mask[:, :, None].to(inp.dtype)
    h = torch.cat(hs, dim=0)
    return states, ((h, torch.cat(cs, dim=0)) if is_lstm else h)

