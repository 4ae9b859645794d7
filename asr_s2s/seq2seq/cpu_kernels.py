"""A compiled kernel for the encoder's LSTM layers at batch 1 in bf16, where the CPU has AVX512-BF16.

Why: at batch 1 oneDNN's LSTM step costs ~10 us per layer and direction (H = 256, bf16, one thread), twice
what reading the 0.5 MB of recurrent weights from L2 costs, and it is ~40% of a batch-1 decode
(bench/RESULTS.md, thirteenth session). `lstm_bf16.c` does the step at ~5 us: one pass over the recurrent
weights, the gates applied per block of 16 hidden units while their sums are in registers.

How: the C file ships with the package and is compiled on first use with the system's C compiler
(``$CC``, else ``cc``/``gcc``/``clang``; ~1 s) into ``$ASR_S2S_CACHE/kernels`` (default ``~/.cache/asr_s2s``),
under a name that hashes the source and the flags, and loaded with ctypes. With torch on 2+ threads the two
directions of a layer run at once, on torch's own OpenMP threads (see lstm_bidir_bf16). Without a compiler, on
a CPU without AVX512-BF16, or with ``ASR_S2S_CPU_KERNELS=0``, `available()` is False and the encoder runs
oneDNN's LSTM as before; `status()` says why (the bench records it).

Numerics: fp32 accumulation and cell state, h rounded to bf16 between steps, as in oneDNN's bf16 LSTM; the
outputs differ from oneDNN's by bf16 rounding (summation order and the exp approximation, ~1 ulp of fp32).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch
from torch import Tensor

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
    if cpu is None or not getattr(cpu, "_is_avx512_bf16_supported", lambda: False)():
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
    fn = lib.lstm_cell_bf16
    fn.argtypes = [ptr, i64, ptr, i64, ptr, ptr, i64, ptr, ptr, ptr, ptr]
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
    if lib is None or x.dtype != torch.bfloat16 or x.dim() != 2 or x.stride(1) != 1:
        raise ValueError("lstm_layer_b1 needs a (T, K) bf16 tensor with contiguous rows and the kernel available")
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


class LSTMCellB1:
    """The decoder's LSTM cell for one row on the kernel: h, c = cell(W [x1; x2] + add, c), W (4H, K1 + K2)
    packed once in bf16; inputs rounded to bf16 for the product, sums and state in fp32 (what a bf16 product
    followed by the fp32 cell computes). At one row it takes ~1/3 of oneDNN's packed bf16 product plus the six
    element-wise kernels of the cell (bench/RESULTS.md, thirteenth session)."""

    def __init__(self, weight: Tensor) -> None:
        self.hidden, self.in_features = weight.size(0) // 4, weight.size(1)
        if not fits(self.in_features, self.hidden):
            raise ValueError(f"LSTMCellB1: sizes ({weight.size(0)}, {self.in_features}) do not fit the kernel")
        self.weight = _pack_rows(weight, self.hidden)

    def __call__(self, x1: Tensor, x2: Tensor, add: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """x1 (1, K1), x2 (1, K2), add (1, 4H) in torch's gate order, c (1, H), all fp32 -> h, c (1, H) fp32."""
        lib = _library()
        x1, x2, add, c = (t.contiguous() for t in (x1, x2, add, c))
        if lib is None or any(t.dtype != torch.float32 or t.size(0) != 1 for t in (x1, x2, add, c)) or \
                x1.size(1) + x2.size(1) != self.in_features:
            raise ValueError("LSTMCellB1 needs one fp32 row of matching sizes and the kernel available")
        xb = torch.empty(self.in_features, dtype=torch.bfloat16)
        h_out, c_out = torch.empty(1, self.hidden), torch.empty(1, self.hidden)
        lib.lstm_cell_bf16(x1.data_ptr(), x1.size(1), x2.data_ptr(), x2.size(1), self.weight.data_ptr(),
                           add.data_ptr(), self.hidden, c.data_ptr(), xb.data_ptr(), h_out.data_ptr(),
                           c_out.data_ptr())
        return h_out, c_out
