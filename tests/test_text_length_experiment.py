"""The text seed experiment's scoring (asr_s2s/text_length_experiment.py) and the bootstrap of BLEU / chrF from
per-sentence statistics (asr_s2s/bootstrap.py), on a handful of real Tatoeba sentences (English -> French, with
made-up system outputs): no training, no corpus needed, fast."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import sacrebleu

from asr_s2s.bootstrap import (
    bootstrap_ratio,
    bootstrap_score,
    bootstrap_score_difference,
    reference_streams,
    resample_counts,
    sacrebleu_scorer,
    sacrebleu_statistics,
)
from asr_s2s.corpora import tatoeba
from asr_s2s.text_length_experiment import (
    bin_label,
    count_text_parameters,
    group_by_source,
    length_bins,
    matched_none_config,
    plot,
    summarize,
    table,
)

# Test pairs as a split file holds them: one line per translation, several lines for one source.
PAIRS = [
    ("Be fair.", "Soyez équitable !"),
    ("Be fair.", "Soyez juste !"),
    ("Be fair.", "Sois équitable !"),
    ("I'm tired.", "Je suis fatigué."),
    ("Be fair.", "Sois juste !"),
    ("I'm tired.", "Je suis fatiguée."),
    ("Thank you very much.", "Merci beaucoup."),
    ("Tom is reading a book in the garden.", "Tom lit un livre dans le jardin."),
    ("Where is the station?", "Où est la gare ?"),
    ("Where is the station?", "Où se trouve la gare ?"),
    ("I don't know what he wants from me.", "Je ne sais pas ce qu'il me veut."),
    ("It's raining.", "Il pleut."),
]
GROUPS = group_by_source(PAIRS)
HYPS_A = ["Sois juste !", "Je suis fatigué.", "Merci beaucoup.", "Tom lit un livre au jardin.", "Où est la gare ?",
          "Je ne sais pas ce qu'il veut.", "Il pleut."]
HYPS_B = ["Soyez !", "Je suis malade.", "Merci.", "Tom lit un jardin.", "Où est la station ?", "Je ne sais pas.", "Il pleut."]


def test_group_by_source_keeps_every_reference_once() -> None:
    assert [s for s, _ in GROUPS] == ["Be fair.", "I'm tired.", "Thank you very much.",
                                      "Tom is reading a book in the garden.", "Where is the station?",
                                      "I don't know what he wants from me.", "It's raining."]
    assert GROUPS[0][1] == ["Soyez équitable !", "Soyez juste !", "Sois équitable !", "Sois juste !"]
    assert GROUPS[1][1] == ["Je suis fatigué.", "Je suis fatiguée."]
    assert group_by_source(PAIRS + [("It's raining.", "Il pleut.")]) == GROUPS  # a repeated pair adds nothing
    assert sum(len(r) for _, r in GROUPS) == len(PAIRS)


def test_reference_streams_pad_with_none() -> None:
    streams = reference_streams([r for _, r in GROUPS])
    assert len(streams) == 4 and all(len(s) == len(GROUPS) for s in streams)
    assert [s[1] for s in streams] == ["Je suis fatigué.", "Je suis fatiguée.", None, None]
    with pytest.raises(ValueError):
        reference_streams([["x"], []])


@pytest.mark.parametrize("metric", ["bleu", "chrf"])
@pytest.mark.parametrize("multi", [False, True], ids=["single-ref", "multi-ref"])
def test_point_estimate_is_sacrebleus_corpus_score(metric: str, multi: bool) -> None:
    """Summed per-sentence statistics give exactly sacrebleu's corpus score (==, not approximately)."""
    refs = [r if multi else r[:1] for _, r in GROUPS]
    corpus = getattr(sacrebleu, f"corpus_{metric}")
    for hyps in (HYPS_A, HYPS_B):
        want = corpus(hyps, reference_streams(refs)).score
        stats = sacrebleu_statistics(metric, hyps, refs)
        assert stats.shape[0] == len(hyps) and stats.dtype == np.int64
        iv = bootstrap_score(stats, sacrebleu_scorer(metric), resamples=200, seed=0)
        assert iv.point == want
        assert iv.low <= iv.point <= iv.high
        # and on any subset, as a length bin is
        idx = [0, 2, 5]
        assert sacrebleu_scorer(metric)(stats[idx].sum(axis=0).tolist()) == \
            corpus([hyps[i] for i in idx], reference_streams([refs[i] for i in idx])).score
    # more references never lower BLEU here: "Sois juste !" is the 4th reference of "Be fair."
    if multi and metric == "bleu":
        single = corpus(HYPS_A, [[r[0] for _, r in GROUPS]]).score
        assert corpus(HYPS_A, reference_streams(refs)).score > single


def test_multi_reference_statistics_match_sentence_score() -> None:
    """Row i of the statistics is sacrebleu's own sentence-level statistics against all of source i's references."""
    refs = [r for _, r in GROUPS]
    stats = sacrebleu_statistics("bleu", HYPS_A, refs)
    for i, (h, r) in enumerate(zip(HYPS_A, refs)):
        s = sacrebleu.sentence_bleu(h, r)
        assert stats[i, 0] == s.sys_len and stats[i, 1] == s.ref_len
        assert list(stats[i, 2:6]) == s.counts and list(stats[i, 6:10]) == s.totals
    assert stats[0, 1] == 3  # "Sois juste !" (3 tokens): the closest reference length, not the first's


def test_bootstrap_score_is_seeded_and_paired() -> None:
    refs = [r for _, r in GROUPS]
    a, b = sacrebleu_statistics("chrf", HYPS_A, refs), sacrebleu_statistics("chrf", HYPS_B, refs)
    score = sacrebleu_scorer("chrf")
    iv = bootstrap_score(a, score, resamples=300, seed=5)
    assert bootstrap_score(a, score, resamples=300, seed=5) == iv
    assert bootstrap_score(a, score, resamples=300, seed=6) != iv
    d = bootstrap_score_difference(a, b, score, resamples=300, seed=5)
    assert d.point == pytest.approx(score(a.sum(axis=0).tolist()) - score(b.sum(axis=0).tolist()))
    assert d.low <= d.point <= d.high and d.low > 0  # A is better on every sentence but the identical last one
    same = bootstrap_score_difference(a, a, score, resamples=50, seed=5)
    assert same.point == same.low == same.high == 0.0
    # the same draws as the WER bootstrap for the same seed
    counts = resample_counts(len(a), 50, 7)
    assert counts.shape == (50, len(a)) and (counts.sum(axis=1) == len(a)).all()
    errors, words = np.arange(len(a)), np.full(len(a), 10)
    want = bootstrap_ratio(errors, words, resamples=50, seed=7)
    assert want == bootstrap_ratio_via_counts(errors, words, counts)
    with pytest.raises(ValueError):
        bootstrap_score(a.astype(float), score)
    with pytest.raises(ValueError):
        bootstrap_score_difference(a, b[:3], score)


def bootstrap_ratio_via_counts(errors: np.ndarray, words: np.ndarray, counts: np.ndarray):
    from asr_s2s.bootstrap import Interval, _percentiles

    ratios = (counts @ errors) / (counts @ words)
    point = errors.sum() / words.sum()
    low, high = _percentiles(ratios, 0.95)
    return Interval(float(point), min(low, point), max(high, point), 0.95, len(counts))


def test_length_bins() -> None:
    assert length_bins([1, 2, 2, 3, 3, 3, 4, 4, 9], min_sources=3) == [(1, 2), (3, 3), (4, 9)]
    assert length_bins([1, 2, 2, 3, 3, 3, 4, 9], min_sources=3) == [(1, 2), (3, 9)]  # a short tail joins
    assert length_bins([5, 5, 6], min_sources=10) == [(5, 6)]
    # tatoeba eng-fra test sources (words: count): 1-3 make one bin, 8 is too few alone
    lengths = [1] * 3 + [2] * 96 + [3] * 349 + [4] * 692 + [5] * 693 + [6] * 441 + [7] * 101 + [8] * 10
    assert [bin_label(*b) for b in length_bins(lengths)] == ["1-3", "4", "5", "6", "7-8"]
    with pytest.raises(ValueError):
        length_bins([])


def test_summarize_table_plot(tmp_path) -> None:
    s = summarize(GROUPS, {"lstm_none": HYPS_B, "lstm_additive": HYPS_A}, "lstm_none", "lstm_additive",
                  seed=3, resamples=200, min_sources=2)
    labels = [b["label"] for b in s["bins"]]
    assert labels == ["2", "4", "8", "all"] and sum(b["sources"] for b in s["bins"][:-1]) == len(GROUPS)
    assert s["bins"][-1]["references"] == len(PAIRS)
    for key, hyps in (("lstm_none", HYPS_B), ("lstm_additive", HYPS_A)):
        all_bleu = s["models"][key]["bleu"]["all"]
        assert all_bleu["point"] == sacrebleu.corpus_bleu(hyps, reference_streams([r for _, r in GROUPS])).score
        for m in ("bleu", "chrf"):
            for iv in s["models"][key][m].values():
                assert iv["low"] <= iv["point"] <= iv["high"]
    for m in ("bleu", "chrf"):
        for label, d in s["difference"][m].items():
            want = s["models"]["lstm_additive"][m][label]["point"] - s["models"]["lstm_none"][m][label]["point"]
            assert d["point"] == pytest.approx(want) and d["low"] <= d["point"] <= d["high"]
    again = summarize(GROUPS, {"lstm_none": HYPS_B, "lstm_additive": HYPS_A}, "lstm_none", "lstm_additive",
                      seed=3, resamples=200, min_sources=2)
    assert again == s
    meta = {k: {"parameters": 1000 + i, "updates": 10, "wall_seconds": 60.0, "encoder_hidden": 8, "decoder_hidden": 16}
            for i, k in enumerate(("lstm_none", "lstm_additive"))}
    md = table(s, meta)
    assert md.count("\n| ") >= 2 + 4 and "**all**" in md and "att - cv" in md
    assert plot(s, tmp_path / "fig.png", title="tiny").stat().st_size > 0


def test_matched_none_config_is_closest() -> None:
    from asr_s2s.config import load_config
    from asr_s2s.recipes import CONFIG_DIR

    cfg = load_config(CONFIG_DIR / "tatoeba_eng_fra.yaml", [])
    cfg.model.encoder.hidden, cfg.model.decoder.hidden, cfg.model.decoder.attention_dim = 16, 32, 16
    cfg.model.encoder.input_dim = cfg.model.decoder.embed_dim = 16
    target = count_text_parameters(cfg.model, 60, 50)
    c = matched_none_config(cfg, target, 60, 50)
    assert c.model.decoder.attention == "none" and c.model.decoder.hidden == 2 * c.model.encoder.hidden
    assert c.model.encoder.hidden > 16  # no attention: wider for the same count
    n = count_text_parameters(c.model, 60, 50)
    for h in (c.model.encoder.hidden - 1, c.model.encoder.hidden + 1):
        m = copy.deepcopy(c.model)
        m.encoder.hidden, m.decoder.hidden = h, 2 * h
        assert abs(count_text_parameters(m, 60, 50) - target) >= abs(n - target)
    assert cfg.model.decoder.attention == "additive"  # the recipe's config is not touched


def test_tatoeba_split_keeps_a_sources_translations_together() -> None:
    """Every translation of one source lands in the split of its first (the multi-reference test set relies on it),
    also through chains of shared targets, and the split is the same on every run."""
    pairs = [(f"Sentence {i}.", f"Phrase {i} {j}.") for i in range(300) for j in range(1 + i % 3)]
    pairs += [("Go.", "Va !"), ("Go.", "Marche."), ("Walk.", "Marche."), ("Walk.", "Promène-toi.")]
    splits = tatoeba.assign_splits(pairs)
    assert splits == tatoeba.assign_splits(list(pairs))
    by_source: dict[str, set[str]] = {}
    for (src, _), s in zip(pairs, splits):
        by_source.setdefault(src, set()).add(s)
    assert all(len(v) == 1 for v in by_source.values())
    assert by_source["Go."] == by_source["Walk."]
    assert {"train", "dev", "test"} <= set(splits)
