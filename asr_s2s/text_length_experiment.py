"""The seed experiment on text: one context vector against attention as the source sentence grows.

``asr-s2s recipe tatoeba_eng_fra --seed-experiment`` (and ``tatoeba_kor_eng``) runs :func:`run_text_length_experiment`:
two models, the recipe's attention model and the pure context-vector model (``attention: none``: the encoder's
final states, through the bridge, are the decoder's only view of the source), trained

- on the same training pairs, with the same tokenizers (the context-vector run starts from the attention run's
  ``tokenizer.pt``) and the same seed (so the same batches in the same order);
- for the same number of updates (the config's ``max_steps`` / ``epochs``), with no dev set: each model is its
  weights after the last update, none picked by a score;
- matched in parameters: the context-vector model's encoder and decoder widths are scaled together (keeping the
  recipe's decoder/encoder ratio) to the count closest to the attention model's (:func:`matched_none_config`).

Both translate the test split greedily. Tatoeba often has several translations of one source ("Be fair." has six
in French), so the test pairs are grouped by source (:func:`group_by_source`) and each source is scored once
against all of its references (multi-reference BLEU; chrF takes the best reference). The corpus split keeps a
source and all its translations in one split (asr_s2s/corpora/tatoeba.py). Per bin of source length (words;
bins of at least 100 sources, or a fifth of them on a small test set), corpus BLEU and chrF with bootstrap 95%
intervals over sources, and the paired bootstrap of the difference (attention minus context vector), from
sacrebleu's per-sentence statistics (asr_s2s/bootstrap.py).

Writes ``OUT/seed_experiment/{results.json, table.md, seed_experiment.png}``; each run lives in
``OUT/seed_experiment/CELL_ATTENTION/`` (with its ``translations.tsv``) and is skipped when finished.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

from .bootstrap import TEXT_METRICS, bootstrap_score, bootstrap_score_difference, sacrebleu_scorer, sacrebleu_statistics

#: a bin holds at least this many test sources (shorter tails are merged into their neighbour)
MIN_BIN_SOURCES = 100
RESAMPLES = 1000


# ---- the test set ---------------------------------------------------------------------------------------------
def group_by_source(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """``[(source, [reference, ...]), ...]``: one entry per distinct source, in order of first appearance, with its
    distinct references in file order."""
    refs: dict[str, list[str]] = {}
    for src, tgt in pairs:
        r = refs.setdefault(src, [])
        if tgt not in r:
            r.append(tgt)
    return list(refs.items())


def source_length(source: str) -> int:
    """Source length in whitespace words (independent of the tokenizer a model was trained with)."""
    return len(source.split())


def length_bins(lengths: Sequence[int], min_sources: int = MIN_BIN_SOURCES) -> list[tuple[int, int]]:
    """Contiguous bins ``[(lo, hi), ...]`` of the lengths present, each holding at least ``min_sources`` items
    where the data allow: lengths are taken in order and a bin closes once it is full; a last bin that is short
    of the minimum joins the one before it. Deterministic in the lengths."""
    counts: dict[int, int] = {}
    for n in lengths:
        counts[n] = counts.get(n, 0) + 1
    if not counts:
        raise ValueError("length_bins: no lengths")
    bins: list[list[int]] = []  # [lo, hi, count]
    for n in sorted(counts):
        if bins and bins[-1][2] < min_sources:
            bins[-1][1], bins[-1][2] = n, bins[-1][2] + counts[n]
        else:
            bins.append([n, n, counts[n]])
    if len(bins) > 1 and bins[-1][2] < min_sources:
        last = bins.pop()
        bins[-1][1], bins[-1][2] = last[1], bins[-1][2] + last[2]
    return [(lo, hi) for lo, hi, _ in bins]


def bin_label(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo}-{hi}"


# ---- the models -------------------------------------------------------------------------------------------------
def count_text_parameters(model_cfg, vocab_size: int, src_vocab_size: int) -> int:
    """Trainable parameters of a text Seq2Seq built from ``model_cfg`` for these vocabularies."""
    from .seq2seq import Seq2Seq

    cfg = copy.deepcopy(model_cfg)
    cfg.input, cfg.vocab_size, cfg.src_vocab_size = "text", vocab_size, src_vocab_size
    return Seq2Seq(cfg).num_parameters()


def matched_none_config(cfg, target: int, vocab_size: int, src_vocab_size: int):
    """``cfg`` with ``attention: none`` and the encoder width h (decoder width h times the recipe's
    decoder/encoder ratio, so 2h for the recipes' bidirectional encoders) whose parameter count is the closest to
    ``target``. The context-vector decoder lacks the attention and its output combination, so it needs slightly
    wider layers than the attention model for the same count."""
    ratio = cfg.model.decoder.hidden / cfg.model.encoder.hidden

    def build(h: int):
        m = copy.deepcopy(cfg.model)
        m.decoder.attention = "none"
        m.encoder.hidden, m.decoder.hidden = h, max(1, round(h * ratio))
        return m, count_text_parameters(m, vocab_size, src_vocab_size)

    lo, hi = 1, 4 * cfg.model.encoder.hidden
    while lo < hi:  # the count grows with h: the smallest h whose count reaches the target
        mid = (lo + hi) // 2
        if build(mid)[1] >= target:
            hi = mid
        else:
            lo = mid + 1
    best = min((build(h) for h in {max(1, lo - 1), lo}), key=lambda mn: (abs(mn[1] - target), mn[1]))
    out = copy.deepcopy(cfg)
    out.model = best[0]
    return out


def run_key(model_cfg) -> str:
    return f"{model_cfg.decoder.cell}_{model_cfg.decoder.attention}"


def attention_model(cfg, out: Path) -> Path:
    """The experiment's attention run, which is the recipe's own model (same config, data and updates)."""
    return out / "seed_experiment" / run_key(cfg.model) / "model.pt"


def _finished(run: Path) -> bool:
    from .checkpoint import load_checkpoint

    last = run / "checkpoints" / "last.pt"
    return (run / "model.pt").exists() and last.exists() and bool(load_checkpoint(last)["state"].get("done"))


def _digest(sources: Sequence[str]) -> str:
    return hashlib.sha1("\n".join(sources).encode("utf-8")).hexdigest()


def translate_sources(model_path: Path, groups: list[tuple[str, list[str]]]) -> dict:
    """Greedy translations of every source (in ``groups``' order) and the model's size and training record."""
    import torch

    from .model import load_model

    model = load_model(model_path)
    sources = [s for s, _ in groups]
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))  # similar lengths per batch: less padding
    t0 = time.perf_counter()
    out = model.translate([sources[i] for i in order], beam=1)
    hyps = [""] * len(sources)
    for i, h in zip(order, out):
        hyps[i] = h
    meta = torch.load(model_path, map_location="cpu", weights_only=True).get("meta", {})
    m = model.seq2seq.cfg
    return {"parameters": model.seq2seq.num_parameters(), "updates": meta.get("step"),
            "train_seconds": meta.get("train_seconds"), "translate_seconds": time.perf_counter() - t0,
            "encoder_hidden": m.encoder.hidden, "decoder_hidden": m.decoder.hidden,
            "vocab_size": model.tokenizer.vocab_size, "src_vocab_size": model.src_tokenizer.vocab_size,
            "sources_sha1": _digest(sources), "hypotheses": hyps}


# ---- scoring ------------------------------------------------------------------------------------------------------
def summarize(groups: list[tuple[str, list[str]]], hypotheses: dict[str, list[str]], context_key: str,
              attention_key: str, *, bins: list[tuple[int, int]] | None = None, seed: int = 0,
              resamples: int = RESAMPLES, min_sources: int = MIN_BIN_SOURCES) -> dict:
    """Per length bin (and ``all``): each model's corpus BLEU and chrF with a bootstrap interval over sources,
    and the paired bootstrap of attention minus context vector. Every score of a bin (both models and their
    difference) resamples the same sources (seed + the bin's index)."""
    refs = [r for _, r in groups]
    lengths = [source_length(s) for s, _ in groups]
    bins = bins or length_bins(lengths, min_sources)
    stats = {key: {m: sacrebleu_statistics(m, hyps, refs) for m in TEXT_METRICS} for key, hyps in hypotheses.items()}
    scorers = {m: sacrebleu_scorer(m) for m in TEXT_METRICS}
    rows = [(bin_label(lo, hi), [i for i, n in enumerate(lengths) if lo <= n <= hi]) for lo, hi in bins]
    rows.append(("all", list(range(len(groups)))))
    out: dict = {"bins": [], "models": {k: {m: {} for m in TEXT_METRICS} for k in hypotheses},
                 "difference": {m: {} for m in TEXT_METRICS}, "context": context_key, "attention": attention_key,
                 "resamples": resamples}
    for k, (label, idx) in enumerate(rows):
        if not idx:
            continue
        out["bins"].append({"label": label, "sources": len(idx), "references": sum(len(refs[i]) for i in idx),
                            "mean_length": sum(lengths[i] for i in idx) / len(idx)})
        for m in TEXT_METRICS:
            for key in hypotheses:
                iv = bootstrap_score(stats[key][m][idx], scorers[m], resamples=resamples, seed=seed + k)
                out["models"][key][m][label] = iv.to_dict()
            d = bootstrap_score_difference(stats[attention_key][m][idx], stats[context_key][m][idx], scorers[m],
                                           resamples=resamples, seed=seed + k)
            out["difference"][m][label] = d.to_dict()
    return out


def _iv(iv: dict) -> str:
    return f"{iv['point']:.1f} [{iv['low']:.1f}, {iv['high']:.1f}]"


def table(summary: dict, models: dict[str, dict]) -> str:
    """Markdown: the two models (size, updates, time), then one row per source-length bin: BLEU and chrF of each
    model and their difference, each with its bootstrap 95% interval."""
    ctx, att = summary["context"], summary["attention"]
    lines = ["| model | encoder / decoder width | params | updates | train min |", "|---|---|---|---|---|"]
    for key, name in ((ctx, "context vector (attention: none)"), (att, f"attention ({att.split('_', 1)[1]})")):
        m = models[key]
        wall = m.get("wall_seconds")
        lines.append(f"| {name} | {m.get('encoder_hidden')} / {m.get('decoder_hidden')} | {m['parameters']:,} | "
                     f"{m['updates']} | {'-' if wall is None else f'{wall / 60:.1f}'} |")
    head = ["source words", "sources", "refs"] + [f"{m} {who}" for m in ("BLEU", "chrF")
                                                   for who in ("context vector", "attention", "att - cv")]
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for b in summary["bins"]:
        label = b["label"]
        cells = [label if label != "all" else "**all**", str(b["sources"]), str(b["references"])]
        for m in TEXT_METRICS:
            cells += [_iv(summary["models"][ctx][m][label]), _iv(summary["models"][att][m][label]),
                      _iv(summary["difference"][m][label])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(summary: dict, path: Path, title: str = "tatoeba") -> Path:
    """BLEU (left) and chrF (right) against the source-length bin, one line per model, shaded 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = [b for b in summary["bins"] if b["label"] != "all"]
    xs = list(range(len(bins)))
    ctx, att = summary["context"], summary["attention"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric in zip(axes, TEXT_METRICS):
        for key, colour, label in ((ctx, "tab:blue", "context vector (attention: none)"),
                                   (att, "tab:orange", f"attention ({att.split('_', 1)[1]})")):
            ivs = [summary["models"][key][metric][b["label"]] for b in bins]
            ax.plot(xs, [iv["point"] for iv in ivs], marker="o", color=colour, label=label,
                    linestyle="--" if key == ctx else "-")
            ax.fill_between(xs, [iv["low"] for iv in ivs], [iv["high"] for iv in ivs], color=colour, alpha=0.2, linewidth=0)
        ax.set_xticks(xs, [f"{b['label']}\n({b['sources']})" for b in bins])
        ax.set_xlabel("source length, words (test sources)")
        ax.set_ylabel(f"{'BLEU' if metric == 'bleu' else 'chrF'} (greedy; multi-reference), 95% bootstrap")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{title}: one context vector vs attention, by source length", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# ---- the whole experiment -------------------------------------------------------------------------------------------
def run_text_length_experiment(name: str, cfg, out: Path, splits: dict, *, log: Callable[[str], None] = print) -> Path:
    """Train and score the two models (see the module docstring); -> the figure's path."""
    from .manifest import read_tsv_pairs
    from .model import load_model
    from .train import train

    exp = out / "seed_experiment"
    exp.mkdir(parents=True, exist_ok=True)
    test = Path(splits["test"]) if Path(splits["test"]).exists() else Path(splits["dev"])
    pairs, _ = read_tsv_pairs(test, on_error="skip")
    groups = group_by_source(pairs)
    if not groups:
        raise ValueError(f"{test}: no sentence pair to score")

    def run(c, key: str) -> Path:
        r = exp / key
        if not _finished(r):
            c = copy.deepcopy(c)
            # No dev set: every model is its weights after exactly its planned updates, none picked by a score.
            c.data.train, c.data.dev = str(Path(splits["train"]).resolve()), ""
            log(f"[{name}] seed experiment: {key} -> {r}")
            t0 = time.perf_counter()
            train(c, r, resume=(r / "checkpoints" / "last.pt").exists(), quiet=True)
            (r / "wall.json").write_text(json.dumps({"wall_seconds": time.perf_counter() - t0}) + "\n")
            (r / "scores.json").unlink(missing_ok=True)
        return r

    att_key = run_key(cfg.model)
    if att_key.endswith("_none"):
        raise ValueError(f"recipe {name}: the seed experiment compares attention with none; the config has none")
    att_run = run(cfg, att_key)
    ref = load_model(att_run / "model.pt")
    vocab, src_vocab, target = ref.tokenizer.vocab_size, ref.src_tokenizer.vocab_size, ref.seq2seq.num_parameters()
    del ref
    none_cfg = matched_none_config(cfg, target, vocab, src_vocab)
    ctx_key = run_key(none_cfg.model)
    ctx_dir = exp / ctx_key
    if not (ctx_dir / "tokenizer.pt").exists() and not (ctx_dir / "checkpoints" / "last.pt").exists():
        # The same tokenizers for both models: the trainer uses a tokenizer.pt it finds in its folder.
        ctx_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(att_run / "tokenizer.pt", ctx_dir / "tokenizer.pt")
    run(none_cfg, ctx_key)

    models: dict[str, dict] = {}
    for key in (ctx_key, att_key):
        r = exp / key
        scores = r / "scores.json"
        res = json.loads(scores.read_text()) if scores.exists() else None
        if res is None or res.get("sources_sha1") != _digest([s for s, _ in groups]):
            log(f"[{name}] seed experiment: translating {len(groups)} test sources with {key}")
            res = translate_sources(r / "model.pt", groups)
            scores.write_text(json.dumps(res) + "\n")
            with open(r / "translations.tsv", "w", encoding="utf-8") as f:  # source, hypothesis, references
                for (s, refs), h in zip(groups, res["hypotheses"]):
                    f.write("\t".join([s, h, *refs]) + "\n")
        wall = r / "wall.json"
        res["wall_seconds"] = json.loads(wall.read_text())["wall_seconds"] if wall.exists() else None
        models[key] = res
    if models[ctx_key]["updates"] != models[att_key]["updates"]:
        log(f"[{name}] WARNING: the two models made different numbers of updates: "
            f"{models[ctx_key]['updates']} and {models[att_key]['updates']}")

    # At least 100 sources per bin, fewer on a small test set (Korean-English: 174 sources) so that it still
    # gives several bins (three there) rather than one.
    min_sources = min(MIN_BIN_SOURCES, max(1, len(groups) // 5))
    summary = summarize(groups, {k: m["hypotheses"] for k, m in models.items()}, ctx_key, att_key, seed=cfg.seed,
                        min_sources=min_sources)
    for b in summary["bins"]:
        log(f"[{name}] {b['label']} words ({b['sources']} sources): BLEU "
            + ", ".join(f"{k} {summary['models'][k]['bleu'][b['label']]['point']:.1f}" for k in (ctx_key, att_key)))
    (exp / "results.json").write_text(json.dumps(
        {"test": str(test), "pairs": len(pairs), "sources": len(groups),
         "max_references": max(len(r) for _, r in groups),
         "models": {k: {kk: vv for kk, vv in m.items() if kk != "hypotheses"} for k, m in models.items()},
         "summary": summary}, indent=1) + "\n")
    (exp / "table.md").write_text(table(summary, models) + "\n", encoding="utf-8")
    return plot(summary, exp / "seed_experiment.png", title=name)
