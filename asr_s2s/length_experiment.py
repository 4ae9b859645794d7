"""The seed experiment on spoken digit strings: one context vector against attention as the input grows.

``asr-s2s recipe digit_strings --seed-experiment`` runs :func:`run_length_experiment`: six models (the pure
context-vector decoder, ``attention: none``, and the recipe's attention decoder, each with RNN, LSTM and GRU
cells, matched in parameter count) in two settings kept apart:

- ``in_distribution``: trained on strings of 1-16 digits, tested on 1-16 (the seed's claim);
- ``extrapolation``: trained on 1-8 digits, tested on 1-16 (a different question: lengths never seen).

Every model gets the same number of updates (the config's ``max_steps``) and is scored on the same test
strings, per length: WER with a bootstrap 95% interval over utterances, the teacher-forced and the
free-running (greedy: the decoder fed its own argmax) cross-entropy per token, whose gap shows exposure bias.
Writes ``OUT/seed_experiment/{results.json, table.md, seed_experiment.png}``; each run lives in
``OUT/seed_experiment/SETTING/CELL_ATTENTION/`` and is skipped when finished (a re-run resumes).
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Callable

import torch

from .bootstrap import bootstrap_ratio, bootstrap_ratio_difference

CELLS = ("rnn", "lstm", "gru")
SETTINGS: dict[str, tuple[int, int]] = {"in_distribution": (1, 16), "extrapolation": (1, 8)}  # training lengths
LENGTH_BINS = ((1, 4), (5, 8), (9, 12), (13, 16))  # the table's columns


def count_parameters(model_cfg, vocab_size: int, n_mels: int) -> int:
    """Trainable parameters of a Seq2Seq built from ``model_cfg`` for this vocabulary and feature size."""
    from .seq2seq import Seq2Seq

    cfg = copy.deepcopy(model_cfg)
    cfg.vocab_size, cfg.encoder.input_dim, cfg.input = vocab_size, n_mels, "audio"
    return Seq2Seq(cfg).num_parameters()


def matched_configs(cfg, attention: str | None = None) -> dict[str, object]:
    """``{"CELL_ATT": TrainConfig}`` for the six models, each with one hidden size (encoder per direction and
    decoder alike) chosen so that its parameter count is the closest to the recipe's model (``cfg``: the LSTM
    with ``cfg``'s attention), the reference. RNN cells need a wider state than LSTM ones for the same count, and
    the context-vector decoder a slightly wider one than the attention decoder (it has no output combination)."""
    attention = attention or cfg.model.decoder.attention
    vocab, mels = cfg.data.vocab_size, cfg.features.n_mels
    ref = copy.deepcopy(cfg.model)
    ref.encoder.cell = ref.decoder.cell = "lstm"
    ref.decoder.attention = attention
    target = count_parameters(ref, vocab, mels)
    out = {}
    for att in ("none", attention):
        for cell in CELLS:
            best = None
            for h in range(8, 4 * max(cfg.model.encoder.hidden, cfg.model.decoder.hidden) + 1):
                m = copy.deepcopy(ref)
                m.encoder.cell = m.decoder.cell = cell
                m.decoder.attention = att
                m.encoder.hidden = m.decoder.hidden = h
                n = count_parameters(m, vocab, mels)
                if best is None or abs(n - target) < abs(best[1] - target):
                    best = (m, n)
                if n > target:
                    break  # the count grows with h: nothing wider comes closer
            c = copy.deepcopy(cfg)
            c.model = best[0]
            out[f"{cell}_{att}"] = c
    return out


def subset_manifest(src: Path, dst: Path, min_len: int, max_len: int) -> Path:
    """The lines of manifest ``src`` whose ``num_digits`` is in ``min_len..max_len``, written to ``dst``."""
    lines = [ln for ln in src.read_text(encoding="utf-8").splitlines()
             if ln.strip() and min_len <= json.loads(ln)["num_digits"] <= max_len]
    if not lines:
        raise ValueError(f"{src}: no string of {min_len}-{max_len} digits")
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dst


@torch.inference_mode()
def length_losses(model, entries: list[dict], batch: int = 32) -> dict[str, list[float]]:
    """Per utterance: summed cross-entropy of ``y <eos>`` under teacher forcing (``tf``) and free running
    (``fr``: the decoder reads its own previous argmax, as greedy decoding does, for exactly as many steps as
    the reference has), and the token count (``tokens``). Plain CE (no label smoothing), in nats."""
    from .audio import load_audio
    from .tokens import PAD

    model.eval()
    s2s, sr = model.seq2seq, model.features.sample_rate
    out: dict[str, list[float]] = {"tf": [], "fr": [], "tokens": []}
    for i in range(0, len(entries), batch):
        part = entries[i : i + batch]
        feats, lens = model.features_of([load_audio(e["audio_filepath"], sr) for e in part])  # (B, T, F), (B,)
        src = model.prepare_source(feats, lens)
        ids = [model.tokenizer.encode(model.tokenizer.normalize(e["text"])) for e in part]
        tgt_lens = torch.tensor([len(x) for x in ids])
        tgt = torch.nn.utils.rnn.pad_sequence([torch.tensor(x, dtype=torch.long) for x in ids], batch_first=True,
                                              padding_value=PAD)  # (B, U)
        _, tgt_out = s2s.decoder_io(tgt, tgt_lens)  # (B, U+1): y <eos>
        enc = s2s.encode(src, lens)
        tgt_in, _ = s2s.decoder_io(tgt, tgt_lens)
        for key, tf in (("tf", 1.0), ("fr", 0.0)):
            logits, _ = s2s.decoder(enc, tgt_in, tf)  # (B, U+1, V)
            ce = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), tgt_out, ignore_index=PAD,
                                                   reduction="none")  # (B, U+1)
            out[key] += ce.sum(dim=1).tolist()
        out["tokens"] += (tgt_lens + 1).tolist()
    return out


def score_model(model_path: Path, test_rows: list[dict], seed: int = 0) -> dict:
    """Greedy WER per length with bootstrap intervals, and the teacher-forced / free-running losses per length."""
    from .decoding import DecodeOptions
    from .evaluate import evaluate_entries
    from .model import load_model

    model = load_model(model_path)
    res = evaluate_entries(model, test_rows, options=DecodeOptions(beam=1))  # plain greedy attention decoding
    by_id = {u["id"]: u for u in res.utterances}
    losses = length_losses(model, test_rows)
    per_utt = []
    for k, r in enumerate(test_rows):
        u = by_id.get(r["id"])
        if u is not None:
            per_utt.append({"id": r["id"], "n": r["num_digits"], "errors": u["errors"], "words": u["ref_words"],
                            "hyp": u["hyp"], "tf": losses["tf"][k], "fr": losses["fr"][k], "tokens": losses["tokens"][k]})
    lengths = sorted({u["n"] for u in per_utt})
    per_length = {}
    for n in lengths:
        us = [u for u in per_utt if u["n"] == n]
        iv = bootstrap_ratio([u["errors"] for u in us], [u["words"] for u in us], seed=seed + n)
        toks = sum(u["tokens"] for u in us)
        per_length[n] = {"utterances": len(us), "wer": iv.point, "wer_low": iv.low, "wer_high": iv.high,
                         "tf_loss": sum(u["tf"] for u in us) / toks, "fr_loss": sum(u["fr"] for u in us) / toks}
    meta = torch.load(model_path, map_location="cpu", weights_only=True).get("meta", {})
    return {"parameters": model.seq2seq.num_parameters(), "updates": meta.get("step"),
            "train_seconds": meta.get("train_seconds"), "per_length": per_length, "utterances": per_utt}


def _finished(run: Path) -> bool:
    from .checkpoint import load_checkpoint

    last = run / "checkpoints" / "last.pt"
    return (run / "model.pt").exists() and last.exists() and bool(load_checkpoint(last)["state"].get("done"))


def run_length_experiment(name: str, cfg, out: Path, splits: dict, *, log: Callable[[str], None] = print) -> Path:
    """Train and score the 12 models (see the module docstring); -> the figure's path."""
    from .corpora.common import read_manifest
    from .train import train

    exp = out / "seed_experiment"
    exp.mkdir(parents=True, exist_ok=True)
    test_rows = read_manifest(splits["test"])
    configs = matched_configs(cfg)
    results: dict[str, dict] = {}
    for setting, (lo, hi) in SETTINGS.items():
        train_manifest = subset_manifest(Path(splits["train"]), exp / setting / "train.jsonl", lo, hi)
        results[setting] = {"train_lengths": [lo, hi], "models": {}}
        for key, base in configs.items():
            run = exp / setting / key
            scores = run / "scores.json"
            if not _finished(run):
                c = copy.deepcopy(base)
                # No dev set: every model is its weights after exactly max_steps updates, none picked by a score.
                c.data.train, c.data.dev = str(train_manifest.resolve()), ""
                c.data.cache_dir = str((exp / "feats").resolve())  # one feature cache for all twelve runs
                log(f"[{name}] seed experiment: {setting} {key} -> {run}")
                t0 = time.perf_counter()
                train(c, run, resume=(run / "checkpoints" / "last.pt").exists(), quiet=True)
                (run / "wall.json").write_text(json.dumps({"wall_seconds": time.perf_counter() - t0}) + "\n")
                scores.unlink(missing_ok=True)
            if not scores.exists():
                scores.write_text(json.dumps(score_model(run / "model.pt", test_rows, seed=cfg.seed)) + "\n")
            r = json.loads(scores.read_text())
            r["per_length"] = {int(k): v for k, v in r["per_length"].items()}
            wall = run / "wall.json"
            r["wall_seconds"] = json.loads(wall.read_text())["wall_seconds"] if wall.exists() else None
            results[setting]["models"][key] = r
            pl = r["per_length"]
            log(f"[{name}] {setting} {key}: {r['parameters']} parameters, {r['updates']} updates, WER by length "
                + " ".join(f"{n}:{100 * pl[n]['wer']:.0f}" for n in sorted(pl)))
    summary = summarize(results, seed=cfg.seed)
    (exp / "results.json").write_text(json.dumps(
        {s: {"train_lengths": v["train_lengths"],
             "models": {k: {kk: vv for kk, vv in m.items() if kk != "utterances"} for k, m in v["models"].items()}}
         for s, v in results.items()} | {"summary": summary}, indent=1) + "\n")
    (exp / "table.md").write_text(table(results, summary) + "\n", encoding="utf-8")
    return plot(results, exp / "seed_experiment.png", title=name)


def _pool(m: dict, lo: int, hi: int) -> list[dict]:
    return [u for u in m["utterances"] if lo <= u["n"] <= hi]


def summarize(results: dict, seed: int = 0) -> dict:
    """Per setting and model: pooled WER (with its interval) in each LENGTH_BINS bin; per cell, the paired
    bootstrap of WER(none) - WER(attention) over the longest bin's strings."""
    out: dict[str, dict] = {}
    for setting, v in results.items():
        models = v["models"]
        s = out.setdefault(setting, {"bins": {}, "difference_longest": {}})
        for key, m in models.items():
            s["bins"][key] = {}
            for lo, hi in LENGTH_BINS:
                us = _pool(m, lo, hi)
                if us:
                    iv = bootstrap_ratio([u["errors"] for u in us], [u["words"] for u in us], seed=seed + lo)
                    s["bins"][key][f"{lo}-{hi}"] = iv.to_dict()
        lo, hi = LENGTH_BINS[-1]
        for cell in CELLS:
            keys = [k for k in models if k.startswith(cell + "_")]
            none = next((k for k in keys if k.endswith("_none")), None)
            att = next((k for k in keys if not k.endswith("_none")), None)
            if none and att:
                a = {u["id"]: u for u in _pool(models[none], lo, hi)}
                b = {u["id"]: u for u in _pool(models[att], lo, hi)}
                ids = sorted(set(a) & set(b))
                if ids:
                    d = bootstrap_ratio_difference([a[i]["errors"] for i in ids], [b[i]["errors"] for i in ids],
                                                   [a[i]["words"] for i in ids], seed=seed)
                    s["difference_longest"][cell] = {"bin": f"{lo}-{hi}", **d.to_dict()}
    return out


def _pct(iv: dict) -> str:
    return f"{100 * iv['point']:.1f} [{100 * iv['low']:.1f}, {100 * iv['high']:.1f}]"


def table(results: dict, summary: dict) -> str:
    """Markdown: one row per setting and model; WER % [95% interval] per length bin, losses at the longest length."""
    head = ["setting", "model", "params", "updates", "train min"] + [f"WER {lo}-{hi}" for lo, hi in LENGTH_BINS] + \
           ["TF loss @16", "FR loss @16"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for setting, v in results.items():
        for key, m in v["models"].items():
            bins = summary[setting]["bins"][key]
            last = m["per_length"][max(m["per_length"])]
            wall = m.get("wall_seconds")
            rows.append("| " + " | ".join([
                setting, key.replace("_", " + "), f"{m['parameters']:,}", str(m["updates"]),
                "-" if wall is None else f"{wall / 60:.1f}",
                *[_pct(bins[f"{lo}-{hi}"]) if f"{lo}-{hi}" in bins else "-" for lo, hi in LENGTH_BINS],
                f"{last['tf_loss']:.3f}", f"{last['fr_loss']:.3f}"]) + " |")
    lines = ["\n".join(rows), "", "WER(none) - WER(attention) on the longest strings, paired bootstrap 95% interval:", ""]
    for setting, s in summary.items():
        for cell, d in s["difference_longest"].items():
            lines.append(f"- {setting}, {cell}, {d['bin']} digits: {_pct(d)} points")
    return "\n".join(lines)


def plot(results: dict, path: Path, title: str = "digit_strings") -> Path:
    """WER against length (top) and the free-running minus teacher-forced loss (bottom), one panel per setting;
    one line per model (colour: cell; solid: attention, dashed: none), shaded 95% intervals, the longest
    training length marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"rnn": "tab:blue", "lstm": "tab:orange", "gru": "tab:green"}
    fig, axes = plt.subplots(2, len(results), figsize=(5.5 * len(results), 7), sharex=True, squeeze=False)
    for col, (setting, v) in enumerate(results.items()):
        top, bottom = axes[0][col], axes[1][col]
        for key, m in v["models"].items():
            cell, att = key.split("_", 1)
            ns = sorted(m["per_length"])
            pl = [m["per_length"][n] for n in ns]
            style = dict(color=colours.get(cell, "k"), linestyle="--" if att == "none" else "-")
            label = f"{cell}, {'context vector' if att == 'none' else 'attention: ' + att}"
            top.plot(ns, [100 * p["wer"] for p in pl], marker="o", markersize=3, label=label, **style)
            top.fill_between(ns, [100 * p["wer_low"] for p in pl], [100 * p["wer_high"] for p in pl],
                             color=style["color"], alpha=0.12 if att == "none" else 0.2, linewidth=0)
            bottom.plot(ns, [p["fr_loss"] - p["tf_loss"] for p in pl], marker="o", markersize=3, **style)
        hi = v["train_lengths"][1]
        for ax in (top, bottom):
            ax.axvline(hi + 0.5, color="grey", linestyle=":", linewidth=1)
            ax.grid(alpha=0.3)
        top.text(hi + 0.4, 2, f"trained on {v['train_lengths'][0]}-{hi}", rotation=90, ha="right", va="bottom",
                 fontsize=8, color="grey")
        top.set_title(f"{setting.replace('_', ' ')} (train {v['train_lengths'][0]}-{hi}, test 1-16)")
        top.set_ylabel("WER % (greedy), 95% bootstrap")
        bottom.set_ylabel("free-running - teacher-forced CE (nats/token)")
        bottom.set_xlabel("digits in the string")
        top.set_ylim(0, min(100.0, top.get_ylim()[1]))  # untrained models insert without end: keep the scale
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{title}: one context vector vs attention, by length", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def grid_model(cfg, out: Path) -> Path:
    """The grid's run that is the recipe's own model: in distribution, LSTM cells, the recipe's attention."""
    return out / "seed_experiment" / "in_distribution" / f"lstm_{cfg.model.decoder.attention}" / "model.pt"
