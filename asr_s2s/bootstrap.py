"""Bootstrap confidence intervals for corpus metrics, resampling sentences (utterances) with replacement.

WER over a set of utterances is sum(errors) / sum(words), not a mean of per-utterance rates, so the bootstrap
resamples whole utterances (with replacement) and recomputes the ratio of the sums each time; the interval is
the percentile interval of those ratios. Seeded: the same inputs and seed give the same interval.

Corpus BLEU and chrF are the same kind of metric: a function of per-sentence sufficient statistics summed over
the corpus (BLEU: hypothesis and closest-reference lengths, matching and total n-gram counts; chrF: hypothesis,
reference and matching character n-gram counts per order). :func:`bootstrap_score` resamples the rows of such a
statistics matrix and applies the score to the summed rows, so a resample costs one sum, never a re-scoring of
the text; :func:`sacrebleu_statistics` gives sacrebleu's own per-sentence statistics (multi-reference included)
and :func:`sacrebleu_scorer` its own score of summed statistics, so the point estimate *is* sacrebleu's corpus score.

>>> iv = bootstrap_ratio([0, 1, 2, 0], [4, 4, 4, 4], seed=0)
>>> iv.low <= iv.point <= iv.high
True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

import numpy as np


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap interval [low, high] at ``confidence``."""

    point: float
    low: float
    high: float
    confidence: float
    resamples: int

    def to_dict(self) -> dict:
        return asdict(self)


def _resample_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) utterance indices drawn with replacement."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _percentiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_ratio(numerators: Sequence[float], denominators: Sequence[float], *, resamples: int = 1000,
                    seed: int = 0, confidence: float = 0.95) -> Interval:
    """sum(numerators) / sum(denominators) with a percentile bootstrap interval over items (utterances).

    numerators, denominators: (N,) per utterance, e.g. word errors and reference words. A resample whose
    denominators sum to zero counts as ratio 0 (it can only happen when some utterances have no words)."""
    num, den = np.asarray(numerators, dtype=np.float64), np.asarray(denominators, dtype=np.float64)
    if num.shape != den.shape or num.ndim != 1 or not len(num):
        raise ValueError(f"bootstrap_ratio: need two equally long non-empty 1-d sequences, got {num.shape} and {den.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"bootstrap_ratio: confidence must be in (0, 1), got {confidence}")
    if resamples < 1:
        raise ValueError(f"bootstrap_ratio: resamples must be >= 1, got {resamples}")
    point = float(num.sum() / den.sum()) if den.sum() > 0 else 0.0
    idx = _resample_indices(len(num), resamples, seed)
    tot_num, tot_den = num[idx].sum(axis=1), den[idx].sum(axis=1)  # (resamples,)
    ratios = np.divide(tot_num, tot_den, out=np.zeros_like(tot_num), where=tot_den > 0)
    low, high = _percentiles(ratios, confidence)
    # The percentile interval of a skewed ratio can miss the point estimate by a rounding hair: widen to hold it.
    return Interval(point, min(low, point), max(high, point), confidence, resamples)


def bootstrap_ratio_difference(num_a: Sequence[float], num_b: Sequence[float], denominators: Sequence[float], *,
                               resamples: int = 1000, seed: int = 0, confidence: float = 0.95) -> Interval:
    """Paired bootstrap of ratio(a) - ratio(b) for two systems scored on the same utterances (same resampled
    utterances for both in every draw): e.g. WER of the context-vector model minus WER of the attention model.
    An interval that excludes 0 is a difference the test set supports at ``confidence``."""
    a, b = np.asarray(num_a, dtype=np.float64), np.asarray(num_b, dtype=np.float64)
    den = np.asarray(denominators, dtype=np.float64)
    if not (a.shape == b.shape == den.shape) or a.ndim != 1 or not len(a):
        raise ValueError("bootstrap_ratio_difference: need three equally long non-empty 1-d sequences")
    if den.sum() <= 0:
        raise ValueError("bootstrap_ratio_difference: the denominators sum to zero")
    point = float((a.sum() - b.sum()) / den.sum())
    idx = _resample_indices(len(a), resamples, seed)
    tot_den = den[idx].sum(axis=1)
    diffs = np.divide(a[idx].sum(axis=1) - b[idx].sum(axis=1), tot_den, out=np.zeros(resamples), where=tot_den > 0)
    low, high = _percentiles(diffs, confidence)
    return Interval(point, min(low, point), max(high, point), confidence, resamples)


# ---- scores of summed per-sentence statistics (BLEU, chrF) -----------------------------------------------------
#: score(summed statistics of some sentences, as Python ints) -> the corpus score of those sentences
StatsScore = Callable[[list[int]], float]


def resample_counts(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) int64: how often each of the n items is drawn in each resample (the draws of
    :func:`bootstrap_ratio` for the same ``n`` and seed)."""
    idx = _resample_indices(n, resamples, seed)
    counts = np.zeros((resamples, n), dtype=np.int64)
    np.add.at(counts, (np.arange(resamples)[:, None], idx), 1)
    return counts


def _stats_matrix(stats: Sequence[Sequence[int]] | np.ndarray, who: str) -> np.ndarray:
    s = np.asarray(stats)
    if s.ndim != 2 or not len(s) or not s.shape[1]:
        raise ValueError(f"{who}: need a non-empty (sentences, statistics) matrix, got shape {s.shape}")
    if not np.issubdtype(s.dtype, np.integer):
        # Counts only: summing floats could make the point estimate differ from the scorer's own sum.
        raise ValueError(f"{who}: statistics must be integer counts, got {s.dtype}")
    return s.astype(np.int64)


def _check(confidence: float, resamples: int, who: str) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"{who}: confidence must be in (0, 1), got {confidence}")
    if resamples < 1:
        raise ValueError(f"{who}: resamples must be >= 1, got {resamples}")


def bootstrap_score(stats: Sequence[Sequence[int]] | np.ndarray, score: StatsScore, *, resamples: int = 1000,
                    seed: int = 0, confidence: float = 0.95) -> Interval:
    """score(column sums of ``stats``) with a percentile bootstrap interval over its rows (sentences).

    stats: (N, K) integer per-sentence statistics; score: the corpus score of summed statistics, e.g.
    :func:`sacrebleu_scorer`. Each resample draws N rows with replacement and scores their sum."""
    s = _stats_matrix(stats, "bootstrap_score")
    _check(confidence, resamples, "bootstrap_score")
    point = float(score(s.sum(axis=0).tolist()))
    sums = resample_counts(len(s), resamples, seed) @ s  # (resamples, K), exact integer sums
    values = np.array([score(row) for row in sums.tolist()], dtype=np.float64)
    low, high = _percentiles(values, confidence)
    return Interval(point, min(low, point), max(high, point), confidence, resamples)


def bootstrap_score_difference(stats_a: Sequence[Sequence[int]] | np.ndarray, stats_b: Sequence[Sequence[int]] | np.ndarray,
                               score: StatsScore, *, resamples: int = 1000, seed: int = 0,
                               confidence: float = 0.95) -> Interval:
    """Paired bootstrap of score(a) - score(b) for two systems on the same sentences (row i of both is sentence
    i): every resample draws the same sentences for both. An interval that excludes 0 is a difference the test
    set supports at ``confidence``."""
    a, b = _stats_matrix(stats_a, "bootstrap_score_difference"), _stats_matrix(stats_b, "bootstrap_score_difference")
    if a.shape != b.shape:
        raise ValueError(f"bootstrap_score_difference: the two systems' statistics differ in shape: {a.shape} vs {b.shape}")
    _check(confidence, resamples, "bootstrap_score_difference")
    point = float(score(a.sum(axis=0).tolist()) - score(b.sum(axis=0).tolist()))
    counts = resample_counts(len(a), resamples, seed)
    diffs = np.array([score(x) - score(y) for x, y in zip((counts @ a).tolist(), (counts @ b).tolist())],
                     dtype=np.float64)
    low, high = _percentiles(diffs, confidence)
    return Interval(point, min(low, point), max(high, point), confidence, resamples)


TEXT_METRICS = ("bleu", "chrf")


def sacrebleu_metric(name: str):
    """sacrebleu's BLEU or CHRF object with its defaults: those of ``sacrebleu.corpus_bleu`` / ``corpus_chrf``,
    which the recipes' evaluation reports (13a tokenisation, exp smoothing; chrF: 6 character orders, beta 2)."""
    from sacrebleu.metrics import BLEU, CHRF

    if name == "bleu":
        return BLEU()
    if name == "chrf":
        return CHRF()
    raise ValueError(f"unknown text metric {name!r}; expected one of {TEXT_METRICS}")


def reference_streams(references: Sequence[Sequence[str]]) -> list[list[Optional[str]]]:
    """Per-sentence reference lists -> sacrebleu's reference streams (stream j holds every sentence's j-th
    reference), padded with None where a sentence has fewer references than the most: sacrebleu drops None
    references (an empty string would count as a reference of length 0)."""
    if not references or any(not refs for refs in references):
        raise ValueError("reference_streams: every sentence needs at least one reference")
    width = max(len(refs) for refs in references)
    return [[refs[j] if j < len(refs) else None for refs in references] for j in range(width)]


def sacrebleu_statistics(metric: str, hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> np.ndarray:
    """(N, K) int64: sacrebleu's per-sentence statistics of ``metric`` ("bleu" or "chrf") for N hypotheses, each
    against all of its references (``references[i]``: one or more strings). Summed and given to
    :func:`sacrebleu_scorer`, they give exactly ``metric.corpus_score(hypotheses, reference_streams(references))``.
    BLEU rows: [hyp length, closest reference length, matches for n=1..4, totals for n=1..4] (matches clipped by
    the largest count among the references); chrF rows: [hyp, ref, match] per order of the best-scoring reference."""
    if len(hypotheses) != len(references):
        raise ValueError(f"sacrebleu_statistics: {len(hypotheses)} hypotheses for {len(references)} reference lists")
    m = sacrebleu_metric(metric)
    # sacrebleu's own per-segment statistics, the ones its corpus_score sums (and its paired bootstrap resamples).
    rows = m._extract_corpus_statistics(list(hypotheses), reference_streams(references))
    return np.array(rows, dtype=np.int64).reshape(len(hypotheses), -1)


def sacrebleu_scorer(metric: str) -> StatsScore:
    """The corpus score of summed :func:`sacrebleu_statistics` rows: sacrebleu's own computation from statistics."""
    m = sacrebleu_metric(metric)
    return lambda summed: float(m._compute_score_from_stats(list(summed)).score)
