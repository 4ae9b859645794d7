"""Back-translation (Sennrich et al., 2016) for a translation recipe with few pairs: more training pairs made from
target-language text alone.

1. A reverse model (target -> source) is trained on the recipe's own pairs, swapped, with the recipe's config.
2. Target-language sentences come from another corpus (e.g. the English side of Tatoeba English -> French), less any
   sentence that is in this recipe's train, dev or test split (compared case-, space- and punctuation-blind), so
   that no test reference is ever a training target.
3. The reverse model translates them greedily into synthetic sources.
4. The forward model trains on the real pairs, repeated ``real_copies`` times, plus the synthetic pairs with
   ``tag`` in front of their source (tagged back-translation, Caswell et al., 2019: the model can tell the noisy
   synthetic sources from real ones, which are never tagged at test time).

Everything lives in ``OUT/back_translation/`` and each step is skipped when its output exists, as the recipe's own
stages are.
"""

from __future__ import annotations

import re
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .atomic import atomic_write_lines
from .manifest import read_tsv_pairs


@dataclass(frozen=True)
class BackTranslation:
    """Where the target-language text comes from and how the synthetic pairs join the real ones."""

    corpus: str  # a corpus name for corpora.prepare_corpus (e.g. "tatoeba")
    prepare: dict  # its prepare options (e.g. {"direction": "eng-fra"})
    side: int  # the column of its prepared TSVs (all splits are used) in the target language (0: source, 1: target)
    reverse_config: str  # recipe_configs/ file the reverse model trains with
    real_copies: int = 5  # the real pairs are repeated so that they are not drowned by synthetic ones
    tag: str = "◆"
    max_sentences: int | None = None


def sentence_key(text: str) -> str:
    """What two sentences must share to count as the same: NFC, case-folded, punctuation and spacing dropped."""
    return " ".join(re.sub(r"[^\w]+", " ", unicodedata.normalize("NFC", text).casefold()).split())


def monolingual_sentences(candidates: Iterable[str], exclude: Iterable[str], limit: int | None = None) -> tuple[list[str], dict]:
    """The candidates in order, each key once, none whose key is in ``exclude``; and counts of what was dropped."""
    banned = {sentence_key(s) for s in exclude}
    seen: set[str] = set()
    kept: list[str] = []
    counts = {"candidates": 0, "empty": 0, "duplicates": 0, "excluded": 0}
    for s in candidates:
        counts["candidates"] += 1
        k = sentence_key(s)
        if not k:
            counts["empty"] += 1
        elif k in seen:
            counts["duplicates"] += 1
        elif k in banned:
            counts["excluded"] += 1
            seen.add(k)
        else:
            seen.add(k)
            kept.append(" ".join(s.split()))
            if limit is not None and len(kept) >= limit:
                break
    counts["kept"] = len(kept)
    return kept, counts


def _pairs(path: Path) -> list[tuple[str, str]]:
    return read_tsv_pairs(path, on_error="skip")[0]


def back_translate(model_path: Path, sentences: Sequence[str], batch_size: int = 256) -> list[str]:
    """Greedy translations of ``sentences`` in their order (batched by length: less padding)."""
    from .model import load_model

    model = load_model(model_path)
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    out = model.translate([sentences[i] for i in order], beam=1, batch_size=batch_size)
    hyps = [""] * len(sentences)
    for i, h in zip(order, out):
        hyps[i] = " ".join(h.split())
    return hyps


def back_translation_stage(name: str, bt: BackTranslation, splits: dict, out: Path, data_dir: Path,
                           train_reverse: Callable[[Path, Path, Path], Path], quick: bool = False,
                           log: Callable[[str], None] = print) -> Path:
    """Steps 1-4 above; returns the forward model's training TSV (``OUT/back_translation/train.tsv``).

    ``train_reverse(train_tsv, dev_tsv, run_dir)`` trains (or resumes, or skips) the reverse model and returns its
    model file; the recipe supplies it so that the reverse run is trained exactly as its own stages train."""
    from .corpora import prepare_corpus

    bt_dir = out / "back_translation"
    combined = bt_dir / "train.tsv"
    if combined.exists():
        log(f"[{name}] {combined} exists: skipping back-translation")
        return combined
    real = {s: _pairs(Path(splits[s])) for s in ("train", "dev", "test") if Path(splits[s]).exists()}
    reverse = {s: atomic_write_lines(bt_dir / "reverse_data" / f"{s}.tsv", (f"{t}\t{src}" for src, t in rows))
               for s, rows in real.items() if s in ("train", "dev")}
    reverse_model = train_reverse(reverse["train"], reverse.get("dev"), bt_dir / "reverse")

    mono_path = bt_dir / "monolingual.txt"
    if not mono_path.exists():
        paths = prepare_corpus(bt.corpus, data_dir, bt_dir / "monolingual_corpus", **bt.prepare)
        candidates = [r[bt.side] for split in ("train", "dev", "test") if split in paths
                      for r in _pairs(Path(paths[split]))]
        limit = 500 if quick else bt.max_sentences
        kept, counts = monolingual_sentences(candidates, [r[1] for rows in real.values() for r in rows], limit)
        log(f"[{name}] monolingual text from {bt.corpus} {bt.prepare}: {counts} (excluded: the same sentence is a "
            f"target of this recipe's train, dev or test split)")
        atomic_write_lines(mono_path, kept)
    mono = mono_path.read_text(encoding="utf-8").splitlines()

    synthetic_path = bt_dir / "synthetic.tsv"
    if not synthetic_path.exists():
        t0 = time.perf_counter()
        hyps = back_translate(reverse_model, mono)
        pairs = [f"{h}\t{t}" for h, t in zip(hyps, mono) if h]
        log(f"[{name}] back-translated {len(mono)} sentences in {time.perf_counter() - t0:.0f} s "
            f"({len(mono) - len(pairs)} empty translations dropped)")
        atomic_write_lines(synthetic_path, pairs)
    synthetic = synthetic_path.read_text(encoding="utf-8").splitlines()

    real_lines = [f"{r[0]}\t{r[1]}" for r in real["train"]]
    atomic_write_lines(combined, real_lines * bt.real_copies + [f"{bt.tag} {line}" for line in synthetic])
    log(f"[{name}] forward training pairs: {len(real_lines)} real x {bt.real_copies} + {len(synthetic)} synthetic "
        f"(tagged {bt.tag!r}) -> {combined}")
    return combined
