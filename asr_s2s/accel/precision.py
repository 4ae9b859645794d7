"""Which precision a decode runs in: the option's values, the one detection of native bf16, and "auto".

"fp32" (the default of the low-level API), "bf16", "int8" (bf16 plus int8 weights for the decoder's small
products), or "auto": bf16 where the CPU does bf16 arithmetic in hardware, fp32 elsewhere. What each one runs
is in the package doc (asr_s2s/accel/__init__.py).
"""

from __future__ import annotations

import functools
import os
import warnings

import torch

PRECISIONS = ("fp32", "bf16", "int8", "auto")
NATIVE_BF16_ENV = "ASR_S2S_NATIVE_BF16"  # "0": act as on a CPU without native bf16


@functools.lru_cache(maxsize=None)
def cpu_native_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic in hardware (AVX512-BF16 or AMX), where bf16 decoding is the faster
    one. ``ASR_S2S_NATIVE_BF16=0`` makes it False, as on a CPU without them, so that the fp32 defaults and the
    fallbacks that such CPUs run can be run and tested on one that has them (see README on running the tests)."""
    # Asked once per process: every search resolves its precision.
    if os.environ.get(NATIVE_BF16_ENV, "1") == "0":
        return False
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(bool(check()) for check in checks if check is not None)


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether `device` does bf16 arithmetic in hardware, where bf16 decoding is the faster one: an x86 CPU with
    AVX512-BF16 or AMX. (oneDNN also runs bf16 on plain AVX-512 by emulation, where it is not faster; GPUs are not
    measured yet.)"""
    return torch.device(device).type == "cpu" and cpu_native_bf16()


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> str:
    """"fp32", "bf16" or "int8" for a precision option: "auto" is "bf16" where `native_bf16(device)`, else "fp32";
    "int8" (which computes in bf16) is "auto" where bf16 is not native, with a warning.

    Why transcription defaults to "auto": on the AVX512-BF16 development machine bf16 greedy decoding of AN4 dev
    with the reference model took 0.83-0.90x the time of fp32 at batch 1 and 0.64-0.71x at batch 16, and the
    bundled default model transcribed a 10-minute recording in 0.79x the time, with the same WER and CER on AN4
    dev and FSDD test in both precisions (git show 577362c:bench/RESULTS.md)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "int8" and not native_bf16(device):
        warnings.warn(f"precision 'int8' needs a CPU with native bf16; {device} decodes with precision 'auto'",
                      stacklevel=3)
        precision = "auto"
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision
