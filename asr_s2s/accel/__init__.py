"""Acceleration: the search interface of a plain Seq2Seq on prepared weights, in fp32, bf16 or int8.

    from asr_s2s.accel import accelerate
    result = greedy_search(accelerate(model, "auto"), src, src_lens)

`accelerate(model, precision)` gives an `Accelerated`, the same interface as seq2seq.inference.Inference (encode,
initial state, step) computing the same function up to rounding. The recognizer (asr_s2s.decoding) decodes
through it; seq2seq/ itself is plain PyTorch and knows nothing of this package.

Precision: "fp32" (the default here), "bf16", "int8", or "auto" (see precision.resolve_precision: bf16 where the
CPU has native bf16 arithmetic, fp32 elsewhere).

- "fp32": the encoder's LSTM layers run on weights reordered for oneDNN once (encoder.py), and the
  LSTM/location decoder's search step on a per-token gate table and oneDNN-packed products (decoder.py).
- "bf16": the encoder runs under bfloat16 autocast on a copy with bf16 weights (its LSTMs, convolutions and
  linears in bf16, ~1.5-2x faster on CPUs with AVX512-BF16 or AMX, and on GPUs) and its outputs are cast back
  to fp32. The search steps stay fp32 (small, latency-bound ops where casts cost more than they save) except the
  LSTM/location decoder's gate product, the step's largest, which runs on a bf16 weight packed for oneDNN where
  the CPU has native bf16. CPUs without native bf16 emulate the encoder's bf16 (expect it slower than fp32).
- "int8" (opt-in, CPUs with native bf16): "bf16" plus weight-only int8 for the LSTM/location decoder's gate,
  query and combine products (per-row int8 weights, bf16 scales and activations, packed.Int8Linear), which are
  faster than the packed bf16/fp32 products at one or two rows: batch-1 greedy decoding of the reference model
  took 0.89-0.93x bf16's time, AN4 dev WER within 0.2 points of bf16's (git show 577362c:bench/RESULTS.md);
  wider steps (batch 16, beam 4) fall back to the bf16 product, where int8 was slower.
- Where the compiled kernels of cpu_kernels are available (AVX512-BF16 and a C compiler; ``ASR_S2S_CPU_KERNELS=0``
  turns them off), "bf16" and "int8" both run the encoder's LSTM layers of a lone utterance and every step of
  the LSTM/location decoder on them instead: bf16 products (query, gate and combine too), the attention and the
  cell in fp32, in one call per step.

What is prepared (packed, reordered, quantized, bf16 copies) is kept beside the model's modules (packed.derived)
and rebuilt when a weight changes; it is never part of a state dict.
"""

from .cpu_kernels import status as kernel_status
from .inference import Accelerated, accelerate
from .precision import PRECISIONS, native_bf16, resolve_precision

__all__ = ["Accelerated", "accelerate", "PRECISIONS", "native_bf16", "resolve_precision", "kernel_status"]
