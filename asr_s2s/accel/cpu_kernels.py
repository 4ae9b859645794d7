"""Compiled kernels for decoding in bf16 where the CPU has AVX512-BF16: the parts of a decode that are chains of
small products and element-wise ops, which torch's kernels (oneDNN's) run well below what the arithmetic and the
caches allow (measured: bench/RESULTS.md at 577362c, thirteenth session):
- the encoder's LSTM layers (`lstm_layer_b1`): oneDNN's step costs ~10 us per layer and direction (H = 256, one
  thread), twice what reading the 0.5 MB of recurrent weights from L2 costs. Here a step makes one pass over the
  recurrent weights and applies the gates per block of 16 hidden units while their sums are in registers
  (~5 us); with torch on 2+ threads the two directions of a layer run at once on torch's own OpenMP threads;
- the location-attention LSTM decoder's search step for any number of hypotheses (`LocationStep`): ~25 torch ops
  of a few us each, where one call does the same arithmetic in 1/3 to 1/2 of the time (1 and 16 hypotheses).

How: the C file (`lstm_bf16.c`) ships with the package and is compiled on first use with the system's C compiler
(``$CC``, else ``cc``/``gcc``/``clang``; ~1 s) into ``$ASR_S2S_CACHE/kernels`` (default ``~/.cache/asr_s2s``),
under a name that hashes the source and the flags, and loaded with ctypes. Without a compiler, on a CPU without
AVX512-BF16, or with ``ASR_S2S_CPU_KERNELS=0``, `available()` is False and decoding runs torch's kernels as
before; `status()` says why (the bench records it).

Numerics: products on bf16 weights and bf16-rounded inputs with fp32 sums, cell states, attention and softmax in
fp32, the encoder's h rounded to bf16 between steps (as oneDNN's bf16 LSTM does). Against torch's bf16 decoding
the results differ by bf16 rounding; on AN4 dev the reference model's WER is unchanged.
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch
from torch import Tensor

from .precision import cpu_native_bf16

SOURCE = Path(__file__).with_name("lstm_bf16.c")
CFLAGS = ["-O3", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512bf16", "-shared", "-fPIC", "-std=gnu11",
          "-fopenmp"]
ENV_SWITCH = "ASR_S2S_CPU_KERNELS"  # "0" turns the kernel off

_lock = threading.Lock()
_state: dict[str, object] = {}  # "lib": the loaded library or None; "why": why it is None, or a note


def cache_dir() -> Path:
    root = os.environ.get("ASR_S2S_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "asr_s2s")
    return Path(root) / "kernels"


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _compile(cc: str, flags: list[str]) -> tuple[Path | None, str]:
    """The library built with `flags` in the cache (built now if missing); (path, "") or (None, why not)."""
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(flags).encode()).hexdigest()[:16]
    target = cache_dir() / f"lstm_bf16-{digest}.so"
    if target.exists():
        return target, ""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # Build beside the target and rename: processes that start together (DDP ranks) never load half a file.
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            built = Path(tmp) / target.name
            proc = subprocess.run([cc, *flags, str(SOURCE), "-o", str(built)], capture_output=True, text=True,
                                  timeout=120)
            if proc.returncode != 0:
                return None, f"{cc} failed on {SOURCE.name}: {proc.stderr.strip()[-500:]}"
            os.replace(built, target)
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"could not build {target}: {e}"
    return target, ""


def _build() -> tuple[ctypes.CDLL | None, str]:
    """Compile (or find the compiled) library and load it; (library, note) or (None, why not)."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return None, f"turned off by {ENV_SWITCH}=0"
    cpu = getattr(torch, "cpu", None)
    if not cpu_native_bf16() or not getattr(cpu, "_is_avx512_bf16_supported", lambda: False)():
        return None, "the CPU has no AVX512-BF16"
    cc = _compiler()
    if cc is None:
        return None, "no C compiler found (set $CC)"
    target, why = _compile(cc, CFLAGS)
    note = ""
    if target is None:  # e.g. clang without an OpenMP runtime: the directions then run one after the other
        target, _ = _compile(cc, [f for f in CFLAGS if f != "-fopenmp"])
        note = " (built without OpenMP: one thread)"
    if target is None:
        return None, why
    try:
        lib = ctypes.CDLL(str(target))
    except OSError as e:
        return None, f"could not load {target}: {e}"
    fn = lib.lstm_dir_bf16
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    fn.argtypes = [ptr, i64, i64, i64, ptr, ptr, ptr, i64, ctypes.c_int, ptr, ptr, ptr, i64, ptr, ptr]
    fn.restype = None
    fn = lib.lstm_bidir_bf16
    fn.argtypes = [ptr, i64, i64, i64, ptr, ptr, ptr, ptr, ptr, ptr, i64] + [ptr] * 9 + [ctypes.c_int]
    fn.restype = None
    fn = lib.location_steps_bf16
    fn.argtypes = [i64] * 8 + [ptr] * 15 + [i64] + [ptr] * 6 + [ctypes.c_int]
    fn.restype = None
    return lib, note


def _library() -> ctypes.CDLL | None:
    if "lib" not in _state:
        with _lock:
            if "lib" not in _state:
                lib, why = _build()
                _state.update(lib=lib, why=why)
    return _state["lib"]  # type: ignore[return-value]


def available() -> bool:
    """Whether the batch-1 bf16 LSTM kernel can run in this process (builds it on the first call)."""
    return _library() is not None


def status() -> str:
    """'on' (with a note where it runs on one thread only) or 'off: ' and why (for benchmark records)."""
    return f"on{_state['why']}" if available() else f"off: {_state['why']}"


def fits(input_size: int, hidden: int) -> bool:
    """Whether a layer of these sizes fits the kernel's layout (pairs of inputs, blocks of 16 units)."""
    return input_size % 2 == 0 and hidden % 16 == 0


def _pack_rows(w: Tensor, hidden: int) -> Tensor:
    """(4H, K) in torch's gate order -> (H/16, 4, K/2, 16, 2) bf16: the kernel's layout (see lstm_bf16.c)."""
    k = w.size(1)
    return w.detach().to(torch.bfloat16).reshape(4, hidden // 16, 16, k // 2, 2).permute(1, 0, 3, 2, 4).contiguous()


def pack_direction(w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One direction's weights in the kernel's layout: (w_ih, w_hh) bf16 and the summed bias in fp32."""
    hidden = w_hh.size(1)
    bias = (b_ih.detach().float() + b_hh.detach().float()).reshape(4, hidden // 16, 16).permute(1, 0, 2)
    return _pack_rows(w_ih, hidden), _pack_rows(w_hh, hidden), bias.contiguous().reshape(-1)


def lstm_layer_b1(x: Tensor, directions: list[tuple[Tensor, Tensor, Tensor]]) -> tuple[Tensor, Tensor, Tensor]:
    """One LSTM layer (1 or 2 directions, zero initial state) over one utterance: x (T, K) bf16 ->
    outputs (T, dirs*H) bf16 (forward then backward, as nn.LSTM), final h and c (dirs, H) fp32.
    With two directions and torch using 2+ threads, the backward direction runs on a second thread."""
    lib = _library()
    if lib is None or x.dtype != torch.bfloat16 or x.dim() != 2 or x.stride(1) != 1 \
            or any(d[0].size(2) * 2 != x.size(1) for d in directions):
        raise ValueError("lstm_layer_b1 needs a (T, K) bf16 tensor with contiguous rows, K the layer's input size, "
                         "and the kernel available")
    (t, k), dirs = x.shape, len(directions)
    hidden = directions[0][1].size(0) * 16
    out = torch.empty(t, dirs * hidden, dtype=torch.bfloat16)
    h_n, c_n = torch.empty(dirs, hidden), torch.empty(dirs, hidden)
    gates = torch.empty(dirs, t, 4 * hidden)
    hbuf = torch.empty(dirs, 2, hidden, dtype=torch.bfloat16)
    ptrs = [[w.data_ptr() for w in d] for d in directions]
    if dirs == 2:
        lib.lstm_bidir_bf16(x.data_ptr(), t, k, x.stride(0), *ptrs[0], *ptrs[1], hidden, gates[0].data_ptr(),
                            gates[1].data_ptr(), hbuf[0].data_ptr(), hbuf[1].data_ptr(), out.data_ptr(),
                            h_n[0].data_ptr(), c_n[0].data_ptr(), h_n[1].data_ptr(), c_n[1].data_ptr(),
                            torch.get_num_threads())
    else:
        lib.lstm_dir_bf16(x.data_ptr(), t, k, x.stride(0), *ptrs[0], hidden, 0, gates[0].data_ptr(),
                          hbuf[0].data_ptr(), out.data_ptr(), out.stride(0), h_n[0].data_ptr(), c_n[0].data_ptr())
    return out, h_n, c_n


def _pack_blocks(w: Tensor) -> Tensor:
    """(N, K) -> (N/16, K/2, 16, 2) bf16: blocks of 16 rows, one 64-byte line per input pair (see lstm_bf16.c)."""
    n, k = w.shape
    return w.detach().to(torch.bfloat16).reshape(n // 16, 16, k // 2, 2).permute(0, 2, 1, 3).contiguous()


class LocationStep:
    """One search step of the location-attention LSTM decoder for N hypotheses (accel.decoder.search_step up to
    its output layer) as one kernel call: the query, location, gate and combine products on bf16 weights (inputs
    rounded to bf16, fp32 sums), the attention and the cell in fp32; with torch on 2+ threads the hypotheses are
    shared between two. In torch the step is a chain of ~25 small ops, each slower than its arithmetic at these
    sizes (bench/RESULTS.md at 577362c, tenth and thirteenth sessions).

    Weights: w_query2 (A, H) = 2 W_query; w_gates (4H, V + H): the gates' [context; h] part; w_comb (D, H + V),
    b_comb (D,): the combine layer; conv (C, 2, KW): the location conv; loc2 (C, A), v2 (A,): the attention's
    score factors (attention.LocationAttention.score_factors)."""

    def __init__(self, w_query2: Tensor, w_gates: Tensor, w_comb: Tensor, b_comb: Tensor, conv: Tensor,
                 loc2: Tensor, v2: Tensor) -> None:
        (self.att_dim, self.hidden), (self.comb_dim, _) = w_query2.shape, w_comb.shape
        self.value_dim = w_gates.size(1) - self.hidden
        self.channels, _, self.width = conv.shape
        if not self.fits(self.att_dim, self.value_dim, self.hidden, self.comb_dim):
            raise ValueError("LocationStep: sizes do not fit the kernel")
        self.w_query = _pack_blocks(w_query2)
        self.w_gates = _pack_rows(w_gates, self.hidden)
        self.w_comb, self.b_comb = _pack_blocks(w_comb), b_comb.detach().float().contiguous()
        self.conv, self.loc2, self.v2 = (t.detach().float().contiguous() for t in (conv, loc2, v2))
        self._weights = [x.data_ptr() for x in (self.w_query, self.w_gates, self.w_comb, self.b_comb, self.conv,
                                                 self.loc2, self.v2)]

    @staticmethod
    def fits(att_dim: int, value_dim: int, hidden: int, comb_dim: int) -> bool:
        return att_dim % 16 == 0 and comb_dim % 16 == 0 and hidden % 16 == 0 and value_dim % 2 == 0

    def __call__(self, h: Tensor, c: Tensor, att: Tensor, add: Tensor, keys: Tensor, values: Tensor,
                 lengths: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """h, c (N, H), att (N, 2, T), add (N, 4H) (each token's gate-table row), keys (N, T, A) (doubled),
        values (N, T, V), all fp32; lengths (N,) real frames of T -> feats (N, D) (the output layer's input),
        h, c (N, H), weights (N, T), new attention states (N, 2, T)."""
        lib = _library()
        h, c, att, add, keys, values = (x.contiguous() for x in (h, c, att, add, keys, values))
        lengths = lengths.to(torch.int64).contiguous()
        n, t = att.size(0), att.size(-1)
        if lib is None or any(x.dtype != torch.float32 or x.size(0) != n for x in (h, c, add, keys, values)) \
                or keys.shape[1:] != (t, self.att_dim) or values.shape[1:] != (t, self.value_dim):
            raise ValueError("LocationStep needs fp32 hypotheses of matching sizes and the kernel available")
        hid, d, a, v, ch = self.hidden, self.comb_dim, self.att_dim, self.value_dim, self.channels
        # Two allocations, pointers by offset (4 bytes a float): at one hypothesis a step costs ~80 us, and each
        # tensor op ~1 us. Scratch: per thread, what lstm_bf16.c's location_steps_bf16 asks for.
        per_thread = 16 * (a + 64 + (hid + v + 1) // 2) + ch * t + t
        scratch = torch.empty(2 * per_thread)
        sizes = [n * t, n * 2 * t, n * v, n * hid, n * hid, n * d]  # w, att_out, ctx, h_out, c_out, feats
        out = torch.empty(sum(sizes))
        starts = [out.data_ptr() + 4 * s for s in itertools.accumulate([0] + sizes[:-1])]
        lib.location_steps_bf16(n, t, a, v, hid, d, ch, self.width, *self._weights, lengths.data_ptr(),
                                keys.data_ptr(), values.data_ptr(), h.data_ptr(), c.data_ptr(), att.data_ptr(),
                                add.data_ptr(), scratch.data_ptr(), per_thread, *starts, torch.get_num_threads())
        w, att_out, _, h_out, c_out, feats = out.split(sizes)
        return feats.view(n, d), h_out.view(n, hid), c_out.view(n, hid), w.view(n, t), att_out.view(n, 2, t)
