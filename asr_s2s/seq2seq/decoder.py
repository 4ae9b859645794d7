"""Autoregressive decoder: token embedding -> recurrent cell(s) -> attention -> output projection.

Two layouts, two classes on one base (`Decoder`: init_state / step / forward), picked by the attention
(`make_decoder`, DECODERS; see attention.py):

`LuongDecoder` (attention none / dot / additive) — the RNN does not read the previous context::

    s_t   = RNN(emb(y_{t-1}), s_{t-1})
    c_t   = Att(s_t, memory)                       (skipped for `none`)
    o_t   = tanh(W_o [s_t; c_t])                   (o_t = s_t for `none`)
    p_t   = softmax(W_v dropout(o_t))

  Under full teacher forcing the RNN therefore runs over the whole target in one fused (cuDNN / MKL)
  call and the attention for every step is one batched matmul.

`InputFeedingDecoder` (Bahdanau/Chorowski: attention location; the ESPnet layout) — the query is the previous
state and the alignment, and the context is fed into the RNN::

    c_t, a_t = Att(s_{t-1}, a_{t-1}, memory)
    s_t      = RNN([emb(y_{t-1}); c_t], s_{t-1})
    o_t      = tanh(W_o [s_t; c_t]);   p_t = softmax(W_v dropout(o_t))

  This needs the per-step loop; the loop does no .item() and no host syncs.

The initial state comes from the encoder's final state through a bridge: the last encoder layer's
final h (both directions, and c for an LSTM encoder) is concatenated and mapped by linear+tanh to
h_0 of every decoder layer (and by a linear map to c_0 for an LSTM decoder: the cell state is not
tanh-bounded). With attention `none` this bridge is the only path from the input: the classic
context-vector encoder-decoder.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .attention import ATTENTION_LAYOUTS, ATTENTIONS, AttentionMemory, make_attention
from .encoder import CELLS, Dropout, EncoderConfig, EncoderOutput, make_rnn
from ..dataclass_dict import from_dict_strict


@dataclass
class DecoderConfig:
    cell: str = "lstm"  # rnn | lstm | gru
    embed_dim: int = 128
    hidden: int = 256
    layers: int = 1
    attention: str = "location"  # none | dot | additive | location
    attention_dim: int = 256  # additive / location energy size
    location_channels: int = 10
    location_kernel: int = 31  # odd
    dropout: float = 0.1
    bridge: bool = True  # initial state from the encoder's final state (False: zeros)

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"decoder cell must be one of {sorted(CELLS)}, got {self.cell!r}")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {self.attention!r}")
        if self.attention == "none" and not self.bridge:
            raise ValueError("attention 'none' needs bridge=True: otherwise the decoder never sees the input")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DecoderConfig":
        return from_dict_strict(cls, d)


class DecoderState(NamedTuple):
    """Per-hypothesis decoder state. h, c: (layers, N, hidden) (c only for LSTM);
    att: attention state with batch first ((N, 2, T) for location) or None."""

    h: Tensor
    c: Tensor | None
    att: Tensor | None

    def index_select(self, idx: Tensor) -> "DecoderState":
        """Reorder / expand hypotheses: row i of the result is row idx[i] of this state."""
        return DecoderState(self.h.index_select(1, idx), None if self.c is None else self.c.index_select(1, idx),
                            None if self.att is None else self.att.index_select(0, idx))


class _StepProducts:
    """Per-step products ``a_t @ W`` (mm: a_t (N,K), W (K,M)) or ``a_t @ V`` batched over rows (bmv: a_t (B,T),
    V (B,T,H)) inside a training loop, whose gradient w.r.t. the shared operand is formed once after the
    loop -- one large product over all steps -- instead of a small product plus a full-size accumulation
    per step. ``shared = rec.track(W)`` before the loop; ``rec(a_t, shared)`` per step."""

    def __init__(self, kind: str) -> None:
        self.kind, self.a, self.g = kind, [], []

    def track(self, t: Tensor) -> Tensor:
        return _DeferredGrad.apply(t, self)

    def __call__(self, a: Tensor, shared: Tensor) -> Tensor:
        return _StepProduct.apply(a, shared, self)

    def grad(self) -> Tensor:
        # Under autocast the step products (and their gradients) may be bf16/fp16: one dtype for the product.
        g = [a.new_zeros(a.size(0), self.out_dim) if gi is None else gi.to(a.dtype) for a, gi in zip(self.a, self.g)]
        if self.kind == "mm":
            return torch.cat(self.a).t() @ torch.cat(g)
        return torch.bmm(torch.stack(self.a, dim=2), torch.stack(g, dim=1))  # (B,T,U) @ (B,U,H)


class _DeferredGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t: Tensor, rec: _StepProducts) -> Tensor:
        ctx.rec = rec
        return t.view_as(t)

    @staticmethod
    def backward(ctx, grad: Tensor):  # runs after every step's backward (they all consume the output)
        return grad + ctx.rec.grad(), None


class _StepProduct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: Tensor, shared: Tensor, rec: _StepProducts) -> Tensor:
        ctx.rec, ctx.i = rec, len(rec.a)
        rec.a.append(a.detach())
        rec.g.append(None)
        ctx.save_for_backward(shared)
        rec.out_dim = shared.size(-1)
        return a @ shared if rec.kind == "mm" else torch.bmm(a[:, None, :], shared)[:, 0]

    @staticmethod
    def backward(ctx, grad: Tensor):
        (shared,) = ctx.saved_tensors
        shared = shared.to(grad.dtype)  # autocast's forward product may have run in bf16/fp16
        ctx.rec.g[ctx.i] = grad
        if ctx.rec.kind == "mm":
            return grad @ shared.t(), None, None
        # (B,1,H) @ (B,H,T) on the transposed view: 12x faster than (B,T,H) @ (B,H,1) on CPU (0.12 vs 1.5 ms
        # for B=51, T=98, H=512), which oneDNN runs as B skinny matrix-vector products.
        return torch.bmm(grad[:, None, :], shared.transpose(1, 2))[:, 0], None, None


def _lstm_pointwise(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """The LSTM cell after its matmuls: gates (N, 4H) in torch's i, f, g, o order -> h, c."""
    i, f, g, o = gates.chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


class Decoder(nn.Module):
    """What both layouts share: embedding, attention, recurrent cell(s), output layer, the bridge, `init_state`,
    `step` and the teacher-forced / scheduled-sampling step loop. A layout defines `_step` (see the module doc);
    `make_decoder` picks the layout the attention asks for (DECODERS)."""

    layout = ""  # the attention layout a subclass serves ("luong" or "bahdanau"; see attention.ATTENTION_LAYOUTS)
    input_feeding = False  # whether the context feeds the RNN (the Bahdanau/Chorowski layout)
    can_parallel = False  # whether teacher forcing can run all steps at once (`_parallel`)

    def __init__(self, cfg: DecoderConfig, vocab_size: int, enc: EncoderConfig) -> None:
        super().__init__()
        self.cfg, self.vocab_size = cfg, vocab_size
        self.embed = nn.Embedding(vocab_size, cfg.embed_dim, padding_idx=0)
        self.attention = make_attention(cfg.attention, cfg.hidden, enc.output_dim, cfg.attention_dim,
                                        location_channels=cfg.location_channels,
                                        location_kernel=cfg.location_kernel)
        if self.attention.layout != self.layout:
            raise ValueError(f"attention {cfg.attention!r} needs the {self.attention.layout} layout, not {self.layout}")
        ctx = self.attention.context_dim
        self.rnn = make_rnn(cfg.cell, cfg.embed_dim + (ctx if self.input_feeding else 0), cfg.hidden, cfg.layers,
                            dropout=cfg.dropout)
        self.combine = nn.Linear(cfg.hidden + ctx, cfg.hidden) if ctx else None
        self.dropout = Dropout(cfg.dropout)
        self.output = nn.Linear(cfg.hidden, vocab_size)
        self.is_lstm = cfg.cell == "lstm"
        if cfg.bridge:
            dirs = 2 if enc.bidirectional else 1
            bridge_in = dirs * enc.hidden * (2 if enc.cell == "lstm" else 1)
            self.bridge_h = nn.Linear(bridge_in, cfg.layers * cfg.hidden)
            self.bridge_c = nn.Linear(bridge_in, cfg.layers * cfg.hidden) if self.is_lstm else None
        self._enc_layers, self._enc_dirs = enc.layers, 2 if enc.bidirectional else 1

    # ---- setup -------------------------------------------------------------------------------
    def prepare(self, enc: EncoderOutput) -> AttentionMemory:
        """Once per utterance batch: masks and precomputed attention keys."""
        return self.attention.prepare(enc.states, enc.lengths)

    def init_state(self, enc: EncoderOutput, mem: AttentionMemory) -> DecoderState:
        """The bridge: encoder final state -> decoder initial state (layers, B, hidden)."""
        b, layers, hid = enc.states.size(0), self.cfg.layers, self.cfg.hidden
        if self.cfg.bridge:
            finals = enc.final if isinstance(enc.final, tuple) else (enc.final,)
            # last encoder layer, both directions: (layers*dirs, B, H) -> (B, dirs*H); then h (and c)
            parts = [f.view(self._enc_layers, self._enc_dirs, b, -1)[-1].transpose(0, 1).reshape(b, -1)
                     for f in finals]
            x = torch.cat(parts, dim=-1)
            h = torch.tanh(self.bridge_h(x)).view(b, layers, hid).transpose(0, 1).contiguous()
            c = (self.bridge_c(x).view(b, layers, hid).transpose(0, 1).contiguous()
                 if self.bridge_c is not None else None)
        else:
            h = enc.states.new_zeros(layers, b, hid)
            c = torch.zeros_like(h) if self.is_lstm else None
        return DecoderState(h, c, self.attention.init_state(mem))

    # ---- one step ----------------------------------------------------------------------------
    def _rnn(self, x: Tensor, state: DecoderState) -> tuple[Tensor, Tensor, Tensor | None]:
        """x (N, U, In) -> outputs (N, U, hidden), h, c."""
        if self.is_lstm:
            out, (h, c) = self.rnn(x, (state.h, state.c))
            return out, h, c
        out, h = self.rnn(x, state.h)
        return out, h, None

    def _features(self, s: Tensor, ctx: Tensor) -> Tensor:
        """Pre-projection output o = tanh(W [s; c]) (or s without attention), dropout applied."""
        if self.combine is not None:
            s = torch.tanh(self.combine(torch.cat([s, ctx], dim=-1)))
        return self.dropout(s)

    def _step(self, emb: Tensor, state: DecoderState, mem: AttentionMemory
              ) -> tuple[Tensor, DecoderState, Tensor]:
        """emb (N, E) -> features (N, hidden), new state, attention weights (N, T)."""
        raise NotImplementedError

    def step(self, tokens: Tensor, state: DecoderState, mem: AttentionMemory
             ) -> tuple[Tensor, DecoderState, Tensor]:
        """One step for a batch of hypotheses: tokens (N,) long (the previous output) ->
        logits (N, V), new state, attention weights (N, T). (Search runs this through seq2seq.inference, or
        accel's faster equivalent.)"""
        feats, state, w = self._step(self.dropout(self.embed(tokens)), state, mem)
        return self.output(feats), state, w

    @property
    def fused_cell(self) -> bool:
        """Whether the cell runs as explicit matmuls (InputFeedingDecoder); a search may then step it on
        prepared weights (asr_s2s.accel)."""
        return False

    # ---- training forward --------------------------------------------------------------------
    def forward(self, enc: EncoderOutput, tgt_in: Tensor, teacher_forcing: float = 1.0,
                parallel: bool | None = None) -> tuple[Tensor, Tensor]:
        """enc: encoder output; tgt_in (B, U) long: `<sos> y_1 .. y_{U-1}` padded.

        teacher_forcing: probability of feeding the reference token (per utterance and step); below
        1.0 the model's own previous argmax is fed otherwise (scheduled sampling). The trainer may
        change it every call. parallel: force (True) or forbid (False) the one-call path; None picks
        it when possible (full teacher forcing and a Luong-layout attention).
        Returns logits (B, U, V) and attention weights (B, U, T)."""
        mem = self.prepare(enc)
        state = self.init_state(enc, mem)
        possible = teacher_forcing >= 1.0 and self.can_parallel
        if parallel is None:
            parallel = possible
        elif parallel and not possible:
            raise ValueError("the parallel path needs teacher_forcing=1 and a Luong-layout attention")
        if parallel:
            return self._parallel(tgt_in, state, mem)
        return self._loop(tgt_in, state, mem, teacher_forcing)

    def _parallel(self, tgt_in: Tensor, state: DecoderState, mem: AttentionMemory) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _loop(self, tgt_in: Tensor, state: DecoderState, mem: AttentionMemory, teacher_forcing: float
              ) -> tuple[Tensor, Tensor]:
        """The step loop over tgt_in (B, U): teacher-forced, or scheduled sampling below 1.0."""
        b, u = tgt_in.shape
        feats, weights, logits = [], [], []
        if teacher_forcing >= 1.0:
            emb_all = self.dropout(self.embed(tgt_in))  # embed once; no per-step embedding calls
            for t in range(u):
                f, state, w = self._step(emb_all[:, t], state, mem)
                feats.append(f)
                weights.append(w)
            return self.output(torch.stack(feats, dim=1)), torch.stack(weights, dim=1)
        # Scheduled sampling: coin flips and argmax stay on the device (no host syncs).
        use_ref = torch.rand(b, u, device=tgt_in.device) < teacher_forcing
        prev = tgt_in[:, 0]
        for t in range(u):
            tok = prev if t == 0 else torch.where(use_ref[:, t], tgt_in[:, t], prev)
            f, state, w = self._step(self.dropout(self.embed(tok)), state, mem)
            lg = self.output(f)
            prev = lg.detach().argmax(-1)
            logits.append(lg)
            weights.append(w)
        return torch.stack(logits, dim=1), torch.stack(weights, dim=1)


class LuongDecoder(Decoder):
    """Attention none / dot / additive: the RNN reads the embedding alone, the attention reads its output."""

    layout = "luong"

    @property
    def can_parallel(self) -> bool:
        return not self.attention.stateful

    def _step(self, emb: Tensor, state: DecoderState, mem: AttentionMemory
              ) -> tuple[Tensor, DecoderState, Tensor]:
        out, h, c = self._rnn(emb[:, None], state)
        s = out[:, 0]
        ctx, w, att = self.attention(s, mem, state.att)
        return self._features(s, ctx), DecoderState(h, c, att), w

    def _parallel(self, tgt_in: Tensor, state: DecoderState, mem: AttentionMemory) -> tuple[Tensor, Tensor]:
        """Full teacher forcing in one fused RNN call over U and one batched attention."""
        out, _, _ = self._rnn(self.dropout(self.embed(tgt_in)), state)
        ctx, w = self.attention.forward_all(out, mem)
        return self.output(self._features(out, ctx)), w


class InputFeedingDecoder(Decoder):
    """Attention location: the attention reads the previous state and alignment, and its context feeds the RNN."""

    layout = "bahdanau"
    input_feeding = True

    @property
    def fused_cell(self) -> bool:
        """One biased LSTM layer fed [embedding; context]: the teacher-forced loop runs the cell as explicit
        matmuls (see _loop_fused), and so can a search step."""
        return self.is_lstm and self.cfg.layers == 1 and self.rnn.bias

    def _step(self, emb: Tensor, state: DecoderState, mem: AttentionMemory
              ) -> tuple[Tensor, DecoderState, Tensor]:
        ctx, w, att = self.attention(state.h[-1], mem, state.att)
        if self.fused_cell:  # the same cell as explicit matmuls (no per-step RNN call)
            r = self.rnn
            gates = torch.addmm(r.bias_ih_l0 + r.bias_hh_l0, torch.cat([emb, ctx], dim=-1), r.weight_ih_l0.t())
            s, c = _lstm_pointwise(torch.addmm(gates, state.h[0], r.weight_hh_l0.t()), state.c[0])
            h, c = s[None], c[None]
        else:
            out, h, c = self._rnn(torch.cat([emb, ctx], dim=-1)[:, None], state)
            s = out[:, 0]
        return self._features(s, ctx), DecoderState(h, c, att), w

    def _loop(self, tgt_in: Tensor, state: DecoderState, mem: AttentionMemory, teacher_forcing: float
              ) -> tuple[Tensor, Tensor]:
        if teacher_forcing >= 1.0 and self.fused_cell:
            return self._loop_fused(tgt_in, state, mem)
        return super()._loop(tgt_in, state, mem, teacher_forcing)

    def _loop_fused(self, tgt_in: Tensor, state: DecoderState, mem: AttentionMemory) -> tuple[Tensor, Tensor]:
        """Teacher-forced loop of the input-feeding LSTM decoder with the per-step work cut to what
        depends on the previous step: the embedding half of the input projection (and both biases) is
        one matmul over all steps, each step is one addmm over [context; h] plus the gate arithmetic,
        and the output layer (combine, tanh, dropout, projection) runs once over all steps after the
        loop (nothing in it feeds back). Same function as the step loop through nn.LSTM."""
        r, e_dim = self.rnn, self.cfg.embed_dim
        emb = self.dropout(self.embed(tgt_in)).transpose(0, 1)  # (U, B, E), time-major for unbind
        w_emb, w_ctx = r.weight_ih_l0.split([e_dim, r.weight_ih_l0.size(1) - e_dim], dim=1)
        pre = nn.functional.linear(emb, w_emb, r.bias_ih_l0 + r.bias_hh_l0)  # (U, B, 4H)
        w_rec = torch.cat([w_ctx, r.weight_hh_l0], dim=1).t()  # ([ctx; h], 4H)
        h, c, att = state.h[0], state.c[0], state.att
        hs, ctxs, weights = [], [], []
        # The gradients w.r.t. the encoder states (through every context) and the recurrent weights are
        # formed once after the loop (see _StepProducts), not accumulated step by step.
        ctx_of, gates_of = _StepProducts("bmv"), _StepProducts("mm")
        values, w_rec = ctx_of.track(mem.values), gates_of.track(w_rec)
        factors = self.attention.score_factors()  # once per batch, not per step
        for x_t in pre.unbind(0):
            w, att = self.attention.align(h, mem, att, factors)
            ctx = ctx_of(w, values)
            h, c = _lstm_pointwise(x_t + gates_of(torch.cat([ctx, h], dim=1), w_rec), c)
            hs.append(h)
            ctxs.append(ctx)
            weights.append(w)
        feats = self._features(torch.stack(hs, dim=1), torch.stack(ctxs, dim=1))
        return self.output(feats), torch.stack(weights, dim=1)


# Decoder classes by the attention layout they serve: a new layout is one class and one entry.
DECODERS: dict[str, type[Decoder]] = {"luong": LuongDecoder, "bahdanau": InputFeedingDecoder}


def make_decoder(cfg: DecoderConfig, vocab_size: int, enc: EncoderConfig) -> Decoder:
    """The decoder of the layout `cfg.attention` asks for (see attention.ATTENTION_LAYOUTS)."""
    return DECODERS[ATTENTION_LAYOUTS[cfg.attention]](cfg, vocab_size, enc)
