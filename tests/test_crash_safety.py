"""Crash safety: SIGKILL a real training process at random points, resume until done, compare.

The training command is the real one (``python -m asr_s2s.cli train CONFIG --out EXP --set ... [--resume]``)
on 64 FSDD utterances with a tiny model, dropout and SpecAugment on, ``checkpoint_every`` small and a fixed
``max_steps``. Kill points are chosen from a seeded RNG (``ASR_S2S_CRASH_SEED``, default random - the seed is
in every failure message) and found by observing files, never by sleeping: the completed step in
``metrics.jsonl``, a checkpoint temp file appearing (a kill *during* the write), feature-cache files appearing
(a kill during data preparation, before any checkpoint).

After every kill: every ``.pt`` in the experiment loads, and ``checkpoints/last.pt`` lags the last completed
step by at most ``checkpoint_every``. At the end: the resumed run's weights are bit-identical (``torch.equal``)
to an uninterrupted run's with the same seed (CPU).

Also here: an unwritable output directory and a full disk are refused before training starts, and the
determinism guarantee itself (two fresh runs, same weights).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[1]
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
MAX_STEPS = 36
CKPT_EVERY = 4
DEADLINE = 120.0  # seconds any single wait may take before the test fails (never a sync by itself)

CONFIG = """\
features: {sample_rate: 8000, n_mels: 20}
model:
  input: audio
  encoder: {cell: gru, input_dim: 20, hidden: 24, layers: 1, bidirectional: true, dropout: 0.2, subsampling: conv, subsample_factor: 4, conv_channels: 4}
  decoder: {cell: gru, embed_dim: 8, hidden: 24, layers: 1, attention: dot, dropout: 0.2}
data: {tokenizer: char, max_frames: 300, cmvn: global, spec_augment: true, freq_masks: 2, freq_width: 4, time_masks: 2, time_width: 0.05}
optim: {lr: 0.003, warmup_steps: 5}
epochs: 100
checkpoint_every: 200
log_every: 1
device: cpu
threads: 1
seed: 11
"""


def crash_seed() -> int:
    env = os.environ.get("ASR_S2S_CRASH_SEED")
    return int(env) if env else random.SystemRandom().randrange(1 << 30)


@pytest.fixture(scope="module")
def setup_dir(tmp_path_factory, fsdd_dir: Path):
    d = tmp_path_factory.mktemp("crash")
    files = sorted(fsdd_dir.glob("*.wav"))
    files = [f for f in files if f.stem.split("_")[1] in ("jackson", "theo", "george") and int(f.stem.split("_")[2]) < 3][:64]
    assert len(files) >= 40  # 64 from the corpus; without it, the 40 clips in tests/data
    with open(d / "train.jsonl", "w") as f:
        for w in files:
            info = sf.info(str(w))
            f.write(json.dumps({"audio_filepath": str(w), "duration": info.frames / info.samplerate,
                                "text": DIGITS[int(w.name[0])]}) + "\n")
    (d / "tiny.yaml").write_text(CONFIG)
    return d


def overrides(d: Path) -> list[str]:
    return [f"data.train={d / 'train.jsonl'}", f"max_steps={MAX_STEPS}", f"checkpoint_every={CKPT_EVERY}", "max_minutes=null"]


def run_inprocess(d: Path, out: Path) -> Path:
    """An uninterrupted run in this process (same code path as the CLI, without the interpreter start)."""
    from asr_s2s.config import load_config
    from asr_s2s.train import train

    threads = torch.get_num_threads()
    try:
        return train(load_config(d / "tiny.yaml", overrides(d)), out, quiet=True)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(setup_dir: Path) -> Path:
    out = setup_dir / "reference"
    run_inprocess(setup_dir, out)
    return out


# ---------------------------------------------------------------------------------------------- helpers
def completed_step(exp: Path, offset: int = 0) -> int:
    """Highest step logged in metrics.jsonl from byte `offset` on (-1 if none); torn lines are ignored."""
    p = exp / "metrics.jsonl"
    best = -1
    if p.exists():
        with open(p, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        for line in text.splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(r, dict) and "loss" in r and "event" not in r:
                best = max(best, int(r["step"]))
    return best


def ckpt_tmp_files(exp: Path) -> list[str]:
    try:
        return [n for n in os.listdir(exp / "checkpoints") if n.endswith(".tmp")]
    except FileNotFoundError:
        return []


def cache_files(exp: Path) -> int:
    feats = exp / "feats"
    if not feats.is_dir():
        return 0
    return sum(1 for sub in os.scandir(feats) if sub.is_dir() for n in os.listdir(sub.path) if n.endswith(".npy"))


def start(d: Path, exp: Path, resume: bool) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "asr_s2s.cli", "train", str(d / "tiny.yaml"), "--out", str(exp)]
    for o in overrides(d):
        cmd += ["--set", o]
    if resume:
        cmd.append("--resume")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = open(exp.parent / f"{exp.name}.log", "ab")
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def kill_when(proc: subprocess.Popen, ready, what: str, seed: int, interval: float = 0.002) -> bool:
    """Poll (bounded, ``interval`` apart so the trainer keeps its CPU) until ``ready()``; then SIGKILL.
    False if the process ended first."""
    deadline = time.monotonic() + DEADLINE
    while proc.poll() is None:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"[seed {seed}] waited {DEADLINE}s for {what}")
        time.sleep(interval)
    return False


class StepWatcher:
    """``completed_step`` of the process started after this watcher: only records appended since then count
    (a restarted run first re-does the steps after its checkpoint, which earlier processes already logged; a
    kill point read from their records would fire during start-up, before the run resumed). Re-reads
    metrics.jsonl only when it grew (cheap enough to poll)."""

    def __init__(self, exp: Path):
        self.exp, self.size, self.step = exp, -1, -1
        try:
            self.offset = (exp / "metrics.jsonl").stat().st_size
        except FileNotFoundError:
            self.offset = 0

    def __call__(self) -> int:
        try:
            size = (self.exp / "metrics.jsonl").stat().st_size
        except FileNotFoundError:
            return -1
        if size != self.size:
            self.size, self.step = size, completed_step(self.exp, self.offset)
        return self.step


def checkpoint_step(exp: Path) -> int:
    last = exp / "checkpoints" / "last.pt"
    if not last.exists():
        return 0
    return int(torch.load(last, map_location="cpu", weights_only=True)["state"]["step"])


def assert_every_pt_loads(exp: Path, seed: int) -> None:
    from asr_s2s.checkpoint import load_checkpoint

    for p in sorted(exp.rglob("*.pt")):
        try:
            load_checkpoint(p)
        except Exception as exc:  # noqa: BLE001
            pytest.fail(f"[seed {seed}] {p} does not load after a kill: {exc}")


def params(exp: Path) -> dict[str, torch.Tensor]:
    return torch.load(exp / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)["model"]["model"]


def assert_same_weights(a: Path, b: Path, seed: int | None = None) -> None:
    pa, pb = params(a), params(b)
    assert pa.keys() == pb.keys()
    diff = {k: float((pa[k] - pb[k]).abs().max()) for k in pa if not torch.equal(pa[k], pb[k])}
    assert not diff, f"[seed {seed}] weights differ from the uninterrupted run: {diff}"
    fa = torch.load(a / "model.pt", weights_only=True)["model"]
    fb = torch.load(b / "model.pt", weights_only=True)["model"]
    assert all(torch.equal(fa[k], fb[k]) for k in fa), f"[seed {seed}] model.pt differs"


def crash_and_resume(d: Path, exp: Path, plan: list[tuple[str, int]], seed: int, torn: bool = False) -> list[dict]:
    """Run, killing at each point of ``plan``; then resume until done. Returns what each kill observed."""
    observed = []
    resume = False
    resumable = 0  # starts that found a checkpoint to resume from
    for kind, k in plan:
        resumable += (exp / "checkpoints" / "last.pt").exists()
        step = StepWatcher(exp)  # before the start: what this process logs counts, not earlier records
        proc = start(d, exp, resume)
        if kind == "step":
            hit = kill_when(proc, lambda: step() >= k, f"step {k}", seed)
        elif kind == "ckpt_write":  # the first checkpoint write after step k, while its temp file exists
            hit = kill_when(proc, lambda: step() >= k and bool(ckpt_tmp_files(exp)), "a checkpoint temp file", seed, 0.0005)
        elif kind == "data_prep":
            hit = kill_when(proc, lambda: cache_files(exp) >= k, f"{k} feature-cache files", seed, 0.01)
        else:  # pragma: no cover
            raise ValueError(kind)
        resume = True
        if not hit:  # finished before the point came: nothing left to interrupt
            assert proc.returncode == 0, f"[seed {seed}] training failed (rc {proc.returncode}), see {exp}.log"
            break
        done = completed_step(exp)
        saved = checkpoint_step(exp)
        obs = {"kind": kind, "at": k, "completed_step": done, "checkpoint_step": saved, "tmp": ckpt_tmp_files(exp)}
        observed.append(obs)
        assert_every_pt_loads(exp, seed)
        # No completed step is lost beyond the checkpoint interval.
        assert done - saved <= CKPT_EVERY, f"[seed {seed}] lost {done - saved} steps: {obs}"
        if kind == "ckpt_write":
            assert obs["tmp"], f"[seed {seed}] expected to interrupt a checkpoint write: {obs}"
    if torn and (exp / "metrics.jsonl").exists():
        # What a power cut can leave (kill -9 cannot tear a small write): a half-written metrics record,
        # a half-written checkpoint temp file. The resumed run must step over both.
        with open(exp / "metrics.jsonl", "ab") as f:
            f.write(b'{"step": 99, "epoch": 0, "lo')
        (exp / "checkpoints").mkdir(exist_ok=True)
        (exp / "checkpoints" / ".last.pt.abc123.tmp").write_bytes(b"PK\x03\x04 half a zip")
    for _ in range(3):  # resume until done (normally once)
        resumable += (exp / "checkpoints" / "last.pt").exists()
        proc = start(d, exp, resume=True)
        try:
            rc = proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"[seed {seed}] resumed run did not finish in {DEADLINE}s")
        assert rc == 0, f"[seed {seed}] resumed run failed (rc {rc}): {(exp.parent / (exp.name + '.log')).read_text()[-3000:]}"
        if torch.load(exp / "checkpoints" / "last.pt", weights_only=True)["state"]["done"]:
            break
    assert_every_pt_loads(exp, seed)
    assert not ckpt_tmp_files(exp), f"[seed {seed}] stale checkpoint temp files left: {ckpt_tmp_files(exp)}"
    state = torch.load(exp / "checkpoints" / "last.pt", weights_only=True)["state"]
    assert state["step"] == MAX_STEPS and state["done"]
    events = [json.loads(x) for x in (exp / "metrics.jsonl").read_text().splitlines() if x.strip().endswith("}")]
    assert sum(e.get("event") == "resumed" for e in events) == resumable >= 1, f"[seed {seed}] {observed}"
    return observed


def random_plan(rng: random.Random, n_steps: int) -> list[tuple[str, int]]:
    """Kill points in increasing step order (each resume starts at most CKPT_EVERY steps back)."""
    points = sorted(rng.sample(range(1, MAX_STEPS - 1), n_steps))
    return [("step", p) for p in points]


# ------------------------------------------------------------------------------------------------ tests
def test_sigkill_at_random_points_then_resume_is_exact(setup_dir: Path, reference: Path) -> None:
    seed = crash_seed()
    rng = random.Random(seed)
    a = rng.randrange(1, MAX_STEPS // 2)
    b = rng.randrange(a + CKPT_EVERY, MAX_STEPS - 1)
    # during data preparation (before any checkpoint), during a checkpoint write, after a random step;
    # then a torn metrics line and a stale temp file (power-cut leftovers) before the last resume
    n_files = len((setup_dir / "train.jsonl").read_text().splitlines())  # 64, or the 40 clips without a corpus
    plan = [("data_prep", rng.randint(1, n_files * 3 // 4)), ("ckpt_write", a), ("step", b)]
    exp = setup_dir / f"killed-{seed}"
    observed = crash_and_resume(setup_dir, exp, plan, seed, torn=True)
    print(f"[seed {seed}] {len(observed)} kills survived: {observed}")  # shown with -s / -rP
    assert len(observed) == 3, f"[seed {seed}] not every kill landed: {observed}"
    assert_same_weights(reference, exp, seed)


AUGMENT = ("augment: {noise: {p: 0.5}, gain: {p: 0.5}, vtlp: {p: 0.3}, reverb: {p: 0.3, rooms: 4}, "
           "telephone: {p: 0.2}, codec: {p: 0.2}}")


@pytest.fixture(scope="module")
def augmented_dir(setup_dir: Path, tmp_path_factory) -> Path:
    """The same data and config with waveform augmentation on (asr_s2s.augment), and its uninterrupted run."""
    d = tmp_path_factory.mktemp("crash_aug")
    (d / "train.jsonl").write_text((setup_dir / "train.jsonl").read_text())
    config = CONFIG.replace("time_width: 0.05}", "time_width: 0.05, " + AUGMENT + "}")
    assert config != CONFIG
    (d / "tiny.yaml").write_text(config)
    run_inprocess(d, d / "reference")
    return d


def test_sigkill_with_augmentation_then_resume_is_exact(augmented_dir: Path, reference: Path) -> None:
    """A resumed run draws the same augmentations as an uninterrupted one: killed in mid epoch and resumed,
    it ends with the uninterrupted augmented run's weights, bit for bit (and not with the plain run's)."""
    seed = crash_seed()
    rng = random.Random(seed)
    a = rng.randrange(1, MAX_STEPS // 2)
    b = rng.randrange(a + CKPT_EVERY, MAX_STEPS - 1)
    exp = augmented_dir / f"killed-{seed}"
    observed = crash_and_resume(augmented_dir, exp, [("ckpt_write", a), ("step", b)], seed)
    assert len(observed) == 2, f"[seed {seed}] not every kill landed: {observed}"
    assert_same_weights(augmented_dir / "reference", exp, seed)
    pa, pb = params(reference), params(augmented_dir / "reference")
    assert any(not torch.equal(pa[k], pb[k]) for k in pa), "augmentation changed nothing in training"


@pytest.mark.slow
@pytest.mark.parametrize("round_", range(3))
def test_sigkill_many_points_slow(setup_dir: Path, reference: Path, round_: int) -> None:
    seed = crash_seed() + round_
    rng = random.Random(seed)
    plan = random_plan(rng, 5)
    for i in sorted(rng.sample(range(len(plan)), 2), reverse=True):  # two of them during a checkpoint write
        plan[i] = ("ckpt_write", plan[i][1])
    exp = setup_dir / f"killed-slow-{seed}"
    observed = crash_and_resume(setup_dir, exp, plan, seed)
    print(f"[seed {seed}] {len(observed)} kills survived: {observed}")
    assert len(observed) >= 4, f"[seed {seed}] too few kills landed: {observed}"
    assert_same_weights(reference, exp, seed)


def test_two_fresh_runs_are_identical(setup_dir: Path, reference: Path) -> None:
    """Determinism on CPU: same seed and data -> bit-identical weights (and the same loss curve)."""
    out = setup_dir / "again"
    run_inprocess(setup_dir, out)
    assert_same_weights(reference, out)

    def losses(e: Path) -> list[float]:
        return [r["loss"] for r in map(json.loads, (e / "metrics.jsonl").read_text().splitlines()) if "loss" in r]

    assert losses(reference) == losses(out)


def test_a_different_seed_gives_different_weights(setup_dir: Path, reference: Path, tmp_path: Path) -> None:
    """Sanity check of the comparison above: it does see a difference when there is one."""
    from asr_s2s.config import load_config
    from asr_s2s.train import train

    cfg = load_config(setup_dir / "tiny.yaml", overrides(setup_dir) + ["seed=12", "max_steps=4"])
    threads = torch.get_num_threads()
    try:
        train(cfg, tmp_path / "other", quiet=True)
    finally:
        torch.set_num_threads(threads)
    pa, pb = params(reference), params(tmp_path / "other")
    assert any(not torch.equal(pa[k], pb[k]) for k in pa)


# ------------------------------------------------------------------------------------------- preflight
def test_out_below_a_regular_file_is_refused_before_anything(setup_dir: Path, tmp_path: Path, capsys) -> None:
    from asr_s2s.cli import main

    blocker = tmp_path / "not_a_dir"
    blocker.write_text("I am a file")
    rc = main(["train", str(setup_dir / "tiny.yaml"), "--out", str(blocker / "exp"), *sum((["--set", o] for o in overrides(setup_dir)), [])])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"{blocker / 'exp'}: output directory is not writable" in err and "Not a directory" in err
    assert blocker.read_text() == "I am a file"


def test_full_disk_is_refused_by_preflight(tmp_path: Path) -> None:
    import shutil

    from asr_s2s.train import TrainingError, preflight

    free = shutil.disk_usage(tmp_path).free
    preflight(tmp_path / "ok", num_params=1000)  # plenty of room
    with pytest.raises(TrainingError, match=r"only \d+ MiB free, training needs about \d+ MiB"):
        preflight(tmp_path / "full", num_params=free // 4 + 1)  # > free bytes once weights + Adam moments x files
