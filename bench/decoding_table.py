"""An ESPnet-style RESULTS table: one model, one split, every way to decode it.

Rows: greedy attention, beam, beam + CTC, beam + LM, beam + CTC + LM (the model's recommended weights), CTC
alone (best path); WER / CER / RTF each, fp32, decoded in one process one after another.

    OMP_NUM_THREADS=1 python bench/decoding_table.py MODEL DEV.jsonl [--lm LM.pt] [--beam 10]

The weights (CTC λ, LM β, length bonus γ, normalisation) are the model's recommended decoding (`asr-s2s tune`);
with --lm and a model that carries no LM of its own, that file is used. Tune on dev, report dev and test.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asr_s2s.decoding import DecodeOptions  # noqa: E402
from asr_s2s.evaluate import evaluate_entries  # noqa: E402
from asr_s2s.manifest import read_manifest  # noqa: E402
from asr_s2s.model import load_model  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("manifest")
    ap.add_argument("--lm", help="an LM file, for a model that carries none")
    ap.add_argument("--beam", type=int, help="default: the recommended decoding's")
    args = ap.parse_args()
    model = load_model(args.model)
    rec = model.recommended_decoding.replace(lm=args.lm, precision="fp32")
    beam = args.beam or rec.beam
    lm_weight = rec.lm_weight or 0.2
    has_lm = args.lm is not None or getattr(model, "_lm_payload", None) is not None
    entries, _ = read_manifest(args.manifest, on_error="skip")
    entries = [e.to_dict() for e in entries]
    base = DecodeOptions(beam=beam, length_norm=rec.length_norm, length_bonus=rec.length_bonus, lm=args.lm)
    ctc = rec.ctc_weight or 0.5
    rows = [("greedy (attention)", DecodeOptions()),
            (f"beam {beam}", base),
            (f"beam {beam} + CTC {ctc}", base.replace(ctc_weight=ctc))]
    if has_lm:
        rows += [(f"beam {beam} + LM {lm_weight}", base.replace(lm_weight=lm_weight)),
                 (f"beam {beam} + CTC {ctc} + LM {lm_weight}", base.replace(ctc_weight=ctc, lm_weight=lm_weight))]
    rows.append(("CTC alone (best path)", DecodeOptions(ctc_weight=1.0)))
    print(f"{args.model} on {args.manifest} ({len(entries)} utterances), {time.strftime('%Y-%m-%d')}; "
          f"bonus {rec.length_bonus}, normalisation {rec.length_norm}\n")
    print("| decoding | WER % | CER % | RTF |\n|---|---|---|---|")
    for name, opts in rows:
        res = evaluate_entries(model, entries, options=opts)
        print(f"| {name} | {100 * res.wer:.1f} | {100 * res.cer:.1f} | {res.rtf:.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
