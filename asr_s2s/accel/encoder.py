"""The recurrent encoder in inference, on weights prepared once: the same function as seq2seq.RecurrentEncoder,
faster. Other encoders run their own forward (under bf16 autocast on a bf16 copy for bf16 / int8).

- fp32: the LSTM layers run on weights reordered for oneDNN once (`lstm_layer`; nn.LSTM reorders them at every
  call): the same results up to summation order, and at batch 1 greedy decoding 0.96x (bf16) / 0.90x (fp32) the
  time (A/B in one process, AN4 dev). The subsampling's output weight is permuted once, not every batch.
- bf16 (and int8, whose int8 products are the decoder's): a copy of the encoder with bf16 weights
  (`bf16_encoder`) runs under bf16 autocast, and its outputs are cast back to fp32. One utterance of a bf16 LSTM
  runs on cpu_kernels' compiled layer where it is available (0.46x oneDNN's time for the layers on 2 threads,
  0.67x on one; equal to it up to bf16 rounding).

Padding is handled as in seq2seq.encoder.run_rnn_padded (the hold column, `freeze_params`).
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import Tensor, nn

from ..seq2seq.encoder import (Conv2dSubsampling, Encoder, EncoderOutput, RecurrentEncoder, freeze_params, lengths_mask,
                               run_rnn_padded)
from . import cpu_kernels
from .packed import can_pack_lstm, derived, lstm_layer, reorder_lstm_weights

# Modules whose weights autocast casts to bf16 at every call (the ones it runs in bf16).
_AUTOCAST_BF16_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.RNNBase)


def encode(model: nn.Module, src: Tensor, src_lens: Tensor, precision: str) -> EncoderOutput:
    """model.encode (a Seq2Seq) in a resolved precision ("fp32", "bf16" or "int8"); the output is always fp32."""
    if precision == "fp32":
        if model.frontend is not None:
            src = model.frontend(src)
        return run_encoder(model.encoder, src, src_lens)
    with torch.autocast(src.device.type, dtype=torch.bfloat16):
        if model.frontend is not None:
            src = model.frontend(src)
        out = run_encoder(bf16_encoder(model.encoder), src, src_lens)
    final = tuple(f.float() for f in out.final) if isinstance(out.final, tuple) else out.final.float()
    return EncoderOutput(out.states.float(), out.lengths, final)


def run_encoder(encoder: Encoder, x: Tensor, lengths: Tensor) -> EncoderOutput:
    """encoder(x, lengths) in inference: x (B, T, F), lengths (B,) -> EncoderOutput (in the weights' dtype)."""
    if not isinstance(encoder, RecurrentEncoder):  # nothing prepared for it: its own forward
        return encoder(x, lengths)
    sub = encoder.subsample
    kwargs = {}
    if isinstance(sub, Conv2dSubsampling) and not torch.is_grad_enabled():
        # Re-forming it cost ~0.1-0.17 ms a batch (a strided copy of 164k entries).
        kwargs["out_weight"] = derived(sub, "out_weight", (sub.out.weight,), sub.permuted_out_weight)
    x, lengths = encoder.subsampled(x, lengths, **kwargs)
    states, final = run_lstm(encoder.rnn, x, lengths) if can_pack_lstm(encoder.rnn, x) else encoder.recurrent(x, lengths)
    return EncoderOutput(encoder.dropout(states), lengths, final)


def run_rnn(rnn: nn.RNNBase, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor | tuple[Tensor, Tensor]]:
    """run_rnn_padded (CPU), on prepared weights where `can_pack_lstm` serves `rnn` (run_lstm)."""
    return run_lstm(rnn, x, lengths) if can_pack_lstm(rnn, x) else run_rnn_padded(rnn, x, lengths)


def bf16_encoder(encoder: nn.Module) -> nn.Module:
    """A copy of `encoder` whose linear, convolution and recurrent weights are bf16 already, made once and
    remade when a weight changes. Under autocast it computes exactly what `encoder` does (autocast casts
    those weights to bf16 itself, at every call: 15% of a batch-1 bf16 encode of the reference model); the
    other modules keep fp32 weights, as autocast runs them in fp32."""
    def build() -> nn.Module:
        with torch.inference_mode(False), torch.no_grad():
            twin = copy.deepcopy(encoder)
            for m in twin.modules():
                if isinstance(m, _AUTOCAST_BF16_MODULES):
                    m.to(torch.bfloat16)
        return twin

    twin = derived(encoder, "bf16_twin", itertools.chain(encoder.parameters(), encoder.buffers()), build)
    return twin.train(encoder.training)


def run_lstm(rnn: nn.LSTM, x: Tensor, lengths: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """seq2seq.encoder.run_rnn_padded for an LSTM that `can_pack_lstm` serves, each layer and direction on weights
    reordered for oneDNN once; one unpadded bf16 utterance on the compiled kernel where it is available.
    x (B, T, In), lengths (B,) -> states (B, T, dirs*H) zero past each length, final (h, c) (layers*dirs, B, H)."""
    b, t, _ = x.shape
    x = x.to(rnn.weight_ih_l0.dtype)  # what torch.lstm does under autocast (the bf16 encoder copy)
    if b == 1 and x.dtype == torch.bfloat16 and _kernel_fits(rnn) and cpu_kernels.available():
        return _run_lstm_kernel_b1(rnn, x)
    padded = not bool((lengths == t).all())
    dirs = 2 if rnn.bidirectional else 1
    cache = derived(rnn, "reordered", rnn.parameters(), dict)  # {(layer, d, padded): reordered weights}
    mask = lengths_mask(lengths, t)
    if padded:  # the hold column (see run_rnn_padded)
        pad_col = (~mask)[:, :, None].to(x.dtype)
        pad_cols = (pad_col, pad_col.flip(1))
    last = (lengths - 1).clamp(min=0)[:, None, None]  # (B,1,1): each row's last real step
    inp, hs, cs = x, [], []
    for layer in range(rnn.num_layers):
        outs = []
        for d in range(dirs):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            params = [getattr(rnn, f"{name}{sfx}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            # Without padding the reordered-weight LSTM runs its backward direction in reverse itself (no flips).
            rev_call = not padded and d == 1
            xi = inp if d == 0 or rev_call else inp.flip(1)
            if padded:
                xi = torch.cat([xi, pad_cols[d]], dim=2)
            weights = cache.get((layer, d, padded))
            if weights is None:
                w_ih, w_hh = (freeze_params(params, rnn.hidden_size, True) if padded else params)[:2]
                weights = cache[(layer, d, padded)] = reorder_lstm_weights(w_ih, w_hh, rev_call)
            out, h_n, c_n = lstm_layer(xi, weights, params[2], params[3], rev_call)
            cs.append(c_n)
            if d == 0 and padded:  # the call's final h is not the last real frame's
                h_n = out.gather(1, last.expand(-1, -1, out.size(2))).transpose(0, 1)
            hs.append(h_n)
            if d == 1 and not rev_call:
                out = out.flip(1)
            outs.append(out)
        inp = torch.cat(outs, dim=-1) if dirs == 2 else outs[0]
    states = inp * mask[:, :, None].to(inp.dtype) if padded else inp
    return states, (torch.cat(hs, dim=0), torch.cat(cs, dim=0))


def _kernel_fits(rnn: nn.LSTM) -> bool:
    dirs = 2 if rnn.bidirectional else 1
    return cpu_kernels.fits(rnn.input_size, rnn.hidden_size) and cpu_kernels.fits(dirs * rnn.hidden_size,
                                                                                  rnn.hidden_size)


def _run_lstm_kernel_b1(rnn: nn.LSTM, x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """run_lstm for one utterance in bf16 on cpu_kernels' LSTM (about half oneDNN's time at batch 1):
    x (1, T, In) -> states (1, T, dirs*H), final h and c (layers*dirs, 1, H), all in x's dtype."""
    dirs = 2 if rnn.bidirectional else 1

    def pack() -> list[list[tuple[Tensor, Tensor, Tensor]]]:
        sfx = [f"_l{layer}" + ("_reverse" if d else "") for layer in range(rnn.num_layers) for d in range(dirs)]
        per_dir = [cpu_kernels.pack_direction(*(getattr(rnn, f"{name}{s}") for name in
                                                ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))) for s in sfx]
        return [per_dir[layer * dirs:(layer + 1) * dirs] for layer in range(rnn.num_layers)]

    packs = derived(rnn, "bf16_kernel_b1", rnn.parameters(), pack)
    inp, hs, cs = x[0].contiguous(), [], []
    for layer_packs in packs:
        inp, h_n, c_n = cpu_kernels.lstm_layer_b1(inp, layer_packs)
        hs.append(h_n)
        cs.append(c_n)
    return inp[None], (torch.cat(hs)[:, None].to(x.dtype), torch.cat(cs)[:, None].to(x.dtype))
