"""The search step of the input-feeding LSTM decoder (location attention) on weights prepared once.

The same function as seq2seq.Decoder.step for a decoder whose `fused_cell` holds (one biased LSTM layer fed
[embedding; context]), in fewer and cheaper kernels, which is what a step of a few rows costs:

- the embedding's share of the gates (with both biases) is a per-token table (V, 4H), looked up per step;
- [context; h] meets the rest of the gate weights in one product, on a weight packed for oneDNN where that pays
  (see packed.py), in bf16 (precision "bf16") or int8 (precision "int8", at most INT8_MAX_ROWS rows);
- the attention's score runs as `location_align` (fewer kernels than LocationAttention.align);
- with precision bf16 / int8 and the compiled kernels available, everything up to the output layer is one call
  of cpu_kernels.LocationStep (bf16 products, attention and cell in fp32).

Every product takes and gives fp32; the output layer stays fp32 (it is small, and its logits rank the
hypotheses).
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import torch
from torch import Tensor

from ..seq2seq.attention import AttentionMemory, LocationAttention
from ..seq2seq.decoder import Decoder, DecoderState
from . import cpu_kernels
from .packed import Int8Linear, PackedLinear, can_int8, can_pack, derived

Step = Callable[[Tensor, DecoderState, AttentionMemory], tuple[Tensor, DecoderState, Tensor]]


class LocationConstants(NamedTuple):
    """What `location_align` needs from the attention's weights, formed once per search: loc2 = 2 W_f^T (C, A),
    v2 = 2 v (A,), keep_cum = [[0], [1]] (2, 1)."""

    loc2: Tensor
    v2: Tensor
    keep_cum: Tensor


class SearchWeights(NamedTuple):
    """See search_weights."""

    table: Tensor  # (V, 4H)
    gates: PackedLinear | Int8Linear  # [ctx; h] -> 4H
    query: PackedLinear | Int8Linear  # h -> 2 W_s h
    combine: PackedLinear | Int8Linear  # [s; ctx] -> hidden
    output: PackedLinear  # hidden -> V
    attention: LocationConstants
    kernel: cpu_kernels.LocationStep | None  # the step in bf16/int8 where the kernel is available


def serves(dec: Decoder) -> bool:
    """Whether `search_step` serves this decoder (else a search steps the plain Decoder.step)."""
    return dec.fused_cell and isinstance(dec.attention, LocationAttention)


def stepper(dec: Decoder, precision: str) -> Step:
    """The search step of `dec` in a resolved precision: (tokens (N,), state, mem) -> logits (N, V), state,
    weights (N, T). The weights are looked up here, once per search, not at every step (checking that they are
    current costs ~45 us under cProfile, a tenth of a batch-1 step); weights do not change during a search."""
    if serves(dec):
        return functools.partial(search_step, dec, search_weights(dec, precision))
    return dec.step


def location_constants(att: LocationAttention) -> LocationConstants:
    loc2, v2 = att.score_factors()
    return LocationConstants(loc2, v2, loc2.new_tensor([[0.0], [1.0]]))


def location_align(att: LocationAttention, q2: Tensor, mem: AttentionMemory, state: Tensor,
                   consts: LocationConstants) -> tuple[Tensor, Tensor]:
    """LocationAttention.align for a search step (no autograd), the same function in fewer kernels: W_f f and the
    query term are added to the keys by a baddbmm and an add_ on the conv's output as it comes, padding is masked
    by one `where`, and the new state [w; cum + w] is one addcmul. Search step at one row: 290 -> 245 us
    (reference model, AN4 utterance, 2 threads).
    q2 (N, A): 2 W_s query; state (N, 2, T) -> weights (N, T), new state (N, 2, T)."""
    f = att.location_features(state)  # (N, T, C)
    pre = torch.baddbmm(mem.keys, f, consts.loc2.expand(f.size(0), -1, -1))
    e = torch.matmul(pre.add_(q2[:, None, :]).sigmoid_(), consts.v2)  # see attention._energies
    w = torch.softmax(torch.where(mem.mask, e, float("-inf")), dim=-1)
    return w, torch.addcmul(w[:, None, :], state, consts.keep_cum)


def _lstm_pointwise(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """The LSTM cell after its matmuls (gates (N, 4H) in torch's i, f, g, o order -> h, c) in 6 kernels instead
    of 9 (each costs more than its arithmetic here): one sigmoid over all 4H gates (g's share unused) and an
    addcmul."""
    i, f, _, o = torch.sigmoid(gates).chunk(4, dim=1)
    hid = c.size(1)
    c = torch.addcmul(f * c, i, torch.tanh(gates[:, 2 * hid:3 * hid]))
    return o * torch.tanh(c), c


def search_step(dec: Decoder, p: SearchWeights, tokens: Tensor, state: DecoderState, mem: AttentionMemory
                ) -> tuple[Tensor, DecoderState, Tensor]:
    """Decoder.step of an input-feeding LSTM decoder in inference, on weights prepared once (p, from
    search_weights); the rest of the step is fp32."""
    h = state.h[0]
    if p.kernel is not None and h.dtype == mem.keys.dtype == torch.float32:
        feats, s, c, w, att = p.kernel(h, state.c[0], state.att, p.table.index_select(0, tokens), mem.keys,
                                       mem.values, mem.lengths)
        return p.output(feats), DecoderState(s[None], c[None], att), w
    w, att = location_align(dec.attention, p.query(h), mem, state.att, p.attention)
    ctx = torch.bmm(w[:, None, :], mem.values).squeeze(1)
    gates = p.gates(torch.cat([ctx, h], dim=1), add=p.table.index_select(0, tokens))
    s, c = _lstm_pointwise(gates, state.c[0])
    feats = p.combine(torch.cat([s, ctx], dim=1), act="tanh")  # dropout is the identity here
    return p.output(feats), DecoderState(s[None], c[None], att), w


def search_weights(dec: Decoder, precision: str = "fp32") -> SearchWeights:
    """The search step's weights: the (V, 4H) gate pre-activations of every token's embedding plus both biases,
    and products for the gates' [ctx; h] part, the attention query (times 2, see attention._energies), the
    combine layer and the output layer; the attention's constant factors. Built once, rebuilt when a weight
    changes (moved, loaded, trained). Kept outside the module: packed oneDNN tensors cannot be copied.

    precision "fp32": every product fp32 (packed where that pays); "bf16": the gate product, the step's largest
    (4H x (ctx + H)), on a packed bf16 weight; "int8": as bf16, but a step of at most packed.INT8_MAX_ROWS
    hypotheses (greedy search of one utterance) has its gate, query and combine products on int8 weights
    (packed.Int8Linear), where that is the faster. bf16 and int8 need a CPU with native bf16: elsewhere bf16 is
    fp32 and int8 is bf16. In both, the step is one call of cpu_kernels.LocationStep (up to the output layer)
    where that is available: its query, gate and combine products on bf16 weights (also for int8)."""
    r, e_dim, att = dec.rnn, dec.cfg.embed_dim, dec.attention
    params = (dec.embed.weight, r.weight_ih_l0, r.weight_hh_l0, r.bias_ih_l0, r.bias_hh_l0, att.query.weight,
              att.loc.weight, att.v.weight, dec.combine.weight, dec.combine.bias, dec.output.weight,
              dec.output.bias)
    in_sizes = (r.weight_ih_l0.size(1) - e_dim + r.weight_hh_l0.size(1), att.query.weight.size(1),
                dec.combine.weight.size(1))  # of the gate, query and combine products
    if precision == "int8" and not all(can_int8(n, r.weight_hh_l0.device) for n in in_sizes):
        precision = "bf16"
    if precision == "bf16" and not can_pack(r.weight_hh_l0, torch.bfloat16):  # unpacked bf16 gains nothing
        precision = "fp32"

    @torch.no_grad()
    def build() -> SearchWeights:
        w_emb, w_ctx = r.weight_ih_l0.split([e_dim, r.weight_ih_l0.size(1) - e_dim], dim=1)
        table = torch.addmm(r.bias_ih_l0 + r.bias_hh_l0, dec.embed.weight, w_emb.t())
        w_gates = torch.cat([w_ctx, r.weight_hh_l0], dim=1)
        gates = PackedLinear(w_gates, dtype=torch.float32 if precision == "fp32" else torch.bfloat16)
        if gates.packed is None and precision != "fp32":  # unpacked bf16 products gain nothing
            gates = PackedLinear(w_gates)
        query, combine = PackedLinear(2 * att.query.weight), PackedLinear(dec.combine.weight, dec.combine.bias)
        if precision == "int8":
            gates, query, combine = (Int8Linear(w_gates, fallback=gates),
                                     Int8Linear(2 * att.query.weight, fallback=query),
                                     Int8Linear(dec.combine.weight, dec.combine.bias, fallback=combine))
        consts, kernel = location_constants(att), None
        sizes = (att.query.weight.size(0), w_ctx.size(1), r.hidden_size, dec.combine.weight.size(0))
        if precision != "fp32" and w_gates.device.type == "cpu" and cpu_kernels.LocationStep.fits(*sizes) \
                and cpu_kernels.available():
            kernel = cpu_kernels.LocationStep(2 * att.query.weight, w_gates, dec.combine.weight, dec.combine.bias,
                                              att.conv.weight, consts.loc2, consts.v2)
        return SearchWeights(table, gates, query, combine, PackedLinear(dec.output.weight, dec.output.bias), consts,
                             kernel)

    return derived(dec, ("search_weights", precision), params, build)
