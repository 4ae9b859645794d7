"""Bootstrap confidence intervals for ratio metrics such as WER (errors / reference words), resampling utterances.

WER over a set of utterances is sum(errors) / sum(words), not a mean of per-utterance rates, so the bootstrap
resamples whole utterances (with replacement) and recomputes the ratio of the sums each time; the interval is
the percentile interval of those ratios. Seeded: the same inputs and seed give the same interval.

>>> iv = bootstrap_ratio([0, 1, 2, 0], [4, 4, 4, 4], seed=0)
>>> iv.low <= iv.point <= iv.high
True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

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
