"""The training loop: one entry point for a single process and for ``torchrun`` (DDP).

    asr-s2s train CONFIG.yaml --out EXPDIR [--set key=value ...] [--resume]

What it guarantees:
- the global batch is the same whatever the world size: each length-bucketed batch is split
  across ranks and the loss is normalised by the global token count, so N processes take the
  same optimisation steps as one process (up to float summation order);
- checkpoints are atomic (temp file + rename) every ``checkpoint_every`` steps and each epoch, and
  ``--resume`` restores model, optimiser, step, position inside the epoch and every RNG, so a
  killed run continues exactly where the last checkpoint left it;
- a non-finite loss or gradient skips the step (counted), never poisons the weights; unreadable
  audio is skipped and counted; an unwritable or full output directory is refused before training;
- the length of a run and its learning-rate schedule are counted in updates (``max_steps``, else
  ``epochs`` x batches per epoch, both fixed by the config and the data), so a slow or busy machine
  reaches the same result, later. ``max_minutes`` is only a safety cap: a run it stops is marked
  ``cut_short`` (in metrics.jsonl, in model.pt's meta, on stderr) and is not the config's result.

EXPDIR holds ``model.pt`` (best or averaged), ``checkpoints/``, ``metrics.jsonl``,
``learning_curve.png`` and ``config.yaml``.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import shutil
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .model import ASRModel

TRAIN_FORMAT = "asr-s2s-train/1"  # checkpoint.FORMAT_FAMILIES accepts it


class TrainingError(Exception):
    """A run that cannot start or continue (the message says why and what to do)."""


# ---- distributed plumbing ---------------------------------------------------------------------
def dist_env() -> tuple[int, int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def _all_sum(x: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


# ---- RNG state (plain tensors/ints so the checkpoint loads with weights_only=True) -------------
def rng_state() -> dict:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
            "numpy_pos": int(np_state[2]), "python": list(random.getstate()[1]),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    np.random.set_state(("MT19937", s["numpy"].numpy().astype(np.uint32), s["numpy_pos"], 0, 0.0))
    random.setstate((3, tuple(s["python"]), None))
    if s.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---- learning-rate schedule ----------------------------------------------------------------
def lr_factor(cfg: TrainConfig, step: int, total_steps: int) -> float:
    """Multiplier of ``optim.lr`` for the update after ``step`` updates of a run planned at ``total_steps``.

    A function of update counts only (never of elapsed time), so every machine follows the same schedule."""
    o = cfg.optim
    warm = min(1.0, (step + 1) / max(1, o.warmup_steps))
    if o.schedule == "noam":
        return min(warm, math.sqrt(max(1, o.warmup_steps) / max(step + 1, 1)))
    if o.schedule == "constant":
        return warm
    progress = min(1.0, step / max(1, total_steps))
    cos = o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return warm * cos


def planned_steps(cfg: TrainConfig, epoch_batch_counts: Iterable[int]) -> int:
    """Updates a run takes unless something cuts it short: ``max_steps``, or the batches of ``cfg.epochs`` epochs
    if those run out first. ``epoch_batch_counts`` yields each epoch's batch count in order (only as many
    epochs are read as are needed)."""
    total = 0
    for _, n in zip(range(cfg.epochs), epoch_batch_counts):
        total += n
        if cfg.max_steps and total >= cfg.max_steps:
            return cfg.max_steps
    return max(1, total)


def preflight(out: Path, num_params: int) -> None:
    """Refuse an unwritable or nearly full output directory before any training happens."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_probe"
        probe.write_bytes(b"0")
        probe.unlink()
    except OSError as exc:
        raise TrainingError(f"{out}: output directory is not writable ({exc.strerror or exc})") from None
    # Training state = weights + 2 Adam moments; a few such files (last, epoch snapshots, model).
    need = num_params * 4 * 3 * 4 + (64 << 20)
    free = shutil.disk_usage(out).free
    if free < need:
        raise TrainingError(f"{out}: only {free >> 20} MiB free, training needs about {need >> 20} MiB for checkpoints")


class Trainer:
    def __init__(self, cfg: TrainConfig, out: Path, resume: bool = False, quiet: bool = False):
        self.cfg, self.out, self.resume, self.quiet = cfg, Path(out), resume, quiet
        self.rank, self.world, local = dist_env()
        if cfg.device == "auto":
            dev = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
        else:
            dev = f"cuda:{local}" if cfg.device == "cuda" else cfg.device
        self.device = torch.device(dev)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if cfg.amp == "bf16" and self.device.type == "cpu":
            # oneDNN caches a primitive per input shape (up to 1024), and length-bucketed batches come in
            # hundreds of shapes: with bf16 ones the AN4 recipe's peak RSS was 1.84 GB, 1.47 GB with 256 kept
            # (fp32: 1.11 GB; 3-minute runs). 32 kept saved more (1.23 GB) but cost the reference model 12%
            # of its speed; 256 cost nothing measurable. Read when oneDNN makes its first primitive.
            os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "256")
        self.is_main = self.rank == 0
        self.ckpt_dir = self.out / "checkpoints"
        self._last_plot = 0.0

    # ---- setup -----------------------------------------------------------------------------
    def setup(self) -> None:
        from .pipeline import build_data

        cfg = self.cfg
        if self.is_main:
            # Writable at all? Checked before tokenizer building and feature caching write into EXPDIR
            # (the space check, which needs the model size, follows once the model exists).
            preflight(self.out, 0)
        last = self.ckpt_dir / "last.pt"
        if last.exists() and not self.resume:
            raise TrainingError(f"{self.out} already holds a run ({last}); pass --resume to continue it or choose another --out")
        metrics = self.out / "metrics.jsonl"
        if self.is_main and metrics.is_file() and metrics.stat().st_size:
            with open(metrics, "rb+") as f:  # a record torn by a kill: start the next one on a line of its own
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")
        if self.resume and self.is_main and self.ckpt_dir.is_dir():
            # Temp files of checkpoint writes cut short by a kill or power cut (save_checkpoint's mkstemp names).
            for stale in self.ckpt_dir.glob(".*.pt.*.tmp"):
                stale.unlink(missing_ok=True)
        seed_everything(cfg.seed)
        try:
            self.data = build_data(cfg, self.out, resume=self.resume and last.exists(), rank=self.rank, world=self.world)
        except CheckpointError as exc:  # EXPDIR/tokenizer.pt corrupt or carrying code
            raise TrainingError(f"cannot use {self.out}: {exc}") from None
        model = ASRModel(self.data.model_cfg, self.data.tokenizer, cfg.features if cfg.data.task == "asr" else None,
                         cmvn=cfg.data.cmvn, spec_augment=self.data.spec_augment, src_tokenizer=self.data.src_tokenizer)
        if self.data.cmvn_stats is not None and model.cmvn is not None and hasattr(model.cmvn, "mean"):
            model.cmvn.mean.copy_(self.data.cmvn_stats[0])
            model.cmvn.std.copy_(self.data.cmvn_stats[1])
        self.model = model.to(self.device)
        self.num_params = sum(p.numel() for p in model.seq2seq.parameters())
        if self.is_main:
            preflight(self.out, self.num_params)
            cfg.save(self.out / "config.yaml")
        self.ddp = None
        if self.world > 1:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        o = cfg.optim
        opt_cls = torch.optim.AdamW if o.optimizer == "adamw" else torch.optim.Adam
        self.opt = opt_cls(self.model.parameters(), lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda") if cfg.amp == "fp16" and self.device.type == "cuda" else None
        self.state: dict[str, Any] = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "best": None, "best_epoch": -1,
                                      "bad_epochs": 0, "skipped_nonfinite": 0, "skipped_batches": 0, "skipped_utterances": 0,
                                      "train_seconds": 0.0, "audio_seconds": 0.0, "done": False, "cut_short": False}
        if self.resume and last.exists():
            self._load_state(last)
        # What the manifest reader dropped (per cause), recomputed on every start: part of the run's report.
        self.state["manifest_skipped"] = dict(self.data.manifest_skipped)
        if self.data.manifest_skipped:
            self._log({"event": "manifest_skipped", **self.data.manifest_skipped})

    # ---- checkpoints ------------------------------------------------------------------------
    def _save_state(self) -> None:
        if not self.is_main:
            return
        save_checkpoint(self.ckpt_dir / "last.pt", {
            "format": TRAIN_FORMAT, "model": self.model.payload(), "optimizer": self.opt.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None, "state": dict(self.state), "rng": rng_state(),
        })

    def _load_state(self, path: Path) -> None:
        try:
            ck = load_checkpoint(path)
        except CheckpointError as exc:  # corrupt, foreign or code-carrying file: a clear refusal, no traceback
            raise TrainingError(f"cannot resume: {exc}") from None
        if ck.get("format") != TRAIN_FORMAT:
            raise TrainingError(f"{path}: not a training checkpoint")
        self.model.seq2seq.load_state_dict(ck["model"]["model"])
        if ck["model"].get("cmvn") and hasattr(self.model.cmvn, "mean"):
            self.model.cmvn.mean.copy_(ck["model"]["cmvn"]["mean"])
            self.model.cmvn.std.copy_(ck["model"]["cmvn"]["std"])
        self.opt.load_state_dict(ck["optimizer"])
        if self.scaler and ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
        self.state.update(ck["state"])
        set_rng_state(ck["rng"])
        self._log({"event": "resumed", "step": self.state["step"], "epoch": self.state["epoch"],
                   "batch_in_epoch": self.state["batch_in_epoch"]})

    def _log(self, record: dict) -> None:
        if self.is_main:
            with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    # ---- the loop ---------------------------------------------------------------------------
    def teacher_forcing(self) -> float:
        c = self.cfg
        if c.teacher_forcing_steps <= 0:
            return c.teacher_forcing
        f = min(1.0, self.state["step"] / c.teacher_forcing_steps)
        return c.teacher_forcing + (c.teacher_forcing_final - c.teacher_forcing) * f

    def steps_in_epoch(self, epoch: int) -> int:
        """Updates epoch ``epoch`` takes on this rank (epoch_batches' count, without its bookkeeping)."""
        batches = self.data.batches(epoch)
        return len(batches) if self.world == 1 else sum(1 for b in batches if len(b) >= self.world)

    def out_of_budget(self) -> bool:
        """Stop after this update? At ``max_steps``, or when the opt-in ``max_minutes`` safety cap runs out."""
        c, s = self.cfg, self.state
        if c.max_steps and s["step"] >= c.max_steps:
            return True  # the same step on every rank
        if not c.max_minutes:
            return False
        over = s["train_seconds"] >= 60 * c.max_minutes
        if self.world > 1:  # clocks differ between ranks: rank 0's decides, so that every rank stops at the same step
            flag = torch.tensor([float(over)])
            dist.broadcast(flag, 0)
            over = bool(flag.item())
        if over:
            self.mark_cut_short()
        return over

    def mark_cut_short(self) -> None:
        """The time cap stopped the run before its planned updates: say so wherever its result is read."""
        c, s = self.cfg, self.state
        s["cut_short"] = True
        self._log({"event": "cut_short", "reason": "max_minutes", "max_minutes": c.max_minutes, "step": s["step"],
                   "planned_steps": self.total_steps, "train_seconds": s["train_seconds"]})
        if self.is_main:
            print(f"WARNING: the max_minutes={c.max_minutes} cap stopped training at update {s['step']} of "
                  f"{self.total_steps} planned; the learning-rate schedule did not finish, so this run's model is not "
                  f"the config's result (set max_minutes=null for that)", file=sys.stderr, flush=True)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """This rank's share of every global batch of the epoch (deterministic in seed and epoch)."""
        batches = self.data.batches(epoch)
        if self.world == 1:
            return batches
        # Batches too small to give every rank an utterance are dropped (counted), identically on all ranks.
        kept = [b[self.rank :: self.world] for b in batches if len(b) >= self.world]
        self.state["skipped_batches"] += len(batches) - len(kept) if epoch == self.state["epoch"] else 0
        return kept

    def fit(self) -> Path:
        self.setup()
        cfg, s = self.cfg, self.state
        per_epoch = self.steps_in_epoch(0)
        # Fixed by the config and the data alone (the sampler's batches are a function of the seed and the epoch),
        # so the schedule and the stopping point are the same on any machine and after --resume.
        self.total_steps = planned_steps(cfg, (self.steps_in_epoch(e) for e in itertools.count()))
        if self.is_main and not self.quiet:
            cap = f" (safety cap: {cfg.max_minutes} min)" if cfg.max_minutes else ""
            print(f"training {self.num_params / 1e6:.2f} M parameters on {self.device} x{self.world}; "
                  f"{len(self.data.train_set)} train utterances, {per_epoch} batches/epoch, "
                  f"{self.total_steps} updates planned{cap} -> {self.out}", flush=True)
        while s["epoch"] < cfg.epochs and not s["done"]:
            self.train_epoch(s["epoch"])
            if s["done"] and not s["batch_in_epoch"]:
                break  # nothing trained since the last epoch end
            # An epoch ended by max_steps ran at the lowest learning rate and is often the best; one ended by
            # the time cap is what that run has. Either gets a dev check and a snapshot like a whole one (done stays set).
            self.end_epoch()
        s["done"] = True
        self._save_state()
        if self.is_main and not self.quiet and (s["skipped_utterances"] or s["skipped_nonfinite"] or s["manifest_skipped"]):
            print(f"skipped: {s['skipped_utterances']} unreadable utterance loads, {s['skipped_nonfinite']} non-finite "
                  f"steps, manifest entries {s['manifest_skipped']} (details in {self.out / 'metrics.jsonl'})", flush=True)
        return self.finish()

    def train_epoch(self, epoch: int) -> None:
        from tqdm import tqdm

        cfg, s = self.cfg, self.state
        batches = self.epoch_batches(epoch)[s["batch_in_epoch"] :]
        # A DataLoader iterator draws its workers' base seed from `generator`, by default the global torch
        # RNG: a resume in mid-epoch would make one extra draw and shift every later dropout/SpecAugment
        # mask. A generator of its own (seed, epoch) keeps the global stream exactly as in an unbroken run.
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        if hasattr(self.data.train_set, "set_epoch"):  # waveform augmentation draws from (seed, epoch, item)
            self.data.train_set.set_epoch(epoch)
        loader = DataLoader(self.data.train_set, batch_sampler=batches, num_workers=cfg.data.num_workers,
                            collate_fn=self.data.collate, persistent_workers=False, generator=gen)
        model = self.ddp or self.model
        model.train()
        bar = tqdm(total=len(batches), desc=f"epoch {epoch}", disable=not self.is_main or self.quiet,
                   mininterval=1.0 if sys.stderr.isatty() else 30.0, dynamic_ncols=True)
        t_last, audio_last, loss_acc, n_acc = time.perf_counter(), s["audio_seconds"], 0.0, 0
        for indices, batch in zip(batches, loader):
            t0 = time.perf_counter()
            self._count_skipped(epoch, indices, batch)
            empty = batch is None  # every utterance of the batch unreadable (on_error="skip")
            if self.world > 1:  # all ranks skip together, or DDP would wait for the missing one forever
                flag = torch.tensor([float(empty)])
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                empty = bool(flag.item())
            loss = None if empty else self.train_step(model, batch)
            dt = time.perf_counter() - t0
            s["train_seconds"] += dt
            s["audio_seconds"] += float(batch.get("duration", 0.0)) if batch is not None else 0.0
            s["batch_in_epoch"] += 1
            if loss is not None:
                loss_acc, n_acc = loss_acc + loss, n_acc + 1
            bar.update(1)
            if s["step"] % cfg.log_every == 0 and n_acc:
                now = time.perf_counter()
                rate = (s["audio_seconds"] - audio_last) / max(now - t_last, 1e-9) * self.world
                rec = {"step": s["step"], "epoch": epoch, "loss": loss_acc / n_acc, "lr": self.opt.param_groups[0]["lr"],
                       "teacher_forcing": self.teacher_forcing(), "audio_s_per_s": rate, "train_seconds": s["train_seconds"]}
                self._log(rec)
                bar.set_postfix(loss=f"{rec['loss']:.3f}", aps=f"{rate:.0f}")
                t_last, audio_last, loss_acc, n_acc = now, s["audio_seconds"], 0.0, 0
            if cfg.checkpoint_every and s["step"] % cfg.checkpoint_every == 0 and loss is not None:
                self._save_state()
            if self.out_of_budget():
                s["done"] = True
                break
        bar.close()

    def _count_skipped(self, epoch: int, indices: list[int], batch: Optional[dict]) -> None:
        """Count (state["skipped_utterances"]) and log the utterances the dataset could not load."""
        n = len(indices) if batch is None else int(batch.get("num_skipped", 0))
        if not n:
            return
        self.state["skipped_utterances"] += n
        entries = getattr(self.data.train_set, "entries", None)
        kept = set(batch["ids"]) if batch is not None else set()
        ids = [entries[j].id for j in indices if entries[j].id not in kept] if entries is not None else []
        self._log({"event": "skipped_audio", "step": self.state["step"], "epoch": epoch, "count": n, "ids": ids[:64]})

    def train_step(self, model, batch: dict) -> Optional[float]:
        cfg, s = self.cfg, self.state
        src, src_lens, tgt, tgt_lens = (batch[k].to(self.device, non_blocking=True) for k in ("src", "src_lens", "tgt", "tgt_lens"))
        factor = lr_factor(cfg, s["step"], self.total_steps)
        for g in self.opt.param_groups:
            g["lr"] = cfg.optim.lr * factor
        amp = (torch.autocast(self.device.type, dtype=torch.bfloat16 if cfg.amp == "bf16" else torch.float16)
               if cfg.amp == "bf16" or (cfg.amp == "fp16" and self.device.type == "cuda") else nullcontext())
        with amp:
            # ASRModel.forward is its loss; calling through the DDP wrapper synchronises gradients.
            out = model(src, src_lens, tgt, tgt_lens, teacher_forcing=self.teacher_forcing())
        ntok = torch.as_tensor(out["ntokens"], dtype=torch.float32, device=self.device).reshape(1)
        total = _all_sum(ntok.clone(), self.world)
        # Token-sum / global tokens * world: DDP's gradient mean then equals one process's mean over the global batch.
        loss = out["loss"].float() * ntok[0] / total[0] * self.world
        finite = torch.isfinite(loss.detach()).float().reshape(1)
        if self.world > 1:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        self.opt.zero_grad(set_to_none=True)
        if finite.item() < 1:
            s["skipped_nonfinite"] += 1
            self._log({"event": "skipped_nonfinite_loss", "step": s["step"], "ids": batch.get("ids", [])[:8]})
            return None
        if self.scaler:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.opt)
        else:
            loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip or float("inf"))
        if not torch.isfinite(gnorm):
            s["skipped_nonfinite"] += 1
            self._log({"event": "skipped_nonfinite_grad", "step": s["step"]})
            self.opt.zero_grad(set_to_none=True)
            if self.scaler:
                self.scaler.update()
            return None
        if self.scaler:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        s["step"] += 1
        return float(out["loss"].detach())

    # ---- epoch end: dev metric, snapshots, early stopping -------------------------------------
    def dev_metric(self) -> Optional[dict]:
        return self.data.evaluate_dev(self.model, beam=self.cfg.eval_beam)

    def end_epoch(self) -> None:
        cfg, s = self.cfg, self.state
        epoch = s["epoch"]
        stop = torch.zeros(1)
        if self.is_main:
            res = self.dev_metric()
            if res is not None:
                metric, higher = res["metric"], res["higher_is_better"]
                better = s["best"] is None or (res[metric] > s["best"] if higher else res[metric] < s["best"])
                if better:
                    s["best"], s["best_epoch"], s["bad_epochs"] = res[metric], epoch, 0
                    self.model.save(self.out / "model.pt", meta=self._meta(res))
                else:
                    s["bad_epochs"] += 1
                self._log({"event": "epoch", "epoch": epoch, "step": s["step"], **{k: v for k, v in res.items() if k != "hypotheses"},
                           "train_seconds": s["train_seconds"], "best": s["best"]})
                if not self.quiet:
                    print(f"epoch {epoch}: dev {metric} {res[metric]:.4f} (best {s['best']:.4f} @ {s['best_epoch']}), "
                          f"step {s['step']}, {s['train_seconds']:.0f}s", flush=True)
                if cfg.early_stop_patience and s["bad_epochs"] >= cfg.early_stop_patience:
                    stop[0] = 1
            self._snapshot(epoch)
            if time.perf_counter() - self._last_plot > 60:  # matplotlib costs seconds: not every short epoch
                self.plot_curve()
        if self.world > 1:
            dist.broadcast(stop, 0)
        s["epoch"] += 1
        s["batch_in_epoch"] = 0
        if stop.item():
            s["done"] = True
        self._save_state()

    def _meta(self, res: dict | None = None) -> dict:
        s = self.state
        return {"step": s["step"], "epoch": s["epoch"], "planned_steps": self.total_steps, "cut_short": s["cut_short"],
                "train_seconds": round(s["train_seconds"], 1), "dev": {k: v for k, v in (res or {}).items() if isinstance(v, (int, float))},
                "num_parameters": self.num_params, "max_duration": self.data.max_duration}

    def _snapshot(self, epoch: int) -> None:
        if self.cfg.average_last <= 0:
            return
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        save_checkpoint(self.ckpt_dir / f"epoch-{epoch:04d}.pt", self.model.payload())
        snaps = sorted(self.ckpt_dir.glob("epoch-*.pt"))
        for old in snaps[: -max(self.cfg.keep_epochs, self.cfg.average_last)]:
            old.unlink()

    def finish(self) -> Path:
        """Write EXPDIR/model.pt: the best epoch, or the average of the last N if that is no worse on dev."""
        final = self.out / "model.pt"
        if not self.is_main:
            if self.world > 1:
                dist.barrier()
            return final
        if self.cfg.average_last > 0:
            snaps = sorted(self.ckpt_dir.glob("epoch-*.pt"))[-self.cfg.average_last :]
            if len(snaps) > 1:
                payloads = [load_checkpoint(p) for p in snaps]
                avg = {k: sum(p["model"][k].double() for p in payloads) / len(payloads) for k in payloads[0]["model"]}
                self.model.seq2seq.load_state_dict({k: v.to(payloads[0]["model"][k].dtype) for k, v in avg.items()})
                res = self.dev_metric()
                s = self.state
                if res is not None:
                    m, higher = res["metric"], res["higher_is_better"]
                    ok = s["best"] is None or (res[m] >= s["best"] if higher else res[m] <= s["best"])
                    self._log({"event": "averaged", "snapshots": len(snaps), m: res[m], "kept": ok})
                    if ok:
                        s["best"] = res[m]
                        self.model.save(final, meta={**self._meta(res), "averaged": len(snaps)})
        if not final.exists():  # no dev set, or no epoch finished: the current weights
            self.model.save(final, meta=self._meta())
        s = self.state
        if s["cut_short"]:  # model.pt may come from an epoch before the cut: its meta must still tell
            payload = load_checkpoint(final)
            payload["meta"]["cut_short"] = True
            save_checkpoint(final, payload)
        self._log({"event": "end", "step": s["step"], "planned_steps": self.total_steps, "epoch": s["epoch"],
                   "train_seconds": s["train_seconds"], "best": s["best"], "cut_short": s["cut_short"]})
        self.plot_curve()
        if self.world > 1:
            dist.barrier()
        return final

    def plot_curve(self) -> None:
        self._last_plot = time.perf_counter()
        path = self.out / "metrics.jsonl"
        if not path.exists():
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        recs = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:  # a line torn by a kill or power cut is not worth dying over at the end of an epoch
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                recs.append(rec)
        steps = [(r["step"], r["loss"]) for r in recs if "loss" in r and "event" not in r]
        devs = [r for r in recs if r.get("event") == "epoch"]
        fig, ax = plt.subplots(figsize=(7, 4))
        if steps:
            ax.plot(*zip(*steps), label="train loss", color="tab:blue")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        if devs:
            m = "wer" if "wer" in devs[0] else "bleu"
            ax2 = ax.twinx()
            ax2.plot([r["step"] for r in devs], [r[m] for r in devs], "o-", color="tab:red", label=f"dev {m}")
            ax2.set_ylabel(f"dev {m}")
        ax.set_title("learning curve")
        fig.tight_layout()
        fig.savefig(self.out / "learning_curve.png", dpi=80)
        plt.close(fig)


def train(cfg: TrainConfig, out: Path, resume: bool = False, quiet: bool = False) -> Path:
    """Train and return the path of EXPDIR/model.pt.

    The main process holds EXPDIR's lock (asr_s2s.lock) for the whole run, taken before anything is read or
    written there: a second run on the folder, with or without ``resume``, is refused at once instead of
    interleaving its checkpoints with the live run's."""
    from . import lock

    rank, _, _ = dist_env()
    if rank != 0:  # DDP: the other ranks write nothing of their own into EXPDIR
        return Trainer(cfg, out, resume=resume, quiet=quiet).fit()
    try:
        lock.acquire(out)  # FolderLockedError (a UsageError) when another run holds it
    except OSError as exc:
        raise TrainingError(f"{out}: output directory is not writable ({exc.strerror or exc})") from None
    try:
        return Trainer(cfg, out, resume=resume, quiet=quiet).fit()
    finally:
        lock.release(out)


__all__ = ["train", "Trainer", "TrainingError", "lr_factor", "planned_steps"]
