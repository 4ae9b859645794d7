"""Recipes end to end (``--quick``): the contract scripts rely on — EXPDIR/model.pt, the prepared
manifests, one JSON line per evaluated split with the evaluate --json fields plus "split" — and
that a second run skips the finished stages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import data_root

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def recipe(name: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asr_s2s.cli", "recipe", name, "--quick", "--out", str(out),
                           "--data-dir", str(data_root()), *extra], capture_output=True, text=True, timeout=600, env=ENV, cwd=REPO)


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_fsdd_quick(tmp_path: Path, fsdd_corpus: Path) -> None:
    out = tmp_path / "fsdd"
    r = recipe("fsdd", out, "--set", "max_steps=30")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "model.pt").exists()
    for split in ("train", "dev", "test"):
        assert (out / "data" / f"{split}.jsonl").exists()
    lines = json_lines(r.stdout)
    assert [x["split"] for x in lines] == ["dev", "test"]
    for x in lines:
        for key in ("wer", "cer", "num_utterances", "substitutions", "deletions", "insertions", "rtf"):
            assert key in x
    assert lines[1]["num_utterances"] == 300  # the official test split: recordings 0-4 of every speaker
    # Re-running skips preparation and training and prints the same numbers.
    again = recipe("fsdd", out, "--set", "max_steps=30")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "skipping preparation" in again.stdout and "skipping training" in again.stdout
    assert json_lines(again.stdout) == [{**x, "rtf": y["rtf"], "wall_seconds": y["wall_seconds"]}
                                        for x, y in zip(lines, json_lines(again.stdout))]


def test_translation_quick(tmp_path: Path) -> None:
    if not (data_root() / "tatoeba_kor_eng" / "kor.txt").exists():
        pytest.skip("tatoeba_kor_eng not found (set ASR_S2S_DATA)")
    out = tmp_path / "koen"
    r = recipe("tatoeba_kor_eng", out, "--set", "max_steps=20")
    assert r.returncode == 0, r.stderr[-3000:]
    lines = json_lines(r.stdout)
    assert [x["split"] for x in lines] == ["dev", "test"]
    assert all(0.0 <= x["bleu"] <= 100.0 and 0.0 <= x["chrf"] <= 100.0 and x["num_sentences"] > 100 for x in lines)
    # The tuning stage: beam x length normalisation on the first data.max_dev (50) dev pairs, recorded in model.pt
    # and used for both splits.
    assert "first 50 pairs" in (out / "tuning.md").read_text()
    from asr_s2s.model import load_model

    chosen = load_model(out / "model.pt").recommended_decoding
    assert all(x["decoding"]["beam"] == chosen.beam and x["decoding"]["length_norm"] == chosen.length_norm for x in lines)
    t = subprocess.run([sys.executable, "-m", "asr_s2s.cli", "translate", str(out / "model.pt"), "안녕.", "고마워요."],
                       capture_output=True, text=True, timeout=120, env=ENV, cwd=REPO)
    assert t.returncode == 0, t.stderr[-2000:]
    assert len(t.stdout.splitlines()) == 2
    stdin = subprocess.run([sys.executable, "-m", "asr_s2s.cli", "translate", str(out / "model.pt")], input="안녕.\n",
                           capture_output=True, text=True, timeout=120, env=ENV, cwd=REPO)
    assert stdin.returncode == 0 and len(stdin.stdout.splitlines()) == 1


def test_digit_strings_quick(tmp_path: Path, fsdd_corpus: Path) -> None:
    """The plain recipe (no seed experiment): the strings are prepared, a model trained and scored on dev and test."""
    out = tmp_path / "digits"
    r = recipe("digit_strings", out, "--set", "max_steps=10")
    assert r.returncode == 0, r.stderr[-3000:]
    lines = json_lines(r.stdout)
    assert [x["split"] for x in lines] == ["dev", "test"]
    assert lines[1]["num_utterances"] == 16 * 3  # --quick: 3 test strings of every length 1-16
    assert "decoding" not in lines[1]  # greedy attention decoding: no LM, no tuning stage


@pytest.mark.slow
def test_digit_strings_seed_experiment_quick(tmp_path: Path, fsdd_corpus: Path) -> None:
    """The twelve trainings at 10 updates each: the grid's files, and the recipe's model is the grid's LSTM run."""
    out = tmp_path / "digits"
    r = recipe("digit_strings", out, "--seed-experiment", "--set", "max_steps=10")
    assert r.returncode == 0, r.stderr[-3000:]
    exp = out / "seed_experiment"
    for name in ("results.json", "table.md", "seed_experiment.png"):
        assert (exp / name).exists()
    res = json.loads((exp / "results.json").read_text())
    assert set(res) == {"in_distribution", "extrapolation", "summary"}
    for setting in ("in_distribution", "extrapolation"):
        models = res[setting]["models"]
        assert len(models) == 6 and {m["updates"] for m in models.values()} == {10}
        assert all(len(m["per_length"]) == 16 for m in models.values())
    assert (out / "model.pt").read_bytes() == (exp / "in_distribution" / "lstm_dot" / "model.pt").read_bytes()


@pytest.mark.slow
def test_tatoeba_eng_fra_seed_experiment_quick(tmp_path: Path) -> None:
    """The text seed experiment at 10 updates: both models matched and trained alike, its files, and the recipe's
    model is the experiment's attention run."""
    if not (data_root() / "tatoeba_eng_fra" / "eng-fra.txt").exists():
        pytest.skip("tatoeba_eng_fra not found (set ASR_S2S_DATA)")
    out = tmp_path / "enfr"
    r = recipe("tatoeba_eng_fra", out, "--seed-experiment", "--set", "max_steps=10")
    assert r.returncode == 0, r.stderr[-3000:]
    exp = out / "seed_experiment"
    for name in ("results.json", "table.md", "seed_experiment.png"):
        assert (exp / name).exists()
    res = json.loads((exp / "results.json").read_text())
    models = res["models"]
    assert set(models) == {"lstm_none", "lstm_additive"} and {m["updates"] for m in models.values()} == {10}
    n = [m["parameters"] for m in models.values()]
    assert abs(n[0] - n[1]) / max(n) < 0.01
    assert res["sources"] < res["pairs"]  # grouped by source: several references for some
    assert [b["label"] for b in res["summary"]["bins"]][-1] == "all"
    assert (exp / "lstm_none" / "tokenizer.pt").read_bytes() == (exp / "lstm_additive" / "tokenizer.pt").read_bytes()
    # The same weights; the recipe's copy also carries the decoding its tuning stage chose.
    from asr_s2s.checkpoint import load_checkpoint

    recipe_model, run = load_checkpoint(out / "model.pt"), load_checkpoint(exp / "lstm_additive" / "model.pt")
    assert recipe_model["model"].keys() == run["model"].keys()
    assert all(recipe_model["model"][k].equal(run["model"][k]) for k in run["model"])
    assert recipe_model["decoding"] is not None and (out / "tuning.md").exists()


def test_every_recipe_config_loads_and_the_speaker_split_differs_only_where_it_says() -> None:
    """Each recipe's YAML passes the config checks; fsdd_speaker trains fsdd's model on the same level-normalised
    features for as long, adding only waveform augmentation, so the two recipes compare like with like."""
    from asr_s2s.config import load_config
    from asr_s2s.recipes import CONFIG_DIR, RECIPES

    cfgs = {name: load_config(CONFIG_DIR / r.config).to_dict() for name, r in RECIPES.items()}
    official, speaker = cfgs["fsdd"], cfgs["fsdd_speaker"]
    assert speaker["features"] == official["features"] and official["features"]["level_norm"] is True
    assert speaker["data"]["augment"] and not official["data"]["augment"]
    for key in ("model", "optim", "epochs", "seed"):
        assert speaker[key] == official[key]
    assert cfgs["default"]["features"]["level_norm"] is True


def test_a_repeated_corpus_enters_the_joint_train_set_that_many_times_under_new_ids(tmp_path: Path) -> None:
    """train_repeat copies one corpus's training lines into the joint train set with "repK-" id prefixes, so
    the manifest reader keeps every copy (a repeated id would be skipped as a duplicate); its own manifests and
    the dev and test sets are unchanged."""
    from asr_s2s.manifest import read_manifest
    from asr_s2s.recipes import Recipe, prepare_all

    data = tmp_path / "data"
    data.mkdir()
    for corpus in ("an4", "fsdd"):  # the real clips shipped in tests/data, in each corpus's layout
        (data / corpus).symlink_to(REPO / "tests" / "data" / corpus, target_is_directory=True)
    once, thrice = tmp_path / "once", tmp_path / "thrice"
    prepare_all(Recipe("an4+fsdd", "default.yaml"), data, once, ".jsonl")
    prepare_all(Recipe("an4+fsdd", "default.yaml", train_repeat={"an4": 3}), data, thrice, ".jsonl")

    def entries(manifest: Path) -> list:  # read_manifest raises on a repeated id
        return read_manifest(manifest)[0]

    an4 = [e.id for e in entries(once / "an4" / "train.jsonl")]
    assert an4 and [e.id for e in entries(thrice / "an4" / "train.jsonl")] == an4
    joint_once, joint = entries(once / "train.jsonl"), entries(thrice / "train.jsonl")
    fsdd_train = [e.id for e in joint_once if e.id not in an4]
    assert [e.id for e in joint] == an4 + [f"rep{k}-{i}" for k in (2, 3) for i in an4] + fsdd_train
    by_id = {e.id: e for e in joint}
    for i in an4:
        assert by_id[f"rep3-{i}"].text == by_id[i].text and by_id[f"rep3-{i}"].audio_filepath == by_id[i].audio_filepath
    for split in ("dev", "test"):  # the shipped FSDD clips are test recordings
        assert (thrice / f"{split}.jsonl").read_text() == (once / f"{split}.jsonl").read_text()


def test_train_repeat_from_the_command_line_names_corpora_of_the_recipe() -> None:
    """``--train-repeat an4=3 wakeword=2`` becomes the recipe's counts (the refusals are tests/bad_usage.py cases)."""
    from asr_s2s.recipes import RECIPES, _repeat_counts

    assert _repeat_counts("default", RECIPES["default"], ["an4=3", "wakeword=2"]) == {"an4": 3, "wakeword": 2}
    assert _repeat_counts("default", RECIPES["default"], ["an4=1", "an4=4"]) == {"an4": 4}  # the last one counts
