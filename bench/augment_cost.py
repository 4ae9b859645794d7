"""Cost of each waveform augmentation part, in ms of one core per second of audio, on real utterances.

    OMP_NUM_THREADS=1 python bench/augment_cost.py [--manifest train.jsonl] [--sr 8000] [--n 60] [--audiomentations]

Each part is timed alone at probability 1 over the same ``--n`` utterances (after one warm-up pass; the reverb
bank's one-off build is reported apart). ``--audiomentations`` also times that library's equivalents where it has
one (it must be importable; it is not a dependency of asr-s2s), so the choice between the two can be re-measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asr_s2s.audio import load_audio  # noqa: E402
from asr_s2s.augment import AugmentConfig, Augmenter, PARTS  # noqa: E402

ONE_PART = {
    "vtlp": {"p": 1.0}, "pitch": {"p": 1.0}, "reverb": {"p": 1.0}, "noise": {"p": 1.0}, "gain": {"p": 1.0},
    "telephone": {"p": 1.0}, "codec": {"p": 1.0},
}


def _time(fn, waves: list[np.ndarray]) -> float:
    for w in waves[:3]:
        fn(w, 0)
    t = time.perf_counter()
    for i, w in enumerate(waves):
        fn(w, i)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifest", default="/tmp/aug_m/train.jsonl")
    ap.add_argument("--sr", type=int, default=8000)
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--audiomentations", action="store_true")
    args = ap.parse_args()
    entries = [json.loads(line) for line in open(args.manifest, encoding="utf-8")][: args.n]
    waves = [load_audio(e["audio_filepath"], args.sr).numpy() for e in entries]
    audio_s = sum(w.size for w in waves) / args.sr
    rows = {}
    for part in PARTS:
        variants = [({part: ONE_PART[part]}, part)]
        if part == "noise":
            variants = [({part: {"p": 1.0, "sources": [s]}}, f"noise:{s}") for s in ("colored", "babble", "nonspeech")]
        if part == "codec":
            variants = [({part: {"p": 1.0, "formats": [f]}}, f"codec:{f}") for f in ("mp3", "ogg", "opus")]
        if part == "telephone":
            variants = [({part: {"p": 1.0, "mulaw": m}}, f"telephone{'+mulaw' if m else ''}") for m in (0.0, 1.0)]
        for cfg, name in variants:
            aug = Augmenter(AugmentConfig.from_dict(cfg), args.sr, seed=0, other_wave=lambda j: waves[j % len(waves)],
                            num_items=len(waves))
            if part == "reverb":
                t = time.perf_counter()
                aug.rirs  # noqa: B018  (the one-off bank build, timed apart)
                rows["reverb bank build (s, once per worker)"] = round(time.perf_counter() - t, 2)
            rows[name] = round(1000 * _time(lambda w, i: aug(w, 0, i), waves) / audio_s, 2)
    if args.audiomentations:
        import audiomentations as am

        lib = {
            "am.AddColorNoise": am.AddColorNoise(p=1.0),
            "am.Gain": am.Gain(p=1.0),
            "am.BandPassFilter(telephone)": am.BandPassFilter(min_center_freq=1000, max_center_freq=1100, p=1.0),
            "am.PitchShift": am.PitchShift(p=1.0),
            "am.Mp3Compression(fast-mp3/lame)": am.Mp3Compression(p=1.0),
        }
        for name, tr in lib.items():
            try:
                rows[name] = round(1000 * _time(lambda w, i: tr(samples=w, sample_rate=args.sr), waves) / audio_s, 2)
            except Exception as exc:  # an optional backend missing: say so in the table
                rows[name] = f"unavailable: {type(exc).__name__}: {exc}"[:120]
    print(f"{len(waves)} utterances, {audio_s:.1f} s of audio at {args.sr} Hz; ms per second of audio (one core):")
    for k, v in rows.items():
        print(f"  {k:40s} {v}")


if __name__ == "__main__":
    main()
