"""What a training run writes to resume from and to choose its model by: the run's counters, its resumable
state (``checkpoints/last.pt``), per-epoch weight snapshots and their average.

``last.pt`` holds everything an uninterrupted run would still have in memory: weights, optimiser and scaler
state, the counters of :class:`TrainState` (among them the position inside the epoch) and every RNG, as plain
tensors and containers so that it loads with ``weights_only=True``. Writes are atomic (``save_checkpoint``).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .model import ASRModel

TRAIN_FORMAT = "asr-s2s-train/1"  # checkpoint.FORMAT_FAMILIES accepts it


@dataclass
class TrainState:
    """The counters of a run: saved in ``last.pt`` and restored by ``--resume``."""

    step: int = 0  # updates taken
    epoch: int = 0
    batch_in_epoch: int = 0  # global batches of ``epoch`` already trained (or skipped)
    best: Optional[float] = None  # best dev score so far, and its epoch
    best_epoch: int = -1
    bad_epochs: int = 0  # epochs since the best (early stopping)
    skipped_nonfinite: int = 0  # updates skipped for a non-finite loss or gradient
    skipped_batches: int = 0  # DDP: batches too small to give every rank an utterance
    skipped_utterances: int = 0  # unreadable audio
    train_seconds: float = 0.0
    audio_seconds: float = 0.0
    done: bool = False
    cut_short: bool = False  # the max_minutes cap stopped the run before its planned updates
    manifest_skipped: dict = field(default_factory=dict)  # manifest entries dropped, per cause (recomputed per start)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def update(self, saved: dict[str, Any]) -> None:
        """Take the counters of a saved state (keys this version does not know are ignored)."""
        for f in dataclasses.fields(self):
            if f.name in saved:
                setattr(self, f.name, saved[f.name])


# ---- RNG state (plain tensors/ints so the checkpoint loads with weights_only=True) -------------
def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
            "numpy_pos": int(np_state[2]), "python": list(random.getstate()[1]),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    np.random.set_state(("MT19937", s["numpy"].numpy().astype(np.uint32), s["numpy_pos"], 0, 0.0))
    random.setstate((3, tuple(s["python"]), None))
    if s.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---- the resumable state ------------------------------------------------------------------------
def save_train_state(path: Path, model: ASRModel, opt: torch.optim.Optimizer, scaler: Optional[torch.amp.GradScaler],
                     state: TrainState) -> None:
    save_checkpoint(path, {"format": TRAIN_FORMAT, "model": model.payload(), "optimizer": opt.state_dict(),
                           "scaler": scaler.state_dict() if scaler else None, "state": state.to_dict(), "rng": rng_state()})


def load_train_state(path: Path, model: ASRModel, opt: torch.optim.Optimizer, scaler: Optional[torch.amp.GradScaler],
                     state: TrainState) -> None:
    """Restore what :func:`save_train_state` wrote, RNGs included. Raises CheckpointError for an unreadable or
    unsafe file, or one that is not a training state."""
    ck = load_checkpoint(path)
    if ck.get("format") != TRAIN_FORMAT:
        raise CheckpointError(f"{path}: not a training checkpoint")
    model.seq2seq.load_state_dict(ck["model"]["model"])
    if ck["model"].get("cmvn") and model.cmvn_stats is not None:
        model.set_cmvn_stats(ck["model"]["cmvn"]["mean"], ck["model"]["cmvn"]["std"])
    opt.load_state_dict(ck["optimizer"])
    if scaler and ck.get("scaler"):
        scaler.load_state_dict(ck["scaler"])
    state.update(ck["state"])
    set_rng_state(ck["rng"])


def remove_stale_temps(ckpt_dir: Path) -> None:
    """Temp files of checkpoint writes cut short by a kill or power cut (save_checkpoint's mkstemp names)."""
    if ckpt_dir.is_dir():
        for stale in ckpt_dir.glob(".*.pt.*.tmp"):
            stale.unlink(missing_ok=True)


# ---- epoch snapshots and their average ------------------------------------------------------------
def save_snapshot(ckpt_dir: Path, number: int, model: ASRModel, keep: int, kind: str = "epoch") -> None:
    """``epoch-NNNN.pt`` (or ``step-NNNNNNN.pt``) with the model's weights; only the newest ``keep`` of the kind stay."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(ckpt_dir / f"{kind}-{number:0{_DIGITS[kind]}d}.pt", model.payload())
    for old in sorted(ckpt_dir.glob(f"{kind}-*.pt"))[:-keep]:
        old.unlink()


_DIGITS = {"epoch": 4, "step": 7}  # zero-padded so that names sort in training order


def last_snapshots(ckpt_dir: Path, n: int, kind: str = "epoch") -> list[Path]:
    return sorted(ckpt_dir.glob(f"{kind}-*.pt"))[-n:]


def average_checkpoints(paths: list[Path]) -> dict[str, torch.Tensor]:
    """The element-wise mean of the model weights in ``paths`` (summed in float64, stored in each weight's dtype)."""
    weights = [load_checkpoint(p)["model"] for p in paths]
    avg = {k: sum(w[k].double() for w in weights) / len(weights) for k in weights[0]}
    return {k: v.to(weights[0][k].dtype) for k, v in avg.items()}
