"""Recurrent encoder with time subsampling.

    feats (B, T, F) ──subsampling──▶ (B, T', D) ──RNN/LSTM/GRU (packed)──▶ states (B, T', H_out)
                                                                       └─▶ final (the context vector)

Padding never changes a real frame's output: padded frames are zeroed before every convolution /
stacking stage (so a real frame next to the padding sees exactly the zeros it would see if the
utterance were alone), and the recurrent layers run on packed sequences.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
SUBSAMPLING = ("conv", "stack", "none")


def make_rnn(cell: str, input_size: int, hidden: int, layers: int, *, bidirectional: bool = False,
             dropout: float = 0.0) -> nn.RNNBase:
    """A batch-first recurrent stack of the named cell type (dropout only between layers)."""
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; expected one of {sorted(CELLS)}")
    return CELLS[cell](input_size, hidden, num_layers=layers, batch_first=True,
                       bidirectional=bidirectional, dropout=dropout if layers > 1 else 0.0)


def lengths_mask(lengths: Tensor, max_len: int) -> Tensor:
    """(B,) lengths -> (B, max_len) bool, True on real positions."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


@dataclass
class EncoderConfig:
    """Encoder hyper-parameters. `hidden` is per direction: H_out = hidden * (2 if bidirectional else 1)."""

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
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown EncoderConfig keys: {sorted(unknown)}")
        return cls(**d)


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

    def output_lengths(self, lengths: Tensor) -> Tensor:
        for _ in range(self.stages):
            lengths = (lengths + 1) // 2  # ceil(L / 2)
        return lengths

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, T, F), lengths (B,) -> (B, T', out_dim), (B,)."""
        h = x.unsqueeze(1)  # (B, 1, T, F)
        for conv in self.convs:
            # Zero the padding first: ReLU(bias) makes padded frames non-zero after each stage.
            h = h * lengths_mask(lengths, h.size(2))[:, None, :, None].to(h.dtype)
            h = torch.relu(conv(h))
            lengths = (lengths + 1) // 2
        b, c, t, f = h.shape
        return self.out(h.transpose(1, 2).reshape(b, t, c * f)), lengths


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
    """Subsampling + a (bi)directional recurrent stack over packed sequences."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.subsampling == "conv" and cfg.subsample_factor > 1:
            self.subsample: nn.Module | None = Conv2dSubsampling(cfg.input_dim, cfg.hidden, cfg.subsample_factor,
                                                                 cfg.conv_channels)
            rnn_in = cfg.hidden
        elif cfg.subsampling == "stack" and cfg.subsample_factor > 1:
            self.subsample = FrameStacking(cfg.subsample_factor)
            rnn_in = cfg.input_dim * cfg.subsample_factor
        else:
            self.subsample, rnn_in = None, cfg.input_dim
        self.dropout = nn.Dropout(cfg.dropout)
        self.rnn = make_rnn(cfg.cell, rnn_in, cfg.hidden, cfg.layers, bidirectional=cfg.bidirectional,
                            dropout=cfg.dropout)

    @property
    def output_dim(self) -> int:
        return self.cfg.output_dim

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Exact encoder output lengths for input lengths (B,), without running the network."""
        if self.subsample is None:
            return lengths
        return self.subsample.output_lengths(lengths)

    def forward(self, x: Tensor, lengths: Tensor) -> EncoderOutput:
        """x (B, T, F) float, lengths (B,) long (each >= 1) -> EncoderOutput."""
        if self.subsample is not None:
            x, lengths = self.subsample(x, lengths)
        x = self.dropout(x)
        if x.device.type == "cpu":
            states, final = run_rnn_segmented(self.rnn, x, lengths)
            return EncoderOutput(self.dropout(states), lengths, final)
        # pack_padded_sequence wants lengths on the CPU: one small copy per batch.
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, final = self.rnn(packed)
        states, _ = pad_packed_sequence(out, batch_first=True, total_length=x.size(1))
        return EncoderOutput(self.dropout(states), lengths, final)


def _reverse_index(lengths: list[int], t: int, device: torch.device) -> Tensor:
    """(B, T) time index reversing each row within its length (padding positions map to themselves)."""
    steps = torch.arange(t, device=device)[None, :]
    lens = torch.tensor(lengths, device=device)[:, None]
    return torch.where(steps < lens, lens - 1 - steps, steps)


def _run_direction(fn, params: list[Tensor], x: Tensor, lengths: list[int], hidden: int, is_lstm: bool
                   ) -> tuple[Tensor, Tensor, Tensor | None]:
    """One unidirectional layer over rows sorted by length (descending), time-major work done in
    fused calls: one call per distinct length, each over the rows still running. Returns outputs
    (B, T, H) zero past each length, and the final h (and c) at each row's last real step (1, B, H)."""
    b, t, _ = x.shape
    bounds = sorted(set(lengths))
    h = x.new_zeros(1, b, hidden)
    c = x.new_zeros(1, b, hidden) if is_lstm else None
    outs, fin_h, fin_c = [], [], []
    train = torch.is_grad_enabled()  # oneDNN keeps its workspace for backward only in "train" mode
    start = 0
    for end in bounds:
        n = sum(1 for ln in lengths if ln >= end)  # rows still running (a prefix: sorted descending)
        n_next = sum(1 for ln in lengths if ln > end)
        seg = x[:n, start:end]
        if is_lstm:
            out, h, c = fn(seg, (h[:, :n], c[:, :n]), params, len(params) == 4, 1, 0.0, train, False, True)
        else:
            out, h = fn(seg, h[:, :n], params, len(params) == 4, 1, 0.0, train, False, True)
        outs.append(out if n == b else torch.nn.functional.pad(out, (0, 0, 0, 0, 0, b - n)))
        fin_h.append(h[:, n_next:n])
        if is_lstm:
            fin_c.append(c[:, n_next:n])
        start = end
    out = torch.cat(outs, dim=1) if len(outs) > 1 else outs[0]
    if out.size(1) < t:
        out = torch.nn.functional.pad(out, (0, 0, 0, t - out.size(1)))
    # Rows ending at the last bound are first (longest), so the finals go in reverse bound order.
    h_n = torch.cat(fin_h[::-1], dim=1)
    c_n = torch.cat(fin_c[::-1], dim=1) if is_lstm else None
    return out, h_n, c_n


def run_rnn_segmented(rnn: nn.RNNBase, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor | tuple[Tensor, Tensor]]:
    """What ``rnn(pack_padded_sequence(x, lengths))`` + ``pad_packed_sequence`` compute, without packed
    sequences: on CPU the packed path runs step by step through autograd (its backward re-zeroes the whole
    packed input at every step: quadratic in T), while unpacked calls use oneDNN's fused LSTM.

    Rows are sorted by length; each layer and direction runs one fused call per distinct length in the
    batch (one call when all lengths are equal, few with length bucketing), each over the rows still
    running, carrying the state. The backward direction runs on each row reversed within its length.
    Real frames, final states and zeroed padding are exactly as with packing.
    -> states (B, T, dirs*H), final ((layers*dirs, B, H), or an (h, c) pair for LSTM)."""
    b, t, _ = x.shape
    lens_cpu = lengths.cpu()
    is_lstm = isinstance(rnn, nn.LSTM)
    dirs = 2 if rnn.bidirectional else 1
    if bool((lens_cpu == t).all()):  # no padding: the module's own fused multi-layer call is exact
        out, final = rnn(x)
        return out, final
    if isinstance(rnn, nn.LSTM):
        fn = torch.lstm
    elif isinstance(rnn, nn.GRU):
        fn = torch.gru
    else:
        fn = torch.rnn_tanh if rnn.nonlinearity == "tanh" else torch.rnn_relu
    order = torch.argsort(lens_cpu, descending=True, stable=True)
    sorted_lens = lens_cpu[order].tolist()
    identity = order.tolist() == list(range(b))
    order_dev = order.to(x.device)
    inp = x if identity else x.index_select(0, order_dev)
    rev = _reverse_index(sorted_lens, t, x.device)[:, :, None] if dirs == 2 else None
    hs, cs = [], []
    for layer in range(rnn.num_layers):
        outs = []
        for d in range(dirs):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            params = [getattr(rnn, f"weight_ih{sfx}"), getattr(rnn, f"weight_hh{sfx}")]
            if rnn.bias:
                params += [getattr(rnn, f"bias_ih{sfx}"), getattr(rnn, f"bias_hh{sfx}")]
            xi = inp if d == 0 else inp.gather(1, rev.expand(-1, -1, inp.size(2)))
            o, h_n, c_n = _run_direction(fn, params, xi, sorted_lens, rnn.hidden_size, is_lstm)
            outs.append(o if d == 0 else o.gather(1, rev.expand(-1, -1, o.size(2))))
            hs.append(h_n)
            cs.append(c_n)
        inp = torch.cat(outs, dim=-1) if dirs == 2 else outs[0]
        if layer < rnn.num_layers - 1 and rnn.dropout and rnn.training:
            inp = torch.nn.functional.dropout(inp, rnn.dropout, training=True)
    h = torch.cat(hs, dim=0)
    c = torch.cat(cs, dim=0) if is_lstm else None
    if not identity:
        inv = torch.empty_like(order)
        inv[order] = torch.arange(b)
        inv = inv.to(x.device)
        inp, h = inp.index_select(0, inv), h.index_select(1, inv)
        c = c.index_select(1, inv) if is_lstm else None
    return inp, ((h, c) if is_lstm else h)
