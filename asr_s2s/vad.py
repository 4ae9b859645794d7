"""Silero VAD: a trained voice-activity detector for splitting long recordings.

`silero-vad <https://github.com/snakers4/silero-vad>`_ (MIT) ships its TorchScript model inside the
wheel, so it loads offline and needs nothing but torch. It scores 32 ms windows (512 samples at
16 kHz, see SILERO_RATE) with a small conv + LSTM network that carries state from window to window;
:func:`speech_probabilities` streams any number of blocks through it, so a file of any length costs
one float per window (0.45 MB per hour) besides the block being read. Audio at other rates is
resampled to 16 kHz on the fly (soxr's streaming resampler, which keeps the time axis aligned).

Turning probabilities into segments (hysteresis, bridging short pauses, splitting, padding) is
:func:`asr_s2s.transcribe.probability_segments`, shared with the energy VAD's rule.
"""

from __future__ import annotations

import importlib.util
import warnings
from typing import Any, Iterable

import numpy as np

# The model also takes 8 kHz, but on 8 kHz FSDD speech its ends ran later (+0.10 s vs +0.06 s on
# average) and the bundled recognizer's long-form WER was twice as high, so everything runs at 16 kHz.
SILERO_RATE = 16000
INSTALL_HINT = "pip install silero-vad, or choose the energy VAD (--vad energy)"

_model: Any = None


def silero_available() -> bool:
    """Whether the silero-vad package can be imported (without importing it: that loads torch)."""
    return importlib.util.find_spec("silero_vad") is not None


def silero_model() -> Any:
    """The silero TorchScript model from the installed wheel, loaded once per process."""
    global _model
    if _model is None:
        import torch

        threads = torch.get_num_threads()
        try:
            from silero_vad import load_silero_vad
        except ImportError as exc:
            raise ImportError(f"the silero VAD needs the silero-vad package: {INSTALL_HINT}") from exc
        finally:
            # silero_vad.model calls torch.set_num_threads(1) at import, for the whole process: undo it.
            torch.set_num_threads(threads)
        with warnings.catch_warnings():  # its loader uses APIs deprecated upstream (importlib path, torch.jit.load)
            warnings.simplefilter("ignore", DeprecationWarning)
            _model = load_silero_vad()  # the .jit file inside the package: no download
    return _model


def speech_probabilities(blocks: Iterable[np.ndarray], rate: int) -> tuple[np.ndarray, float]:
    """Stream mono float32 blocks at ``rate`` through silero: ``(one speech probability per window,
    the window's length in seconds)``. Window k covers ``[k, k + 1)`` window lengths of the input; the
    last, partial window is zero-padded."""
    import torch

    model = silero_model()
    vad_rate, window = SILERO_RATE, 512
    stream = None
    if vad_rate != rate:
        import soxr

        stream = soxr.ResampleStream(rate, vad_rate, 1, dtype="float32", quality="HQ")
    probs: list[np.ndarray] = []  # one float32 array per block: 4 bytes per window
    rest = np.zeros(0, dtype=np.float32)

    def feed(x: np.ndarray) -> np.ndarray:
        x = np.concatenate([rest, x])
        m = x.shape[0] // window
        frames = torch.from_numpy(np.ascontiguousarray(x[: m * window])).reshape(m, window)
        out = np.empty(m, dtype=np.float32)
        for k in range(m):  # the model is stateful: one window per call, in order
            out[k] = float(model(frames[k], vad_rate))
        probs.append(out)
        return x[m * window :]

    threads = torch.get_num_threads()
    # One thread for the VAD: its ops are tiny (one 32 ms window per call), and more threads only add
    # synchronisation — measured on 2 busy cores: 0.8 s for a minute of audio with 1 thread, 20-40 s with 2.
    torch.set_num_threads(1)
    model.reset_states()
    try:
        with torch.inference_mode():
            for block in blocks:
                block = np.asarray(block, dtype=np.float32)
                rest = feed(stream.resample_chunk(block) if stream is not None else block)
            if stream is not None:
                rest = feed(stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
            if rest.size:
                rest = feed(np.zeros(window - rest.size, dtype=np.float32))
    finally:
        model.reset_states()
        torch.set_num_threads(threads)
    return (np.concatenate(probs) if probs else np.zeros(0, dtype=np.float32)), window / vad_rate


__all__ = ["silero_available", "silero_model", "speech_probabilities", "SILERO_RATE", "INSTALL_HINT"]
