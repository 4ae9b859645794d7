"""Reproducible training: the length of a run and its learning-rate schedule are counted in updates.

Real (tiny) trainings on FSDD clips, in process: one thread against two threads on a machine whose clock
makes every step take 15 s (the trainer's clock only, see ``SlowClock``) end at the same update with the
same learning rate at every update; a ``max_minutes`` cap that fires stops the run early, marks it
``cut_short`` everywhere its result is read, and leaves the schedule of the updates it did take unchanged.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

import asr_s2s.train as train_mod
from asr_s2s.checkpoint import load_checkpoint
from asr_s2s.config import TrainConfig, load_config
from asr_s2s.recipes import _cut_short
from asr_s2s.train import lr_factor, planned_steps, train
from test_train import TINY, small_manifest

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 3


class SlowClock:
    """Stands in for the ``time`` module inside asr_s2s.train: every ``perf_counter()`` reading is ``tick``
    seconds after the previous one, so each training step adds exactly ``tick`` to ``train_seconds`` — a
    machine far slower than this one, deterministically, without sleeping."""

    def __init__(self, tick: float):
        self.now, self.tick = 0.0, tick

    def perf_counter(self) -> float:
        self.now += self.tick
        return self.now


def config(train_manifest: Path, *extra: str) -> TrainConfig:
    return load_config(REPO / "asr_s2s/recipe_configs/fsdd.yaml", [
        f"data.train={train_manifest}", "data.dev=", f"epochs={EPOCHS}", "max_steps=null", "max_minutes=null",
        "data.max_frames=300", "optim.warmup_steps=3", "checkpoint_every=0", "average_last=0", *TINY, *extra])


def lr_log(out: Path) -> dict[int, float]:
    """Learning rate of every update (log_every=1): {step after the update: lr it used}."""
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["lr"] for r in recs if "lr" in r and "event" not in r}


def events(out: Path, name: str) -> list[dict]:
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r.get("event") == name]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, fsdd_files: list[Path]) -> dict:
    root = tmp_path_factory.mktemp("schedule")
    manifest = small_manifest(fsdd_files[:24], root / "train.jsonl")
    threads = torch.get_num_threads()
    mp = pytest.MonkeyPatch()
    try:
        fast = train(config(manifest, "threads=1"), root / "fast", quiet=True).parent
        mp.setattr(train_mod, "time", SlowClock(15.0))
        slow = train(config(manifest, "threads=2"), root / "slow", quiet=True).parent
        # 15 s per step: the 105-second cap (exact in binary) fires after the 7th update, before the end of the run.
        capped = train(config(manifest, "threads=1", "max_minutes=1.75"), root / "capped", quiet=True).parent
    finally:
        mp.undo()
        torch.set_num_threads(threads)  # the trainer sets the process-wide count
    return {"fast": fast, "slow": slow, "capped": capped, "manifest": manifest}


def test_lr_factor_depends_on_update_counts_only() -> None:
    cfg = load_config(None, ["optim.warmup_steps=10", "optim.min_lr_ratio=0.05", "optim.schedule=cosine"])
    curve = [lr_factor(cfg, s, 100) for s in range(101)]
    assert curve == [lr_factor(cfg, s, 100) for s in range(101)]
    assert curve[0] == pytest.approx(0.1) and curve[0] < curve[5] < curve[9]  # warm-up
    assert all(a >= b for a, b in zip(curve[10:], curve[11:]))  # then a cosine decay ...
    assert curve[100] == pytest.approx(0.05) and lr_factor(cfg, 150, 100) == pytest.approx(0.05)  # ... to its floor
    assert lr_factor(cfg, 50, 200) > lr_factor(cfg, 50, 100)  # stretched over a longer run


def test_planned_steps_is_max_steps_or_the_epochs_whichever_ends_first() -> None:
    assert planned_steps(load_config(None, ["epochs=3"]), itertools.repeat(38)) == 114
    assert planned_steps(load_config(None, ["epochs=3", "max_steps=50"]), itertools.repeat(38)) == 50
    assert planned_steps(load_config(None, ["epochs=3", "max_steps=500"]), itertools.repeat(38)) == 114
    assert planned_steps(load_config(None, ["epochs=3"]), iter([5, 7, 6, 100])) == 18  # counts read per epoch
    assert planned_steps(load_config(None, ["epochs=1000000", "max_steps=10"]), itertools.count(1)) == 10  # reads 4


def test_slow_and_fast_runs_end_at_the_same_update_with_the_same_lr(runs: dict) -> None:
    fast, slow = load_checkpoint(runs["fast"] / "checkpoints" / "last.pt"), load_checkpoint(runs["slow"] / "checkpoints" / "last.pt")
    end = events(runs["fast"], "end")[-1]
    assert end["planned_steps"] >= 3 * EPOCHS and end["planned_steps"] % EPOCHS == 0  # whole epochs, a few batches each
    assert fast["state"]["step"] == slow["state"]["step"] == end["planned_steps"]
    assert slow["state"]["train_seconds"] == pytest.approx(15.0 * end["planned_steps"])  # the slow clock did apply
    assert not fast["state"]["cut_short"] and not slow["state"]["cut_short"]
    assert fast["optimizer"]["param_groups"][0]["lr"] == slow["optimizer"]["param_groups"][0]["lr"]
    a, b = lr_log(runs["fast"]), lr_log(runs["slow"])
    assert a == b and sorted(a) == list(range(1, end["planned_steps"] + 1))
    cfg = config(runs["manifest"])
    assert a == {s: cfg.optim.lr * lr_factor(cfg, s - 1, end["planned_steps"]) for s in a}
    assert a[end["planned_steps"]] < 0.2 * cfg.optim.lr  # the cosine ran to its end, not to a fraction of it


def test_a_cap_that_fires_cuts_the_run_short_and_says_so(runs: dict) -> None:
    out = runs["capped"]
    planned = events(runs["fast"], "end")[-1]["planned_steps"]
    state = load_checkpoint(out / "checkpoints" / "last.pt")["state"]
    assert state["step"] == 7 < planned and state["cut_short"] and state["done"]
    cut = events(out, "cut_short")
    assert len(cut) == 1 and cut[0]["step"] == 7 and cut[0]["planned_steps"] == planned
    assert events(out, "end")[-1]["cut_short"] is True
    assert load_checkpoint(out / "model.pt")["meta"]["cut_short"] is True
    assert load_checkpoint(runs["fast"] / "model.pt")["meta"]["cut_short"] is False
    assert _cut_short(out / "model.pt") and not _cut_short(runs["fast"] / "model.pt")  # what a recipe's results carry
    # The cap stops the run; it does not squeeze the schedule into the minutes it allows.
    fast = lr_log(runs["fast"])
    assert lr_log(out) == {s: fast[s] for s in range(1, 8)}


def test_snapshots_every_n_updates_are_averaged_at_the_end(runs: dict, tmp_path: Path) -> None:
    """``snapshot_every``: weights saved every N updates (the newest ``keep_epochs`` kept, no epoch snapshots), and
    the model written at the end (no dev set here) is the average of the last ``average_last`` of them."""
    from asr_s2s.train_checkpoint import average_checkpoints

    out = train(config(runs["manifest"], "threads=1", "snapshot_every=2", "average_last=3", "keep_epochs=4"),
                tmp_path / "snap", quiet=True).parent
    steps = sorted(lr_log(out))
    snaps = sorted(p.name for p in (out / "checkpoints").glob("*-*.pt"))
    want = [s for s in steps if s % 2 == 0][-4:]
    assert snaps == [f"step-{s:07d}.pt" for s in want]
    avg = average_checkpoints(sorted((out / "checkpoints").glob("step-*.pt"))[-3:])
    model = load_checkpoint(out / "model.pt")["model"]
    assert all(torch.equal(model[k], avg[k]) for k in avg)
    last = load_checkpoint(out / "checkpoints" / "last.pt")["model"]["model"]
    assert not all(torch.equal(model[k], last[k]) for k in avg), "the average must differ from the last weights"
