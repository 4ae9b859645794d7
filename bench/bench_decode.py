"""Decoding real-time factor alone: `asr-s2s bench`'s decoding cases in a fresh process, with nothing before them.

`asr-s2s bench` decodes right after ~3 minutes of training. This script runs the same `decode_bench` (log-mel,
CMVN, search, detokenisation; "reference length" caps each utterance at its reference + eos; the cases
interleaved in rounds) on the AN4 dev split alone, so the two can be compared. (On the shared development VM
they measured alike: what moves the figures is the machine's own slow spells; bench/RESULTS.md at 577362c,
seventh landing.)

    python bench/bench_decode.py --model MODEL.pt [--cases greedy_bs1_bf16,greedy_bs16_bf16] [--repeats 3]
                                 [--threads 2] [--rounds 1] [--json F]

Case names: greedy|ctc_greedy|beam<K>, optional _ctc (CTC weight 0.5) and _lm (LM weight 0.3; the model's own LM,
else an untrained one of train-lm's default size), _bs<N>, optional _bf16|_int8 (e.g. beam4_bs16, greedy_bs1_bf16,
beam10_ctc_lm_bs16). Cases with _ctc or _lm decode with length_norm none and length bonus 0.5. With --rounds N
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

from asr_s2s.bench import data_root, decode_bench, joint_cases, load1, machine_info, prepare_manifests  # noqa: E402
from asr_s2s.model import load_model  # noqa: E402

CASE = re.compile(r"^(greedy|ctc_greedy|beam(\d+))(_ctc)?(_lm)?_bs(\d+)(_bf16|_int8)?$")


def parse_case(name: str) -> tuple:
    m = CASE.match(name)
    if not m:
        raise SystemExit(f"bad case {name!r}: expected e.g. greedy_bs1, beam4_bs16_bf16, beam10_ctc_lm_bs16")
    beam = int(m.group(2)) if m.group(2) else 1
    extra: dict = {"ctc_weight": 1.0} if m.group(1) == "ctc_greedy" else {}
    if m.group(3) or m.group(4):
        extra.update(length_norm="none", length_bonus=0.5)
    if m.group(3):
        extra["ctc_weight"] = 0.5
    if m.group(4):
        extra["lm_weight"] = 0.3
    return name, beam, int(m.group(5)), m.group(6)[1:] if m.group(6) else "fp32", extra


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
    if any(c[4].get("lm_weight") for c in cases):
        joint_cases(model)  # gives the model an LM of the default size when it has none
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
                print(f"round {r}  {name:22s} RTF (reference length) {rtf['median']:.5f} "
                      f"[{rtf['min']:.5f}..{rtf['max']:.5f}], as emitted {res[name]['rtf']['median']:.5f}  "
                      f"load {load:.2f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
