"""One owner per experiment folder, checked with real second processes.

- a live ``asr-s2s train`` (a subprocess, frozen with SIGSTOP once it has said it is training) holds its
  folder: a second ``train --resume`` and a ``recipe`` on it refuse at once, naming the folder and the PID;
  after ``kill -9`` of the first run the OS has dropped the lock and ``--resume`` finishes the run;
- a lock held by another process (multiprocessing, spawn) is refused to this one and released when that
  process is killed; within one process the lock is re-entrant (a recipe calling train on its folder).

Synchronisation is by pipes (the child's stdout line, a multiprocessing Pipe), never by sleeping.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import bad_inputs as B
import bad_usage as U
from asr_s2s import lock
from asr_s2s.checkpoint import load_checkpoint
from asr_s2s.manifest import write_manifest
from conftest import data_root

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGSTOP/SIGKILL")


def test_a_held_folder_is_refused_and_freed_when_its_holder_dies(tmp_path: Path) -> None:
    folder = tmp_path / "exp"
    proc, _pipe = U.start_holder(folder)
    try:
        with pytest.raises(lock.FolderLockedError, match=rf"{folder}: the experiment folder is in use by pid {proc.pid} "):
            lock.acquire(folder)
    finally:
        proc.kill()  # SIGKILL: no clean-up runs in the holder; the OS closes its file and drops the lock
        proc.join()
    with lock.folder_lock(folder):
        assert lock.is_held(folder)
    assert not lock.is_held(folder)


def test_every_writing_verb_refuses_a_held_folder(tmp_path: Path) -> None:
    config = tmp_path / "cfg.yaml"
    config.write_text("epochs: 1\n")
    results = U.run_lock_cases(tmp_path, config, data_root())
    bad = [r for r in results if not r.passed]
    assert len(results) == 4 and not bad, "\n".join(r.detail for r in bad)


def test_the_lock_is_reentrant_in_one_process(tmp_path: Path) -> None:
    folder = tmp_path / "exp"
    with lock.folder_lock(folder):
        with lock.folder_lock(folder):  # what a recipe does when its train stage locks the same folder
            assert lock.is_held(folder)
        assert lock.is_held(folder)
    assert not lock.is_held(folder)
    assert f"pid {os.getpid()}" in lock.holder(folder)  # the last holder stays on record


def test_a_live_training_run_owns_its_folder_until_killed(tmp_path: Path, fsdd_files: list[Path]) -> None:
    """The issue's case: `train CONFIG --out EXP --resume` started while the first run on EXP is going."""
    manifest = tmp_path / "train.jsonl"
    write_manifest(manifest, B.fsdd_entries(fsdd_files[:8]))
    # Far more steps than the test lets it take: it must still be running when the second run starts.
    cfg = B.training_config(manifest, epochs=100_000, max_steps=100_000, checkpoint_every=2, log_every=1)
    config = tmp_path / "cfg.yaml"
    cfg.save(config)
    exp = tmp_path / "exp"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen([sys.executable, "-m", "asr_s2s.cli", "train", str(config), "--out", str(exp)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=REPO)
    try:
        for line in first.stdout:  # blocks until the run prints its start line (after setup, lock held)
            if line.startswith("training "):
                break
        else:
            pytest.fail(f"the first run ended without training (status {first.wait()})")
        first.send_signal(signal.SIGSTOP)  # frozen mid-run: it cannot finish (and let go) while we look
        for argv in (["train", str(config), "--out", str(exp), "--resume"], ["train", str(config), "--out", str(exp)],
                     ["recipe", "fsdd", "--quick", "--out", str(exp), "--data-dir", str(data_root())]):
            r = U.judge("second run", "cli", argv, U.run_cli(argv), 2, [f"{exp}: the experiment folder is in use by pid {first.pid}"])
            assert r.passed, r.detail
    finally:
        first.kill()  # kill -9 (a stopped process dies of SIGKILL too)
        first.wait()
    # The crash left no lock behind: --resume continues the run (to a budget of 3 steps, for time).
    out = U.run_cli(["train", str(config), "--out", str(exp), "--resume", "--set", "max_steps=3"])
    assert out.status == 0, out.stderr[-3000:]
    state = load_checkpoint(exp / "checkpoints" / "last.pt")["state"]
    assert state["done"] and state["step"] >= 3
