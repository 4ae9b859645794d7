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
cache outside the module (see Decoder._search_weights), never in a state dict.
"""

from __future__ import annotations

import functools
from typing import Iterable

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


# Weights with fewer elements stay plain (see the module doc): 2 MB in fp32.
MIN_PACKED_ELEMENTS = 1 << 19


class PackedLinear:
    """y = act(x W^T + b) [+ other]: W (out, in) and b (out,) are copied (detached) in `dtype` and W is
    packed once if it has at least `min_elements` (default MIN_PACKED_ELEMENTS) entries; x (N, in) must have
    that dtype. Inference only (no autograd through the packed op)."""

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
        """x (N, in) -> (N, out); act "none" or "tanh" (applied before `add`, and only without it)."""
        if act not in ("none", "tanh") or (act != "none" and add is not None):
            raise ValueError("PackedLinear: act is 'none' or 'tanh', and 'tanh' cannot be combined with add")
        if self.packed is not None:
            if add is not None:
                return torch.ops.mkldnn._linear_pointwise.binary(x, add, self.packed, self.bias, "add")
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, act, [], "")
        y = F.linear(x, self.weight, self.bias)
        if act == "tanh":
            return torch.tanh(y)
        return y if add is None else y.add_(add)
