"""Decoding real-time factor alone: `asr-s2s bench`'s decoding cases in a fresh process, with nothing before them.

`asr-s2s bench` decodes right after ~3 minutes of training. This script runs the same `decode_bench` (log-mel,
CMVN, search, detokenisation; "reference length" caps each utterance at its reference + eos; the cases
interleaved in rounds) on the AN4 dev split alone, so the two can be compared. (On the shared development VM
they measured alike: what moves the figures is the machine's own slow spells; bench/RESULTS.md at 577362c,
seventh landing.)

    python bench/bench_decode.py --model MODEL.pt [--cases greedy_bs1_bf16,greedy_bs16_bf16] [--repeats 3]
                                 [--threads 2] [--rounds 1] [--json F]

Case names: greedy|beam4, _bs<N>, optional _bf16 (e.g. beam4_bs16, greedy_bs1_bf16). With --rounds N
the cases are measured N times, one round after another, and every round is reported.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asr_s2s.bench import data_root, decode_bench, load1, machine_info, prepare_manifests  # noqa: E402
from asr_s2s.model import load_model  # noqa: E402

CASE = re.compile(r"^(greedy|beam(\d+))_bs(\d+)(_bf16|_int8)?$")


def parse_case(name: str) -> tuple[str, int, int, str]:
    m = CASE.match(name)
    if not m:
        raise SystemExit(f"bad case {name!r}: expected e.g. greedy_bs1, beam4_bs16_bf16")
    beam = 1 if m.group(1) == "greedy" else int(m.group(2))
    return name, beam, int(m.group(3)), m.group(4)[1:] if m.group(4) else "fp32"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--cases", default="greedy_bs1_bf16,greedy_bs16_bf16,greedy_bs1,greedy_bs16")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cases = [parse_case(c) for c in args.cases.split(",") if c]
    model = load_model(args.model)
    out = {"machine": machine_info(), "model": args.model, "rounds": []}
    with tempfile.TemporaryDirectory(prefix="asr-s2s-bench-decode-") as tmp:
        _, eval_m = prepare_manifests("an4", data_root(args.data_dir), Path(tmp), False)
        for r in range(args.rounds):
            load = load1()
            with torch.no_grad():
                res = decode_bench(model, eval_m, args.repeats, cases)
            res["load1_start"], res["time"] = load, time.strftime("%Y-%m-%d %H:%M:%S")
            out["rounds"].append(res)
            for name, *_ in cases:
                rtf = res[name]["rtf_reference_length"]
                print(f"round {r}  {name:18s} RTF (reference length) {rtf['median']:.5f} "
                      f"[{rtf['min']:.5f}..{rtf['max']:.5f}]  load {load:.2f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
