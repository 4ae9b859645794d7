"""Scoring: WER/CER with jiwer (speech), BLEU/chrF with sacrebleu (text), and reports.

``evaluate_entries(model, entries)`` decodes manifest entries (``manifest.read_manifest``) in length-sorted
batches and returns an :class:`EvalResult` whose ``summary()`` is what ``asr-s2s evaluate --json`` prints;
``evaluate_pairs(model, pairs)`` scores a text model on (source, target) pairs.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import jiwer
import torch

from .audio import AudioError, load_audio
from .batching import length_batches
from .decoding import DecodeOptions
from .usage import UsageError

UNREADABLE_AUDIO = "unreadable_audio"  # the manifest's cause code for audio that fails to load
EMPTY_REFERENCE = "empty_reference"  # a reference that the model's text normalization leaves empty


class EvaluationError(UsageError):
    """Nothing to score: the file has no valid utterance (or sentence pair). The message names the file and why."""


@dataclass
class EvalResult:
    """Scores of what was measured. ``wer``/``cer`` are None over zero reference words (characters) and
    ``rtf`` over zero seconds of audio: never a number computed over nothing."""

    wer: Optional[float]
    cer: Optional[float]
    num_utterances: int
    substitutions: int
    deletions: int
    insertions: int
    hits: int
    reference_words: int
    rtf: Optional[float]
    audio_seconds: float
    wall_seconds: float
    skipped: int = 0
    skipped_by_cause: dict[str, int] = field(default_factory=dict)
    utterances: list[dict] = field(default_factory=list, repr=False)

    def summary(self) -> dict:
        """The flat numbers (what ``--json`` prints and recipes report per split)."""
        d = asdict(self)
        d.pop("utterances")
        return d


def score(refs: Sequence[str], hyps: Sequence[str]) -> dict:
    """Corpus-level WER/CER and error counts exactly as jiwer computes them; WER and CER are None when there
    is no reference word (jiwer refuses empty references, and a rate over nothing is not a score)."""
    if not any(r.strip() for r in refs):
        return {"wer": None, "cer": None, "substitutions": 0, "deletions": 0, "insertions": 0, "hits": 0,
                "reference_words": 0}
    words = jiwer.process_words(list(refs), list(hyps))
    chars = jiwer.process_characters(list(refs), list(hyps))
    return {"wer": words.wer, "cer": chars.cer, "substitutions": words.substitutions, "deletions": words.deletions,
            "insertions": words.insertions, "hits": words.hits,
            "reference_words": words.hits + words.substitutions + words.deletions}


@torch.inference_mode()
def evaluate_entries(model, entries: Sequence[dict], beam: int = 1, max_batch_seconds: float = 200.0,
                     max_batch: int = 64, keep_attention: int = 0, precision: str = "fp32",
                     options: DecodeOptions | None = None) -> EvalResult:
    """Decode manifest entries (dicts with audio_filepath, text, optional offset/duration/id).

    Unreadable audio, and references that the model's normalization leaves empty, are skipped and counted
    (``skipped``, ``skipped_by_cause``), each reported on stderr, never fatal. ``rtf`` is wall time
    (loading + features + search) over audio duration. ``precision`` defaults to fp32 so that scores do
    not depend on the machine ("auto", transcription's default, is bf16 on CPUs with native bf16).
    ``options`` (a DecodeOptions) replaces ``beam`` and ``precision`` when given.
    """
    if options is None:
        options = DecodeOptions(beam=beam, precision=precision)
    model.eval()
    sr = model.features.sample_rate
    t0 = time.perf_counter()
    kept: list[dict] = []
    hyps: list[str] = []
    durations: list[float] = []
    attn: dict[int, torch.Tensor] = {}
    skipped: Counter = Counter()
    # Batches from manifest durations; audio is loaded one batch at a time so memory stays bounded.
    for idx in length_batches([float(e.get("duration") or 1.0) for e in entries], max_batch, max_batch_seconds):
        waves, batch_entries = [], []
        for i in idx:
            e = entries[i]
            try:
                off = float(e.get("offset") or 0.0)
                waves.append(load_audio(e["audio_filepath"], sr, offset=off, duration=e.get("duration") if off else None))
                batch_entries.append(e)
            except AudioError as err:  # stderr: stdout carries `evaluate --json`'s one object
                print(f"skipping: {err}", file=sys.stderr)
                skipped[UNREADABLE_AUDIO] += 1
        if not waves:
            continue
        res = model.decode_waves(waves, options)
        for k, e in enumerate(batch_entries):
            if len(attn) < keep_attention and res.attention:
                attn[len(kept)] = res.attention[k].float().cpu()
            kept.append(e)
            hyps.append(model.tokenizer.decode(res.tokens[k]))
            durations.append(len(waves[k]) / sr)
    wall = time.perf_counter() - t0
    refs = [model.tokenizer.normalize(e["text"]) for e in kept]
    empty = [i for i, r in enumerate(refs) if not r.strip()]
    if empty:  # e.g. a transcript of punctuation only: nothing to count errors against
        for i in empty:
            print(f"skipping: {kept[i].get('id') or kept[i]['audio_filepath']}: the reference is empty after "
                  "normalization", file=sys.stderr)
        skipped[EMPTY_REFERENCE] += len(empty)
        keep = [i for i in range(len(kept)) if i not in set(empty)]
        attn = {new: attn[old] for new, old in enumerate(keep) if old in attn}
        kept, hyps, durations, refs = ([xs[i] for i in keep] for xs in (kept, hyps, durations, refs))
    totals = score(refs, hyps)
    utts = []
    for i, e in enumerate(kept):
        s = score([refs[i]], [hyps[i]])
        utts.append({"id": e.get("id", Path(e["audio_filepath"]).stem), "ref": refs[i], "hyp": hyps[i],
                     "errors": s["substitutions"] + s["deletions"] + s["insertions"], "ref_words": s["reference_words"],
                     "duration": durations[i], "attention": attn.get(i)})
    audio_s = sum(durations)
    return EvalResult(num_utterances=len(kept), rtf=wall / audio_s if audio_s > 0 else None, audio_seconds=audio_s,
                      wall_seconds=wall, skipped=sum(skipped.values()), skipped_by_cause=dict(skipped), utterances=utts,
                      **totals)


def wer_by_length(utts: Sequence[dict], bins: int = 5, key: str = "duration") -> list[dict]:
    """Corpus WER within equal-count bins of utterance length (duration in seconds, or source length)."""
    ordered = sorted(utts, key=lambda u: u[key])
    out = []
    for b in range(bins):
        part = ordered[b * len(ordered) // bins : (b + 1) * len(ordered) // bins]
        if part:
            words = sum(u["ref_words"] for u in part)
            out.append({"min": part[0][key], "max": part[-1][key], "utterances": len(part),
                        "wer": sum(u["errors"] for u in part) / max(words, 1)})
    return out


def write_report(result: EvalResult, out_dir: Path, worst: int = 10, summary: Optional[dict] = None) -> None:
    """Per-utterance TSV, jiwer alignments of the worst utterances, WER by length, attention PNGs.
    ``summary`` (default: ``result.summary()``) is what summary.json reports, e.g. with the reader's skips."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "utterances.tsv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["id", "ref", "hyp", "errors", "ref_words", "duration"])
        for u in result.utterances:
            w.writerow([u["id"], u["ref"], u["hyp"], u["errors"], u["ref_words"], f"{u['duration']:.3f}"])
    bad = sorted(result.utterances, key=lambda u: (-u["errors"] / max(u["ref_words"], 1), u["id"]))[:worst]
    bad = [u for u in bad if u["errors"]]
    with open(out_dir / "worst_alignments.txt", "w", encoding="utf-8") as f:
        for u in bad:
            f.write(f"== {u['id']} ({u['errors']} errors)\n")
            f.write(jiwer.visualize_alignment(jiwer.process_words(u["ref"], u["hyp"]), show_measures=False))
            f.write("\n")
    by_len = wer_by_length(result.utterances)
    (out_dir / "summary.json").write_text(json.dumps({**(summary or result.summary()), "wer_by_length": by_len}, indent=2))
    plot_attention([u for u in result.utterances if u.get("attention") is not None], out_dir)


def plot_attention(utts: Sequence[dict], out_dir: Path) -> list[Path]:
    """One PNG per utterance: decoder step (y) against encoder frame (x)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for u in utts:
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.imshow(u["attention"].numpy(), aspect="auto", origin="lower", interpolation="nearest")
        ax.set_xlabel("encoder frame")
        ax.set_ylabel("output token")
        ax.set_title(f"{u['id']}: {u['hyp'][:50]}", fontsize=8)
        fig.tight_layout()
        p = out_dir / f"attention_{u['id']}.png"
        fig.savefig(p, dpi=80)
        plt.close(fig)
        paths.append(p)
    return paths


@torch.inference_mode()
def evaluate_pairs(model, pairs: Sequence[tuple[str, str]], beam: int | None = None, batch_size: int = 64,
                   options: DecodeOptions | None = None) -> dict:
    """Text models: BLEU and chrF (sacrebleu) of translations against references (None over zero pairs).
    Decoding as in ``model.translate``: ``options``, else the model's recommended decoding; ``beam`` on top
    (a beam alone means plain defaults plus that beam: ``beam=1`` is greedy)."""
    import sacrebleu

    t0 = time.perf_counter()
    hyps = model.translate([s for s, _ in pairs], beam=beam, batch_size=batch_size, options=options)
    refs = [t for _, t in pairs]
    if not pairs:
        return {"bleu": None, "chrf": None, "num_sentences": 0, "wall_seconds": time.perf_counter() - t0, "hypotheses": []}
    return {"bleu": sacrebleu.corpus_bleu(hyps, [refs]).score, "chrf": sacrebleu.corpus_chrf(hyps, [refs]).score,
            "num_sentences": len(pairs), "wall_seconds": time.perf_counter() - t0, "hypotheses": hyps}


# ---- what evaluation may report --------------------------------------------------------------------------
def nothing_to_score(report, text: bool = False) -> EvaluationError:
    """The error for a manifest (``text``: a TSV of pairs) from which reading kept nothing, saying why in
    words a user who pointed at the wrong file recognises. ``report`` is the reader's ManifestReport."""
    kind = "sentence pair" if text else "utterance"
    if report.lines == 0:
        why = "the file is empty (no line)"
    elif report.issues and report.issues[0].line == 1 and report.issues[0].cause in ("invalid_json", "invalid_utf8", "bad_line"):
        first = report.issues[0]
        if text:
            why = f"line 1 is not a source<TAB>target pair ({first.cause}): is this a TSV of sentence pairs?"
        elif first.cause == "invalid_utf8":
            why = "line 1 is not UTF-8 text: is this a manifest?"
        else:
            why = "line 1 is not JSON: is this a manifest?"
    else:
        counts = ", ".join(f"{c}: {n}" for c, n in sorted(report.counts.items()))
        why = f"all {report.lines} lines were skipped ({counts}); first: {report.issues[0]}"
    return EvaluationError(f"{report.path}: no valid {kind} to score: {why}")


def count_skips(result: dict, report) -> dict:
    """Merge the reader's skipped lines (per cause) into an evaluation summary, with the line count, so that
    every line of the file is accounted for: ``manifest_lines == num_utterances + skipped``."""
    by_cause = Counter(report.counts)
    by_cause.update(result.get("skipped_by_cause") or {})
    result["skipped"] = sum(by_cause.values())
    result["skipped_by_cause"] = dict(sorted(by_cause.items()))
    result["manifest_lines"] = report.lines
    return result


def skip_problem(result: dict, max_share: float = 0.0) -> Optional[str]:
    """A one-line complaint when more than ``max_share`` of the file's lines were skipped, else None."""
    lines, skipped = result.get("manifest_lines") or 0, result.get("skipped") or 0
    if not skipped or skipped <= max_share * lines:
        return None
    causes = ", ".join(f"{c}: {n}" for c, n in (result.get("skipped_by_cause") or {}).items())
    return (f"{skipped} of {lines} lines skipped ({causes}), more than the allowed {max_share:.0%}: the scores cover only "
            f"what was measured; pass --allow-skips to accept that")


def format_result(result: dict) -> list[str]:
    """``evaluate``'s text output: one ``name: value`` per line; a score over nothing reads "n/a"."""
    out = []
    for k, v in result.items():
        if k == "skipped_by_cause":
            v = ", ".join(f"{c} {n}" for c, n in v.items()) or "none"
        elif v is None:
            v = "n/a (nothing measured)"
        elif isinstance(v, float):
            v = f"{v:.4f}"
        out.append(f"{k:>16s}: {v}")
    return out
