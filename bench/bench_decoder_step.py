"""Cost of one search step of a model's decoder, and of its encoder on AN4 dev, in isolation.

The decoder step is what greedy and beam search repeat once per output token: ``Decoder.step`` on a
batch of N hypotheses over T' encoder frames, as a search runs it (`asr_s2s.accel`; random encoder states: a step costs the same whatever
their values). The encoder figure is the real-time factor of ``encode`` alone (fp32 and bf16) on the
AN4 dev utterances, batch 16, length-sorted as transcription batches them.

Usage:
    python bench/bench_decoder_step.py MODEL.pt [--dev exp/an4/data/dev.jsonl] [--threads 2] [--json F]
Any checkpoint of the architecture to measure serves (the weights do not change the cost); for the
reference model, e.g. ``asr-s2s recipe an4_reference --out exp/ref --set max_minutes=1``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from asr_s2s.bench import _timings
from asr_s2s.model import load_model
from asr_s2s.accel import accelerate
from asr_s2s.seq2seq.encoder import EncoderOutput


def step_ms(model, n: int, t: int, steps: int = 20, repeats: int = 15) -> dict:
    """Milliseconds per decoder step for n hypotheses over t frames (median, min over repeats)."""
    dec, enc_cfg = model.seq2seq.decoder, model.seq2seq.encoder.cfg
    layers = enc_cfg.layers * (2 if enc_cfg.bidirectional else 1)
    g = torch.Generator().manual_seed(0)
    lens = torch.full((n,), t)
    lens[-1] = max(1, t - 5)
    h = torch.randn(layers, n, enc_cfg.hidden, generator=g)
    final = (h, torch.randn(layers, n, enc_cfg.hidden, generator=g)) if enc_cfg.cell == "lstm" else h
    with torch.inference_mode():
        enc = EncoderOutput(torch.randn(n, t, enc_cfg.output_dim, generator=g), lens, final)
        mem = dec.prepare(enc)
        state0 = dec.init_state(enc, mem)
        tok = torch.full((n,), 3)
        step = accelerate(model.seq2seq, "fp32").stepper()  # what a search steps

        def run() -> None:
            state = state0
            for _ in range(steps):
                logits, state, _ = step(tok, state, mem)
                logits.log_softmax(-1).max(-1)

        ms = [t / steps * 1e3 for t in _timings(run, repeats)]
    return {"n": n, "frames": t, "median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms)}


def encoder_rtf(model, dev: Path, batch: int = 16, repeats: int = 3) -> dict:
    from asr_s2s.audio import load_audio
    from asr_s2s.manifest import read_manifest

    entries, _ = read_manifest(dev, on_error="skip")
    waves = [load_audio(e.audio_filepath, model.features.sample_rate) for e in entries]
    audio = sum(len(w) for w in waves) / model.features.sample_rate
    order = sorted(range(len(waves)), key=lambda i: len(waves[i]))
    batches = []
    for i in range(0, len(order), batch):
        feats, lens = model.features_of([waves[j] for j in order[i:i + batch]])
        batches.append((model.prepare_source(feats, lens), lens))
    out = {"utterances": len(waves), "audio_s": audio, "batch": batch}
    for precision in ("fp32", "bf16"):

        def run(precision: str = precision) -> None:
            with torch.inference_mode():
                for src, lens in batches:
                    accelerate(model.seq2seq, precision).encode(src, lens)

        rtfs = [t / audio for t in _timings(run, repeats)]  # the untimed first pass warms oneDNN's primitive cache
        out[precision] = {"median": statistics.median(rtfs), "min": min(rtfs), "max": max(rtfs)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--dev", type=Path, help="manifest for the encoder figure (e.g. exp/an4/data/dev.jsonl)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model).eval()
    res = {"model": str(args.model), "threads": args.threads, "torch": torch.__version__,
           "steps": [step_ms(model, n, t) for n, t in ((1, 68), (16, 73), (64, 73))]}
    for s in res["steps"]:
        print(f"decoder step, {s['n']:>2} hypotheses x {s['frames']} frames: {s['median_ms']:.3f} ms "
              f"[{s['min_ms']:.3f}..{s['max_ms']:.3f}]")
    if args.dev:
        res["encoder"] = encoder_rtf(model, args.dev)
        for p in ("fp32", "bf16"):
            e = res["encoder"][p]
            print(f"encoder alone, batch 16, {p}: RTF {e['median']:.5f} [{e['min']:.5f}..{e['max']:.5f}]")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
