"""Attention over encoder states: none, dot (Luong), additive (Bahdanau), location (Chorowski).

Every module follows the same protocol:

- `prepare(memory (B,T,H), lengths (B,)) -> AttentionMemory`: once per utterance. Key projections
  are computed here, not per decoder step.
- `init_state(mem) -> Tensor | None`: per-hypothesis attention state (only `location` has one:
  the previous and the cumulative alignment, (B, 2, T)). Batch is dim 0 so search can reorder it.
- `forward(query (B,Q), mem, state) -> (context (B,H), weights (B,T), new_state)`: one step.
- `forward_all(queries (B,U,Q), mem) -> (contexts (B,U,H), weights (B,U,T))`: all steps at once,
  only for attentions whose score does not depend on the previous alignment (`stateful = False`).

Padding is masked with -inf before the softmax, so padded frames get exactly zero weight.

Which decoder layout uses which attention (see decoder.py):
- none / dot / additive: Luong layout — the query is the *current* decoder state s_t, so the RNN
  can run over the whole target in one fused call under teacher forcing.
- location: Bahdanau/Chorowski (ESPnet) layout — the query is the *previous* state s_{t-1} and the
  previous alignment, and the context is fed into the RNN; this needs the per-step loop.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .encoder import lengths_mask

ATTENTIONS = ("none", "dot", "additive", "location")

# Additive/location scores materialise (B, U, T, A); chunk over U to bound that to ~this many floats.
_ADDITIVE_CHUNK_ELEMS = 1 << 24


class AttentionMemory(NamedTuple):
    """values (B,T,H) encoder states; keys: the precomputed key projection (B,T,A) or None (location: doubled);
    mask (B,T) bool, True on real frames; lengths (B,)."""

    values: Tensor
    keys: Tensor | None
    mask: Tensor
    lengths: Tensor

    def index_select(self, idx: Tensor) -> "AttentionMemory":
        """Rows `idx` of every tensor (used to expand a batch to B*K beam hypotheses)."""
        return AttentionMemory(self.values.index_select(0, idx),
                               None if self.keys is None else self.keys.index_select(0, idx),
                               self.mask.index_select(0, idx), self.lengths.index_select(0, idx))


def _energies(pre: Tensor, v2: Tensor) -> Tensor:
    """v^T tanh(x) up to a constant, from pre = 2x (..., A) and v2 = 2v (A,): since tanh(x) = 2 sigmoid(2x) - 1,
    v^T tanh(x) = (2v)^T sigmoid(2x) - sum(v), and a constant added to every score leaves the softmax
    unchanged. On CPU torch.tanh is ~2.5x slower than sigmoid (540 vs 200 us on a (16, 73, 256) tensor,
    2 threads), and this is the largest elementwise op of every additive / location decoder step. Runs
    the sigmoid in place on ``pre`` (a temporary of the caller's) when no gradient is recorded."""
    act = torch.sigmoid(pre) if pre.requires_grad else pre.sigmoid_()
    return act @ v2


def _masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    """scores (..., T), mask broadcastable (..., T) -> softmax with padding at exactly 0."""
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)


class Attention(nn.Module):
    """Base class; see the module docstring for the protocol."""

    stateful = False  # True when the score depends on the previous alignment (needs a step loop)
    layout = "luong"  # decoder layout this attention is used with

    def __init__(self, query_dim: int, value_dim: int) -> None:
        super().__init__()
        self.query_dim, self.value_dim = query_dim, value_dim

    @property
    def context_dim(self) -> int:
        return self.value_dim

    def project_keys(self, values: Tensor) -> Tensor | None:
        return None

    def prepare(self, values: Tensor, lengths: Tensor) -> AttentionMemory:
        return AttentionMemory(values, self.project_keys(values), lengths_mask(lengths, values.size(1)), lengths)

    def init_state(self, mem: AttentionMemory) -> Tensor | None:
        return None

    def scores(self, query: Tensor, mem: AttentionMemory) -> Tensor:
        """query (B,U,Q) -> unnormalised scores (B,U,T)."""
        raise NotImplementedError

    def forward_all(self, queries: Tensor, mem: AttentionMemory) -> tuple[Tensor, Tensor]:
        """queries (B,U,Q) -> contexts (B,U,H), weights (B,U,T)."""
        w = _masked_softmax(self.scores(queries, mem), mem.mask[:, None, :])
        return torch.bmm(w, mem.values), w

    def forward(self, query: Tensor, mem: AttentionMemory, state: Tensor | None = None
                ) -> tuple[Tensor, Tensor, Tensor | None]:
        """query (B,Q) -> context (B,H), weights (B,T), state (unchanged: None)."""
        ctx, w = self.forward_all(query[:, None, :], mem)
        return ctx[:, 0], w[:, 0], state


class NoAttention(Attention):
    """The pure context-vector model: no attention, a zero-width context, all-zero weights."""

    @property
    def context_dim(self) -> int:
        return 0

    def forward_all(self, queries: Tensor, mem: AttentionMemory) -> tuple[Tensor, Tensor]:
        b, u, _ = queries.shape
        return queries.new_zeros(b, u, 0), queries.new_zeros(b, u, mem.values.size(1))


class DotAttention(Attention):
    """Luong "general" score: s^T W m / sqrt(Q). W m is precomputed once per utterance; the 1/sqrt(Q)
    scaling (as in Transformers) keeps the softmax from saturating at init when Q is large."""

    def __init__(self, query_dim: int, value_dim: int) -> None:
        super().__init__(query_dim, value_dim)
        self.key = nn.Linear(value_dim, query_dim, bias=False)
        self.scale = 1.0 / math.sqrt(query_dim)

    def project_keys(self, values: Tensor) -> Tensor:
        return self.key(values) * self.scale

    def scores(self, query: Tensor, mem: AttentionMemory) -> Tensor:
        return torch.bmm(query, mem.keys.transpose(1, 2))


class AdditiveAttention(Attention):
    """Bahdanau score: v^T tanh(W_m m + W_s s + b). W_m m (with the bias) is precomputed."""

    def __init__(self, query_dim: int, value_dim: int, attention_dim: int) -> None:
        super().__init__(query_dim, value_dim)
        self.key = nn.Linear(value_dim, attention_dim)
        self.query = nn.Linear(query_dim, attention_dim, bias=False)
        self.v = nn.Linear(attention_dim, 1, bias=False)

    def project_keys(self, values: Tensor) -> Tensor:
        return self.key(values)

    def scores(self, query: Tensor, mem: AttentionMemory) -> Tensor:
        q = self.query(query)  # (B,U,A)
        b, u, a = q.shape
        t = mem.keys.size(1)
        step = max(1, _ADDITIVE_CHUNK_ELEMS // max(1, b * t * a))
        v2 = 2 * self.v.weight[0]
        out = [_energies(2 * (mem.keys[:, None] + q[:, i:i + step, None]), v2) for i in range(0, u, step)]
        return out[0] if len(out) == 1 else torch.cat(out, dim=1)


class LocationAttention(Attention):
    """Chorowski et al. (2015) location-aware score, as in ESPnet's AttLoc, plus the cumulative
    alignment: v^T tanh(W_m m + W_s s_{t-1} + W_f conv([a_{t-1}; sum_{k<t} a_k])). The conv features
    let the alignment move monotonically instead of jumping back to a similar-sounding frame."""

    stateful = True
    layout = "bahdanau"

    def __init__(self, query_dim: int, value_dim: int, attention_dim: int, channels: int = 10,
                 kernel: int = 31) -> None:
        super().__init__(query_dim, value_dim)
        if kernel % 2 == 0:
            raise ValueError(f"location kernel must be odd, got {kernel}")
        self.key = nn.Linear(value_dim, attention_dim)
        self.query = nn.Linear(query_dim, attention_dim, bias=False)
        self.conv = nn.Conv1d(2, channels, kernel, padding=kernel // 2, bias=False)
        self.loc = nn.Linear(channels, attention_dim, bias=False)
        self.v = nn.Linear(attention_dim, 1, bias=False)

    def project_keys(self, values: Tensor) -> Tensor:
        """2 (W_m m + b), doubled once per utterance for the score's factor 2 (see _energies and align). Doubling
        is exact, so where it happens changes no bit: on the weight in training (smaller than a batch's keys),
        on the keys in inference (fewer than the weight's entries for a few utterances: 2 W cost ~50 us a call)."""
        if torch.is_grad_enabled():
            return nn.functional.linear(values, 2 * self.key.weight, 2 * self.key.bias)
        return self.key(values).mul_(2.0)

    def init_state(self, mem: AttentionMemory) -> Tensor:
        """(B, 2, T): previous alignment = uniform over real frames (as ESPnet), cumulative = 0."""
        prev = mem.mask.to(mem.values.dtype) / mem.lengths[:, None].to(mem.values.dtype)
        return torch.stack([prev, torch.zeros_like(prev)], dim=1)

    def forward(self, query: Tensor, mem: AttentionMemory, state: Tensor | None = None
                ) -> tuple[Tensor, Tensor, Tensor]:
        w, state = self.align(query, mem, state)
        return torch.bmm(w[:, None, :], mem.values)[:, 0], w, state

    def score_factors(self) -> tuple[Tensor, Tensor]:
        """(2 W_f^T (C, A), 2 v (A,)): the weights' factors in the score (see _energies for the 2). A step loop
        forms them once and passes them to every `align`."""
        return (2 * self.loc.weight.t()).contiguous(), 2 * self.v.weight[0]

    def align(self, query: Tensor, mem: AttentionMemory, state: Tensor | None = None,
              factors: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """One step without the context: query (B,Q) -> weights (B,T), new state (B,2,T); factors:
        score_factors(), formed here when not given."""
        if state is None:
            state = self.init_state(mem)
        f = self.location_features(state)  # (B,T,C)
        b, t, c = f.shape
        # 2 (keys + W_f f + W_s s) as one batched matmul-add: [f, 1] @ [2 W_f^T; 2 W_s s], the per-row query
        # term riding along as an extra input column, so the (B,T,A) sum is written once (an addmm and a
        # broadcast add wrote it twice: -4% training time of the reference model, A/B in one process).
        # See _energies for the factor 2. The (B, C+1, A) operand is a fresh contiguous tensor, so its gradient
        # is formed as (C+1, T) @ (T, A) products, the fast layout on CPU (a transposed-view weight made
        # addmm's backward use (A, B*T) @ (B*T, C), 5x slower at B*T = 5000).
        q = 2 * self.query(query)  # (B,A)
        loc2, v2 = self.score_factors() if factors is None else factors
        rhs = torch.cat([loc2.expand(b, c, -1), q[:, None, :]], dim=1)  # (B, C+1, A)
        pre = torch.baddbmm(mem.keys, torch.cat([f, f.new_ones(b, t, 1)], dim=2), rhs)  # keys come doubled
        e = _energies(pre, v2)  # (B,T)
        w = _masked_softmax(e, mem.mask)
        return w, torch.stack([w, state[:, 1] + w], dim=1)

    def location_features(self, state: Tensor) -> Tensor:
        """self.conv over the alignments, (B, 2, T) -> (B, T, C) (a transposed view). Measured against the
        same conv as one matmul over unfolded windows (2 threads, one-off timings): search step 17 -> 14 us
        at (1, 2, 68), 91 -> 67 us at (16, 2, 73); training step time unchanged (A/B in one process)."""
        return nn.functional.conv1d(state, self.conv.weight, padding=self.conv.kernel_size[0] // 2).transpose(1, 2)

    def forward_all(self, queries: Tensor, mem: AttentionMemory) -> tuple[Tensor, Tensor]:
        raise RuntimeError("location-aware attention depends on the previous alignment: use the step loop")


# The decoder layout each attention is used with (its class's `layout`; see decoder.DECODERS).
ATTENTION_LAYOUTS = {"none": NoAttention.layout, "dot": DotAttention.layout, "additive": AdditiveAttention.layout,
                     "location": LocationAttention.layout}


def make_attention(kind: str, query_dim: int, value_dim: int, attention_dim: int, *,
                   location_channels: int = 10, location_kernel: int = 31) -> Attention:
    """Build an attention module by name (one of ATTENTIONS)."""
    if kind == "none":
        return NoAttention(query_dim, value_dim)
    if kind == "dot":
        return DotAttention(query_dim, value_dim)
    if kind == "additive":
        return AdditiveAttention(query_dim, value_dim, attention_dim)
    if kind == "location":
        return LocationAttention(query_dim, value_dim, attention_dim, location_channels, location_kernel)
    raise ValueError(f"unknown attention {kind!r}; expected one of {ATTENTIONS}")
