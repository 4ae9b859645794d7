"""The ``asr-s2s`` command: one verb per job. Each verb imports its module lazily so ``--help`` is instant."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _cmd_features(args: argparse.Namespace) -> int:
    """Print duration, rate and log-mel shape/statistics of audio files (a quick check of the frontend)."""
    import torch

    from .audio import AudioError, audio_info, load_audio
    from .features import FeatureConfig, LogMel

    lm = LogMel(FeatureConfig(n_mels=args.n_mels))
    failed = 0
    for path in args.paths:
        try:
            rate, frames, channels = audio_info(path)
            wave = load_audio(path, lm.cfg.sample_rate)
        except AudioError as err:
            print(f"error: {err}", file=sys.stderr)
            failed += 1
            continue
        with torch.inference_mode():
            feats, _ = lm(wave[None])
        print(json.dumps({"path": str(path), "sample_rate": rate, "channels": channels, "duration": round(frames / rate, 3),
                          "frames": feats.shape[1], "n_mels": feats.shape[2], "mean": round(float(feats.mean()), 3)}))
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="asr-s2s", description="Sequence-to-sequence speech recognition and translation.")
    ap.add_argument("--version", action="version", version=f"%(prog)s {__import__('asr_s2s').__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("features", help="inspect audio files: duration, rate, log-mel shape")
    p.add_argument("paths", nargs="+", type=Path)
    p.add_argument("--n-mels", type=int, default=80)
    p.set_defaults(func=_cmd_features)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if not getattr(args, "func", None):
        ap.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
