"""Tatoeba sentence pairs from manythings.org/anki (CC BY 2.0 FR), for text-to-text seq2seq.

Files (one pair per line, tab-separated, English first, an optional third attribution column)::

    data_dir/tatoeba_kor_eng/kor.txt        English<TAB>Korean<TAB>attribution
    data_dir/tatoeba_eng_fra/eng-fra.txt    English<TAB>French        (the official zip calls it fra.txt)

Downloaded from ``https://www.manythings.org/anki/{kor,fra}-eng.zip`` when no local copy exists.

``direction`` picks the file and which side is the source: ``"kor-eng"`` (default), ``"eng-kor"``,
``"eng-fra"`` or ``"fra-eng"`` (``source-target``). Output: ``out_dir/{train,dev,test}.tsv`` with
``source<TAB>target`` lines, in file order.

Normalisation: Unicode NFC; every whitespace character (tabs inside fields, NBSP, the narrow NBSP
U+202F that French uses before ``! ? : ;``) becomes one plain space; leading/trailing space is
stripped. Case and punctuation are kept. Lines with an empty side are dropped; exact duplicate
pairs (after normalisation) are kept once.

Split: pairs that share a sentence on *either* side are grouped (connected components over shared
English or shared other-language sentences), and each group goes to one split by a hash of its
smallest English sentence: SHA-1 -> [0, 1); below ``dev_fraction`` (5%) dev, below
``dev_fraction + test_fraction`` (another 5%) test, else train. So no sentence, source or target,
is in two splits, the split does not depend on the direction (eng-fra and fra-eng share their test
set), and it does not change when other lines are added to the file.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from .common import clean_text, is_prepared, mark_prepared, write_tsv
from .download import Source, find_or_download

log = logging.getLogger(__name__)

NAME = "tatoeba"
#: direction -> (SOURCES key, candidate file names, source is English?)
DIRECTIONS = {
    "kor-eng": ("tatoeba_kor_eng", ("kor.txt",), False),
    "eng-kor": ("tatoeba_kor_eng", ("kor.txt",), True),
    "fra-eng": ("tatoeba_eng_fra", ("eng-fra.txt", "fra.txt"), False),
    "eng-fra": ("tatoeba_eng_fra", ("eng-fra.txt", "fra.txt"), True),
}


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """``[(english, other), ...]`` normalised and de-duplicated, in file order."""
    pairs, seen = [], set()
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            cols = line.rstrip("\r\n").split("\t")
            if len(cols) < 2:
                if line.strip():
                    log.warning("tatoeba: %s:%d: fewer than 2 columns; skipped", path, n)
                continue
            eng, other = clean_text(cols[0]), clean_text(cols[1])
            if not eng or not other or (eng, other) in seen:
                continue
            seen.add((eng, other))
            pairs.append((eng, other))
    return pairs


def _bucket(text: str) -> float:
    return int(hashlib.sha1(text.encode("utf-8")).hexdigest()[:15], 16) / float(1 << 60)


def assign_splits(pairs: list[tuple[str, str]], dev_fraction: float = 0.05, test_fraction: float = 0.05) -> list[str]:
    """The split ("train"/"dev"/"test") of every pair; see the module docstring."""
    parent: dict[tuple[int, str], tuple[int, str]] = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for eng, other in pairs:
        a, b = find((0, eng)), find((1, other))
        if a != b:
            parent[max(a, b)] = min(a, b)
    # group key: smallest English sentence of the component
    key: dict[tuple[int, str], str] = {}
    for eng, _ in pairs:
        r = find((0, eng))
        if r not in key or eng < key[r]:
            key[r] = eng
    out = []
    for eng, _ in pairs:
        h = _bucket(key[find((0, eng))])
        out.append("dev" if h < dev_fraction else "test" if h < dev_fraction + test_fraction else "train")
    return out


def prepare(
    data_dir: Path,
    out_dir: Path,
    *,
    direction: str = "kor-eng",
    dev_fraction: float = 0.05,
    test_fraction: float = 0.05,
    download: bool = True,
    source: Source | None = None,
    force: bool = False,
) -> dict[str, Path]:
    """Write ``out_dir/{train,dev,test}.tsv`` (``source<TAB>target``) and return their paths."""
    if direction not in DIRECTIONS:
        raise ValueError(f"tatoeba: direction must be one of {', '.join(DIRECTIONS)}, not {direction!r}")
    if not (0 <= dev_fraction and 0 <= test_fraction and dev_fraction + test_fraction < 1):
        raise ValueError("tatoeba: dev_fraction + test_fraction must lie in [0, 1)")
    corpus, names, eng_first = DIRECTIONS[direction]
    root = find_or_download(corpus, data_dir, download_missing=download, source=source)
    path = next((root / n for n in names if (root / n).is_file()), None)
    if path is None:
        raise FileNotFoundError(f"tatoeba: none of {names} in {root}")
    out_dir = Path(out_dir)
    key = {"corpus": NAME, "file": str(path.resolve()), "size": path.stat().st_size, "direction": direction,
           "dev_fraction": dev_fraction, "test_fraction": test_fraction}
    if not force and (done := is_prepared(out_dir, key)):
        return done
    pairs = read_pairs(path)
    splits = assign_splits(pairs, dev_fraction, test_fraction)
    out = {}
    for split in ("train", "dev", "test"):
        rows = [(e, o) if eng_first else (o, e) for (e, o), s in zip(pairs, splits) if s == split]
        out[split] = write_tsv(out_dir / f"{split}.tsv", rows)
    mark_prepared(out_dir, key, out)
    return out
