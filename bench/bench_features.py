"""Feature-extraction throughput: asr_s2s LogMel vs librosa (and torchaudio when installed), same batch, same run;
and the cost of level_norm's step on the same batch.

Reports seconds of audio processed per wall-clock second (median and spread over repeats) and
ratios against the peers. Usage: python bench/bench_features.py [--repeats 7] [--utts 32] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import librosa
import numpy as np
import torch

from asr_s2s.audio import load_audio
from asr_s2s.features import FeatureConfig, LogMel, normalize_level


def real_audio(n: int) -> list[torch.Tensor]:
    root = Path(os.environ.get("ASR_S2S_DATA", Path(__file__).resolve().parents[1] / "data"))
    files = sorted((root / "an4" / "an4" / "wav").rglob("*.sph"))[:n] or sorted((root / "fsdd" / "recordings").glob("*.wav"))[:n]
    if files:
        return [load_audio(f) for f in files]
    rng = np.random.default_rng(0)  # no corpus: speech-length noise bursts keep the benchmark runnable
    return [torch.from_numpy(rng.standard_normal(int(16000 * rng.uniform(1, 5))).astype(np.float32) * 0.1) for _ in range(n)]


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up (allocations, FFT plans)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--utts", type=int, default=32)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    cfg = FeatureConfig()
    waves = real_audio(args.utts)
    audio_s = sum(len(w) for w in waves) / cfg.sample_rate
    lengths = torch.tensor([len(w) for w in waves])
    batch = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    lm = LogMel(cfg)

    def ours() -> None:
        with torch.inference_mode():
            lm(batch, lengths)

    def ours_single() -> None:
        with torch.inference_mode():
            for w in waves:
                lm(w[None])

    np_waves = [w.numpy() for w in waves]

    def librosa_fn() -> None:
        for w in np_waves:
            m = librosa.feature.melspectrogram(y=w, sr=cfg.sample_rate, n_fft=cfg.fft_size, hop_length=cfg.hop_length,
                                               win_length=cfg.win_length, n_mels=cfg.n_mels, power=2.0)
            np.log(np.maximum(m, cfg.log_floor))

    runs = {"asr_s2s (batched)": ours, "asr_s2s (one by one)": ours_single, "librosa": librosa_fn}
    try:
        import torchaudio

        ta = torchaudio.transforms.MelSpectrogram(sample_rate=cfg.sample_rate, n_fft=cfg.fft_size, win_length=cfg.win_length,
                                                  hop_length=cfg.hop_length, n_mels=cfg.n_mels, norm="slaney",
                                                  mel_scale="slaney", pad_mode="constant")

        def ta_fn() -> None:
            with torch.inference_mode():
                torch.log(torch.clamp(ta(batch), min=cfg.log_floor))

        runs["torchaudio (batched)"] = ta_fn
    except Exception:  # torchaudio is optional: its wheels need the CUDA build of torch
        pass

    results = {}
    for name, fn in runs.items():
        t = timed(fn, args.repeats)
        rates = [audio_s / x for x in t]
        results[name] = {"median_audio_s_per_s": statistics.median(rates), "min": min(rates), "max": max(rates)}
    base = results["asr_s2s (batched)"]["median_audio_s_per_s"]
    print(f"{len(waves)} utterances, {audio_s:.1f} s of audio, torch threads={torch.get_num_threads()}, repeats={args.repeats}")
    print(f"{'extractor':24s} {'audio-s/s (median)':>20s} {'spread':>22s} {'asr_s2s / this':>15s}")
    for name, r in results.items():
        print(f"{name:24s} {r['median_audio_s_per_s']:20.0f} {r['min']:10.0f}..{r['max']:<10.0f} {base / r['median_audio_s_per_s']:15.2f}")
    # The level normalisation's own cost, timed alone on the batch's features: on a shared machine the two full
    # extractor rows above differ by more than this step costs.
    with torch.inference_mode():
        feats, frames = lm(batch, lengths)
        step = statistics.median(timed(lambda: normalize_level(feats, frames), args.repeats))
        full = statistics.median(timed(ours, args.repeats))
    print(f"level_norm step alone: {1000 * step:.2f} ms = {step / full:.3f} of the batched log-mel ({1000 * full:.1f} ms)")
    if args.json:
        args.json.write_text(json.dumps({"audio_seconds": audio_s, "threads": torch.get_num_threads(), "results": results,
                                         "level_norm_share": step / full}, indent=2))


if __name__ == "__main__":
    main()
