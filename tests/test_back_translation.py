"""Back-translation (asr_s2s.back_translation, recipe tatoeba_kor_eng_bt): which target-language sentences are used,
and the recipe's stages end to end on the real corpora (--quick)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from asr_s2s.back_translation import monolingual_sentences, sentence_key
from conftest import data_root

REPO = Path(__file__).resolve().parents[1]


def test_sentence_key_ignores_case_spacing_and_punctuation_only() -> None:
    assert sentence_key("Tell me!") == sentence_key("  tell   ME. ") == "tell me"
    assert sentence_key("Tell me.") != sentence_key("Tell them.")
    assert sentence_key("Ça va?") == sentence_key("ça va") and sentence_key("?!") == ""


def test_monolingual_sentences_drop_duplicates_exclusions_and_stop_at_the_limit() -> None:
    candidates = ["Sit here.", "sit here", "Go!", "Tell me.", "...", "Run.", "Walk.", "Stop."]
    kept, counts = monolingual_sentences(candidates, exclude=["go", "TELL ME!"])
    assert kept == ["Sit here.", "Run.", "Walk.", "Stop."]
    assert counts == {"candidates": 8, "empty": 1, "duplicates": 1, "excluded": 2, "kept": 4}
    kept, counts = monolingual_sentences(candidates, exclude=[], limit=2)
    assert kept == ["Sit here.", "Go!"] and counts["kept"] == 2


def test_back_translation_recipe_quick(tmp_path: Path) -> None:
    root = data_root()
    if not ((root / "tatoeba_kor_eng" / "kor.txt").exists() and (root / "tatoeba_eng_fra" / "eng-fra.txt").exists()):
        pytest.skip("tatoeba_kor_eng and tatoeba_eng_fra not found (set ASR_S2S_DATA)")
    out = tmp_path / "bt"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "asr_s2s.cli", "recipe", "tatoeba_kor_eng_bt", "--quick", "--out", str(out),
                        "--data-dir", str(root), "--set", "threads=1"], capture_output=True, text=True, timeout=600,
                       env=env, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    bt = out / "back_translation"
    assert (bt / "reverse" / "model.pt").exists() and (out / "model.pt").exists()
    # The reverse model learned English -> Korean from this recipe's own pairs, swapped.
    real = [line.split("\t") for line in (out / "data" / "train.tsv").read_text(encoding="utf-8").splitlines()]
    reverse = [line.split("\t") for line in (bt / "reverse_data" / "train.tsv").read_text(encoding="utf-8").splitlines()]
    assert reverse == [[t, s] for s, t in real]
    # No monolingual sentence is a target sentence of any of this recipe's splits (--quick: the first 500).
    mono = (bt / "monolingual.txt").read_text(encoding="utf-8").splitlines()
    assert len(mono) == 500
    ours = {sentence_key(line.split("\t")[1]) for s in ("train", "dev", "test")
            for line in (out / "data" / f"{s}.tsv").read_text(encoding="utf-8").splitlines()}
    assert not ours & {sentence_key(m) for m in mono}
    # The forward model's pairs: the real ones five times, then the tagged synthetic ones.
    synthetic = (bt / "synthetic.tsv").read_text(encoding="utf-8").splitlines()
    combined = (bt / "train.tsv").read_text(encoding="utf-8").splitlines()
    assert combined == ["\t".join(p) for p in real] * 5 + ["◆ " + line for line in synthetic]
    assert str((bt / "train.tsv").resolve()) in (out / "config.yaml").read_text(encoding="utf-8")
