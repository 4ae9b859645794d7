"""Tune a model's decoding on a dev set: CTC weight, LM weight, length bonus, normalisation, beam.

Speech (`tune_decoding`): a coordinate search (one option at a time, each step keeping the best so far), scored by dev WER with CER
breaking ties. What it finds is what the model file records as its recommended decoding
(`asr-s2s tune MODEL DEV.jsonl [--lm LM] --write`), so `evaluate` and `transcribe` use it by default. Tune on a
dev split only: the test split must stay unseen.

Translation (`tune_translation`): a small grid, beam {1, 4, 8} x length normalisation (none, per token, GNMT
with alpha 0.6 and 1.0), scored by dev BLEU; the text recipes record the best in model.pt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .decoding import DecodeOptions

CTC_WEIGHTS = (0.0, 0.3, 0.5, 0.7)
LM_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5)
LENGTH_BONUSES = (0.0, 0.5, 1.0, 2.0)
BEAMS = (4, 10)


@dataclass
class TuningResult:
    best: DecodeOptions
    wer: float
    cer: float
    rows: list[dict] = field(default_factory=list)  # every setting tried, in order

    def table(self) -> str:
        head = "| beam | ctc | lm | bonus | norm | WER % | CER % | RTF |\n|---|---|---|---|---|---|---|---|\n"
        return head + "".join(
            f"| {r['beam']} | {r['ctc_weight']} | {r['lm_weight']} | {r['length_bonus']} | {r['length_norm']} | "
            f"{100 * r['wer']:.2f} | {100 * r['cer']:.2f} | {r['rtf']:.4f} |\n" for r in self.rows)


def tune_decoding(model: Any, entries: Sequence[dict], *, lm: str | None = None, has_lm: bool = False,
                  start: DecodeOptions | None = None, log: Callable[[str], None] = print) -> TuningResult:
    """Coordinate search over the decoding options for `model` on dev `entries` (manifest dicts).

    The CTC weight is tried only when the model has a CTC head, the LM weight only with an LM (`lm` a file, or
    `has_lm` for the model's own). Each setting is decoded once in fp32."""
    from .evaluate import evaluate_entries

    can_ctc = getattr(model.seq2seq, "ctc", None) is not None
    use_lm = lm is not None or has_lm
    cur = (start or DecodeOptions(beam=BEAMS[0], length_norm="none")).replace(lm=lm, precision="fp32")
    seen: dict[DecodeOptions, tuple[float, float]] = {}
    rows: list[dict] = []

    def run(opts: DecodeOptions) -> tuple[float, float]:
        if opts not in seen:
            res = evaluate_entries(model, entries, options=opts)
            seen[opts] = (res.wer, res.cer)
            row = {"beam": opts.beam, "ctc_weight": opts.ctc_weight, "lm_weight": opts.lm_weight,
                   "length_bonus": opts.length_bonus, "length_norm": opts.length_norm, "wer": res.wer, "cer": res.cer,
                   "rtf": res.rtf}
            rows.append(row)
            log(f"tune: beam {opts.beam} ctc {opts.ctc_weight} lm {opts.lm_weight} bonus {opts.length_bonus} "
                f"norm {opts.length_norm}: WER {100 * res.wer:.2f} CER {100 * res.cer:.2f}")
        return seen[opts]

    def best_of(options: list[DecodeOptions]) -> DecodeOptions:
        return min(options, key=lambda o: (run(o), options.index(o)))  # earlier (simpler) wins ties

    if can_ctc:
        cur = best_of([cur.replace(ctc_weight=w) for w in CTC_WEIGHTS])
    cur = best_of([cur.replace(length_norm=n) for n in ("none", "length")])
    if use_lm:
        cur = best_of([cur.replace(lm_weight=w) for w in LM_WEIGHTS])
    cur = best_of([cur.replace(length_bonus=g) for g in LENGTH_BONUSES])
    cur = best_of([cur.replace(beam=b) for b in BEAMS])
    wer, cer = run(cur)
    return TuningResult(cur, wer, cer, rows)


# ---- translation: beam x length normalisation, scored by BLEU --------------------------------------------
TEXT_BEAMS = (1, 4, 8)
# (length_norm, alpha) for beams > 1: raw log-probability, the mean per token, and the GNMT penalty
# ((5 + |y|) / 6) ** alpha at the two ends of the range Wu et al. (2016) recommend. Beam 1 is decoded once:
# greedy search picks the same tokens whatever the normalisation (it only rescales the final score).
TEXT_NORMS: tuple[tuple[str, float], ...] = (("none", 1.0), ("length", 1.0), ("gnmt", 0.6), ("gnmt", 1.0))


@dataclass
class TextTuningResult:
    best: DecodeOptions
    bleu: float
    chrf: float
    rows: list[dict] = field(default_factory=list)  # every setting tried, in order

    def table(self) -> str:
        head = "| beam | norm | alpha | BLEU | chrF | seconds |\n|---|---|---|---|---|---|\n"
        return head + "".join(
            f"| {r['beam']} | {r['length_norm'] if r['beam'] > 1 else '-'} | {r['alpha'] if r['beam'] > 1 else '-'} | "
            f"{r['bleu']:.2f} | {r['chrf']:.2f} | {r['seconds']:.1f} |\n" for r in self.rows)


def text_settings(beams: Sequence[int] = TEXT_BEAMS,
                  norms: Sequence[tuple[str, float]] = TEXT_NORMS) -> list[DecodeOptions]:
    """The grid a translation model is tuned over, simplest first (ties go to the earlier setting)."""
    out: list[DecodeOptions] = []
    for b in beams:
        # Beam 1 is plain greedy decoding (DecodeOptions' defaults), whatever the normalisation.
        for opts in ([DecodeOptions(beam=b, length_norm=n, alpha=a) for n, a in norms] if b > 1 else [DecodeOptions()]):
            if opts not in out:
                out.append(opts)
    return out


def tune_translation(model: Any, pairs: Sequence[tuple[str, str]], *, beams: Sequence[int] = TEXT_BEAMS,
                     norms: Sequence[tuple[str, float]] = TEXT_NORMS, log: Callable[[str], None] = print
                     ) -> TextTuningResult:
    """Grid search of beam x length normalisation for a text `model` on dev `pairs` (source, reference): corpus
    BLEU decides, chrF breaks ties, then the simpler (earlier) setting. Every setting is decoded once, in fp32.
    Tune on a dev split only: the test split must stay unseen."""
    from .evaluate import evaluate_pairs

    rows: list[dict] = []
    best: tuple[tuple[float, float], DecodeOptions] | None = None
    for opts in text_settings(beams, norms):
        res = evaluate_pairs(model, pairs, options=opts)
        bleu, chrf = float(res["bleu"] or 0.0), float(res["chrf"] or 0.0)
        rows.append({"beam": opts.beam, "length_norm": opts.length_norm, "alpha": opts.alpha, "bleu": bleu,
                     "chrf": chrf, "seconds": res["wall_seconds"]})
        log(f"tune: beam {opts.beam} norm {opts.length_norm} alpha {opts.alpha}: BLEU {bleu:.2f} chrF {chrf:.2f} "
            f"({res['wall_seconds']:.1f} s)")
        if best is None or (bleu, chrf) > best[0]:
            best = ((bleu, chrf), opts)
    assert best is not None
    return TextTuningResult(best[1], best[0][0], best[0][1], rows)
