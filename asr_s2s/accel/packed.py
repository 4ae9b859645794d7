"""Linear maps with their weight packed once for oneDNN, for the search step's small products.

A search step multiplies a few rows (1 per utterance for greedy, K for beam) by the same weight
matrices, once per output token. ``torch.addmm`` / ``F.linear`` hand oneDNN a plain row-major weight
on every call, which it re-blocks for its kernels each time; a weight packed once in oneDNN's own
layout (``torch.ops.mkldnn._reorder_linear_weight``, what TorchInductor's CPU freezing uses) skips
that. Measured on this project's 2-core AVX-512 box (one-off timings, medians of 300 calls),
(N x 832) @ (832 x 1280), 2 threads:
N = 1: 113 -> 53 us, N = 16: 338 -> 192 us, N = 64: 1009 -> 653 us (fp32). The arithmetic is fp32
as before (results differ from F.linear only in summation order, ~1e-7 relative). The packed op costs
~20 us per call whatever the size, so small weights stay plain: (1 x 320) @ (320 x 31) takes 4 us
through F.linear and 23 us packed.

Packing needs a CPU tensor, a torch built with oneDNN, and for bf16 a CPU with native bf16;
otherwise (or if the op is missing from a torch build) `PackedLinear` is plain ``F.linear``.
The packed tensor is an opaque oneDNN tensor: it cannot be copied or saved, so it lives only in a
cache outside the module (`derived`, used by accel.decoder.search_weights), never in a state dict.
"""

from __future__ import annotations

import functools
import weakref
from typing import Any, Callable, Hashable, Iterable

import torch
from torch import Tensor
from torch.nn import functional as F


@functools.lru_cache(maxsize=None)
def _cpu_packing(dtype: torch.dtype) -> bool:
    """What this process's torch build and CPU support (asked once: the search step asks every step)."""
    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.mkldnn, "_reorder_linear_weight"):
        return False
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return dtype == torch.float32


def can_pack(weight: Tensor, dtype: torch.dtype = torch.float32) -> bool:
    """Whether a weight on this device can be packed for oneDNN in `dtype` (fp32 or bf16)."""
    return weight.device.type == "cpu" and _cpu_packing(dtype)


def weights_identity(tensors: Iterable[Tensor]) -> tuple:
    """Each tensor's storage, in-place version, dtype and device: what changes when a weight is moved, loaded
    or trained, so a cache of things derived from weights compares it to know it is stale."""
    return tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)


# module -> {tag: (identity of the tensors a value was derived from, the value)}; weak: dropped with the module.
_DERIVED: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()


def derived(owner: torch.nn.Module, tag: Hashable, tensors: Iterable[Tensor], build: Callable[[], Any]) -> Any:
    """``build()``, kept for `owner` under `tag` until one of `tensors` changes (see weights_identity): for what
    inference derives from weights once instead of at every call. The value must not refer to `owner`."""
    ident = weights_identity(tensors)
    slots = _DERIVED.setdefault(owner, {})
    hit = slots.get(tag)
    if hit is None or hit[0] != ident:
        hit = slots[tag] = (ident, build())
    return hit[1]


# Weights with fewer elements stay plain (see the module doc): 2 MB in fp32.
MIN_PACKED_ELEMENTS = 1 << 19


class PackedLinear:
    """y = act(x W^T + b) [+ other]: W (out, in) and b (out,) are copied (detached) in `dtype` and W is
    packed once if it has at least `min_elements` (default MIN_PACKED_ELEMENTS) entries; x and y are fp32 (a
    bf16 weight multiplies x cast to bf16). Inference only (no autograd through the packed op)."""

    def __init__(self, weight: Tensor, bias: Tensor | None = None, dtype: torch.dtype = torch.float32,
                 rows_hint: int = 16, min_elements: int | None = None) -> None:
        self.weight = weight.detach().to(dtype).contiguous()
        self.bias = None if bias is None else bias.detach().to(dtype).contiguous()
        self.packed: Tensor | None = None
        min_elements = MIN_PACKED_ELEMENTS if min_elements is None else min_elements
        if self.weight.numel() >= min_elements and can_pack(self.weight, dtype):
            try:
                self.packed = torch.ops.mkldnn._reorder_linear_weight(self.weight, rows_hint)
            except RuntimeError:  # an unsupported shape or build: the plain product still works
                self.packed = None

    def __call__(self, x: Tensor, act: str = "none", add: Tensor | None = None) -> Tensor:
        """x (N, in) fp32 -> fp32 (N, out); act "none" or "tanh" (applied before `add`, and only without it).
        A bf16 weight gets x cast to bf16, and its bf16 product back in fp32 (by the add, where there is one)."""
        _check_act(act, add)
        low = self.weight.dtype != torch.float32
        if low:
            x = x.to(self.weight.dtype)
        if self.packed is not None:
            if add is not None and not low:
                return torch.ops.mkldnn._linear_pointwise.binary(x, add, self.packed, self.bias, "add")
            y = torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none" if low else act, [], "")
        else:
            y = F.linear(x, self.weight, self.bias)
        if low:
            return add + y if add is not None else y.float().tanh_() if act == "tanh" else y.float()
        if act == "tanh":
            return y.tanh_() if self.packed is None else y
        return y if add is None else y.add_(add)


def _check_act(act: str, add: Tensor | None) -> None:
    if act not in ("none", "tanh") or (act != "none" and add is not None):
        raise ValueError("act is 'none' or 'tanh', and 'tanh' cannot be combined with add")


# ``_weight_int8pack_mm`` on CPU needs the input size to be a multiple of this: for other sizes (torch 2.13) it
# returns garbage or crashes the process.
INT8_IN_MULTIPLE = 16


def can_int8(in_features: int, device: torch.device | str = "cpu") -> bool:
    """Whether `Int8Linear` serves a weight (out, in_features) on `device`: a CPU with native bf16 (its products
    take bf16 rows; elsewhere they are emulated and slower than fp32), a torch with ``_weight_int8pack_mm``, and
    in_features a multiple of INT8_IN_MULTIPLE."""
    return (torch.device(device).type == "cpu" and in_features % INT8_IN_MULTIPLE == 0
            and hasattr(torch.ops.aten, "_weight_int8pack_mm") and _cpu_packing(torch.bfloat16))


# Int8Linear multiplies at most this many rows on its int8 weight; more go to its fallback.
INT8_MAX_ROWS = 2


class Int8Linear:
    """y = act(x W^T + b) [+ other] on W quantized to int8 once (weight-only quantization, as CTranslate2's
    int8_bfloat16): each output row r stored as round(W_r / s_r) in [-127, 127], with s_r = max |W_r| / 127
    (rounded to bf16); x is cast to bf16 and the product (``torch._weight_int8pack_mm``) accumulates in fp32
    and rounds to bf16, like a bf16 product. The result is fp32. Inference only.

    Why: a batch-1 search step's products are small and their weights do not stay in a 1 MB L2; there the
    int8 kernel (~19 GMAC/s per thread, no fixed cost to speak of) beats oneDNN's packed bf16 product (~20 us
    of fixed cost). But it computes row by row: it wins only up to ~2 rows (2 threads, (N x 832) @ (832 x
    1280): 34 vs 43 us at 1 row, 45 vs 44 at 2, 234 vs 110 at 16). So x of more than INT8_MAX_ROWS rows goes
    to `fallback` (the same map at another precision) when one is given (measured: bench/RESULTS.md at 577362c,
    tenth landing)."""

    def __init__(self, weight: Tensor, bias: Tensor | None = None, fallback: Callable[..., Tensor] | None = None
                 ) -> None:
        if weight.size(1) % INT8_IN_MULTIPLE:
            raise ValueError(f"Int8Linear needs an input size that is a multiple of {INT8_IN_MULTIPLE}, got "
                             f"{weight.size(1)} (see can_int8)")
        w = weight.detach().float()
        self.scale = (w.abs().amax(dim=1).clamp(min=1e-30) / 127.0).to(torch.bfloat16)
        self.weight = torch.round(w / self.scale.float()[:, None]).clamp_(-127, 127).to(torch.int8).contiguous()
        self.bias = None if bias is None else bias.detach().float().contiguous()
        self.fallback = fallback

    def dequantized(self) -> Tensor:
        """The fp32 weight this product multiplies by: (out, in)."""
        return self.weight.float() * self.scale.float()[:, None]

    def __call__(self, x: Tensor, act: str = "none", add: Tensor | None = None) -> Tensor:
        """x (N, in) -> fp32 (N, out); act and add as in PackedLinear."""
        if self.fallback is not None and x.size(0) > INT8_MAX_ROWS:
            return self.fallback(x, act, add)
        _check_act(act, add)
        y = torch._weight_int8pack_mm(x.to(torch.bfloat16), self.weight, self.scale)  # (N, out) bf16
        if self.bias is not None:
            y = self.bias + y  # fp32 by type promotion: the cast rides along
        if add is not None:
            return add + y
        if act == "tanh":
            return y.float().tanh_()
        return y.float()


# ---- LSTM layers on weights reordered once -------------------------------------------------------------------
# nn.LSTM on CPU runs each layer and direction as one oneDNN call that first reorders both weight matrices into
# oneDNN's layout: ~100 us (bf16) to ~200 us (fp32) per call for a 512 -> 256 layer, whatever the batch, against
# ~7.6 us per time step at batch 1 (one-off timings). In inference the reordered weights are kept (what
# TorchInductor's CPU freezing does for this op); the results are the same up to summation order (tests).


def can_pack_lstm(rnn: torch.nn.Module, x: Tensor) -> bool:
    """Whether `lstm_layer` serves `rnn` on input x: inference (no autograd) of a biased nn.LSTM without
    projections, on CPU with oneDNN enabled, weights in fp32 (or bf16 where native), and no autocast that would
    run it in another dtype."""
    if not isinstance(rnn, torch.nn.LSTM) or torch.is_grad_enabled() or x.device.type != "cpu":
        return False
    dtype = rnn.weight_ih_l0.dtype
    if not rnn.bias or rnn.proj_size or dtype not in (torch.float32, torch.bfloat16) or not _cpu_packing(dtype):
        return False
    if not torch._C._get_mkldnn_enabled() or not hasattr(torch.ops.mkldnn, "_reorder_mkldnn_rnn_layer_weight"):
        return False
    return not torch.is_autocast_enabled("cpu") or torch.get_autocast_dtype("cpu") == dtype


def reorder_lstm_weights(w_ih: Tensor, w_hh: Tensor, reverse: bool = False) -> tuple[Tensor, Tensor]:
    """(w_ih (4H, In), w_hh (4H, H)) -> the same weights in oneDNN's LSTM layout (opaque tensors), for
    `lstm_layer` calls with the same `reverse`."""
    w = torch.ops.mkldnn._reorder_mkldnn_rnn_layer_weight(w_ih, w_hh, w_hh.size(1), reverse, True, False)
    return w[0], w[1]


def lstm_layer(x: Tensor, weights: tuple[Tensor, Tensor], b_ih: Tensor, b_hh: Tensor, reverse: bool = False
               ) -> tuple[Tensor, Tensor, Tensor]:
    """One LSTM layer, one direction (forward in time, or backward with `reverse`), from zero state, on
    `reorder_lstm_weights` output: x (B, T, In) -> outputs (B, T, H) (a transposed view), final h and c (1, B, H)."""
    hidden = b_ih.size(0) // 4
    zero = x.new_zeros(x.size(0), hidden)
    out, h, c, _ = torch.ops.aten.mkldnn_rnn_layer(x.transpose(0, 1).contiguous(), weights[0], weights[1], b_ih, b_hh,
                                                   zero, zero, reverse, [], 2, hidden, 1, True, False, False, False)
    return out.transpose(0, 1), h[None], c[None]
