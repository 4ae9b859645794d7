"""The training pipeline on real FSDD audio: config overrides, a short run's artefacts, 2-process
gloo DDP parity with one process, and ``evaluate --json`` agreeing with jiwer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jiwer
import pytest
import torch
import yaml

from asr_s2s.checkpoint import load_checkpoint
from asr_s2s.config import TrainConfig, apply_overrides, load_config
from asr_s2s.manifest import read_manifest, write_manifest

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "model.encoder.hidden=32", "model.encoder.layers=1", "model.encoder.conv_channels=8", "model.decoder.hidden=32",
    "model.decoder.embed_dim=16", "threads=1", "log_every=1",
]


def small_manifest(files: list[Path], out: Path) -> Path:
    entries = []
    import soundfile as sf

    words = "zero one two three four five six seven eight nine".split()
    for f in files:
        entries.append({"audio_filepath": str(f), "duration": sf.info(str(f)).duration, "text": words[int(f.name[0])], "id": f.stem})
    write_manifest(out, entries)
    return out


def cli(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asr_s2s.cli", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, cwd=REPO)


def test_config_overrides_and_yaml_round_trip(tmp_path: Path) -> None:
    cfg = load_config(REPO / "asr_s2s/recipe_configs/fsdd.yaml", ["optim.lr=3e-4", "model.encoder.layers=1", "data.speed_perturb=true"])
    assert cfg.optim.lr == 3e-4 and cfg.model.encoder.layers == 1 and cfg.data.speed_perturb is True
    cfg.save(tmp_path / "c.yaml")
    again = TrainConfig.from_dict(yaml.safe_load((tmp_path / "c.yaml").read_text()))
    assert again.to_dict() == cfg.to_dict()
    with pytest.raises(ValueError, match="unknown config keys"):
        load_config(None, ["optim.lrr=1"])
    with pytest.raises(ValueError, match="not key=value"):
        apply_overrides({}, ["optim.lr"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, fsdd_files: list[Path]) -> dict:
    """A tiny model trained for a few dozen steps on 24 real utterances (dev = 16 others)."""
    root = tmp_path_factory.mktemp("train")
    train = small_manifest(fsdd_files[:24], root / "train.jsonl")
    dev = small_manifest(fsdd_files[24:40], root / "dev.jsonl")
    out = root / "exp"
    # One --set with several values and repeated --set both apply (state["step"] == 30 below checks it).
    r = cli("train", str(REPO / "asr_s2s/recipe_configs/fsdd.yaml"), "--out", str(out), "--set", f"data.train={train}",
            f"data.dev={dev}", "max_steps=30", "max_minutes=null", "epochs=30",
            "--set", "data.max_frames=2000", *[a for t in TINY for a in ("--set", t)])
    assert r.returncode == 0, r.stderr[-2000:]
    return {"out": out, "train": train, "dev": dev}


def test_training_writes_model_metrics_curve(trained: dict) -> None:
    out = trained["out"]
    for name in ("model.pt", "metrics.jsonl", "learning_curve.png", "config.yaml", "checkpoints/last.pt", "tokenizer.pt"):
        assert (out / name).exists(), name
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in recs if "loss" in r and "event" not in r]
    assert len(losses) >= 20 and losses[-1] < losses[0]  # it learns
    assert any(r.get("event") == "epoch" and "wer" in r for r in recs)
    # The budget (max_steps=30) ends the run: the steps since the last epoch end still get a dev check.
    assert [r for r in recs if r.get("event") == "epoch"][-1]["step"] == 30
    state = load_checkpoint(out / "checkpoints" / "last.pt")["state"]
    assert state["step"] == 30 and state["done"]


def test_evaluate_json_matches_jiwer(trained: dict) -> None:
    r = cli("evaluate", str(trained["out"] / "model.pt"), str(trained["dev"]), "--json", "--report", str(trained["out"] / "rep"))
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    for key in ("wer", "cer", "num_utterances", "substitutions", "deletions", "insertions", "rtf"):
        assert key in res
    rows = [line.split("\t") for line in (trained["out"] / "rep" / "utterances.tsv").read_text().splitlines()[1:]]
    refs, hyps = [x[1] for x in rows], [x[2] for x in rows]
    words = jiwer.process_words(refs, hyps)
    assert res["num_utterances"] == len(rows) == 16
    assert res["wer"] == pytest.approx(words.wer) and res["cer"] == pytest.approx(jiwer.cer(refs, hyps))
    assert (res["substitutions"], res["deletions"], res["insertions"]) == (words.substitutions, words.deletions, words.insertions)
    # The same numbers from Python.
    from asr_s2s.evaluate import evaluate_entries
    from asr_s2s.model import load_model

    entries, _ = read_manifest(trained["dev"])
    py = evaluate_entries(load_model(trained["out"] / "model.pt"), [e.to_dict() for e in entries])
    assert py.wer == pytest.approx(res["wer"]) and py.cer == pytest.approx(res["cer"])
    # --precision reaches the search: the CLI's bf16 scores are Python's bf16 scores.
    r = cli("evaluate", str(trained["out"] / "model.pt"), str(trained["dev"]), "--json", "--precision", "bf16")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    py = evaluate_entries(load_model(trained["out"] / "model.pt"), [e.to_dict() for e in entries], precision="bf16")
    assert py.wer == pytest.approx(res["wer"]) and py.cer == pytest.approx(res["cer"])


def test_refuses_to_overwrite_a_run_without_resume(trained: dict) -> None:
    r = cli("train", str(trained["out"] / "config.yaml"), "--out", str(trained["out"]))
    assert r.returncode == 2 and "--resume" in r.stderr


def test_ddp_two_processes_match_one(tmp_path: Path, fsdd_files: list[Path]) -> None:
    """2 gloo processes, each with half of every global batch, take the same steps as 1 process.

    Adam's eps is set large here: with the default 1e-8, Adam turns float-summation noise on
    near-zero gradients (which legitimately differs between 1 and 2 processes) into steps of
    size lr, so no tight parameter comparison would be meaningful. With eps=1 the update is
    proportional to the (momentum-averaged) gradient, and any real gradient mismatch shows."""
    train = small_manifest(fsdd_files[:32], tmp_path / "train.jsonl")
    common = ["--set", f"data.train={train}", "--set", "data.dev=", "--set", "max_steps=4", "--set", "max_minutes=null",
              "--set", "data.max_frames=1500", "--set", "data.spec_augment=false", "--set", "model.encoder.dropout=0",
              "--set", "model.decoder.dropout=0", "--set", "checkpoint_every=0", "--set", "optim.eps=1.0",
              "--set", "optim.lr=0.05", *[a for t in TINY for a in ("--set", t)]]
    cfg = str(REPO / "asr_s2s/recipe_configs/fsdd.yaml")
    one = cli("train", cfg, "--out", str(tmp_path / "one"), *common)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "asr_s2s.cli", "train", cfg,
         "--out", str(tmp_path / "two"), *common],
        capture_output=True, text=True, timeout=300, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert two.returncode == 0, two.stderr[-3000:]
    a = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")
    assert a["state"]["step"] == b["state"]["step"] == 4
    wa, wb = a["model"]["model"], b["model"]["model"]
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=2e-5, rtol=1e-4, msg=lambda m: f"{k}: {m}")


def test_the_dev_score_can_decode_with_the_ctc_head(tmp_path: Path, fsdd_files: list[Path]) -> None:
    """``eval_ctc_weight``: the per-epoch dev score that picks the kept epoch searches with the CTC head. With weight 1
    and beam 1 that is CTC best-path decoding, so the logged WER is the one `evaluate --ctc-weight 1` gives the kept
    model, not its greedy attention WER."""
    from asr_s2s.decoding import DecodeOptions
    from asr_s2s.evaluate import evaluate_entries
    from asr_s2s.model import load_model
    from asr_s2s.train import train

    train_m = small_manifest(fsdd_files[:16], tmp_path / "train.jsonl")
    dev_m = small_manifest(fsdd_files[16:28], tmp_path / "dev.jsonl")
    cfg = load_config(REPO / "asr_s2s/recipe_configs/fsdd.yaml", [
        f"data.train={train_m}", f"data.dev={dev_m}", "epochs=2", "max_steps=null", "max_minutes=null",
        "data.max_frames=300", "optim.warmup_steps=3", "checkpoint_every=0", "average_last=0",
        "eval_beam=1", "eval_ctc_weight=1", *TINY])
    model_path = train(cfg, tmp_path / "exp", quiet=True)
    logged = [json.loads(line) for line in (tmp_path / "exp" / "metrics.jsonl").read_text().splitlines()]
    epochs = [e for e in logged if e.get("event") == "epoch"]
    kept = next(e for e in epochs if e["wer"] == min(x["wer"] for x in epochs))  # the first best epoch is kept
    model = load_model(model_path)
    dev = [e.to_dict() for e in read_manifest(dev_m)[0]]
    ctc = evaluate_entries(model, dev, options=DecodeOptions(beam=1, ctc_weight=1.0))
    attention = evaluate_entries(model, dev, options=DecodeOptions(beam=1))
    assert (kept["wer"], kept["cer"]) == pytest.approx((ctc.wer, ctc.cer))
    assert (ctc.wer, ctc.cer) != pytest.approx((attention.wer, attention.cer))  # the two searches are told apart


def test_a_ctc_dev_score_needs_a_ctc_head() -> None:
    with pytest.raises(ValueError, match="eval_ctc_weight 0.5 needs a CTC head"):
        load_config(REPO / "asr_s2s/recipe_configs/fsdd.yaml", ["eval_ctc_weight=0.5", "model.ctc_weight=0"])
    with pytest.raises(ValueError, match=r"config eval_ctc_weight must be a number in \[0, 1\]"):
        load_config(REPO / "asr_s2s/recipe_configs/fsdd.yaml", ["eval_ctc_weight=1.5"])
