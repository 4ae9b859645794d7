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

The loop, :func:`fit`, reads top to bottom: :func:`train_one_epoch` (each update is :func:`train_step`, whose
forward pass is :func:`compute_loss`), then :func:`end_epoch` (dev score, best model, snapshot), then
:func:`finish` (the best epoch or the average of the last ones). Each takes the :class:`Run`, the objects
of one training process. Where it runs: :mod:`asr_s2s.distributed`; what it writes to resume:
:mod:`asr_s2s.train_checkpoint`; its record: :mod:`asr_s2s.train_log`; its data: :mod:`asr_s2s.pipeline`.
"""

from __future__ import annotations

import itertools
import math
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Optional

import torch
from torch.utils.data import DataLoader

from . import distributed
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .distributed import Dist
from .model import ASRModel
from .train_checkpoint import (
    TrainState,
    average_checkpoints,
    last_snapshots,
    load_train_state,
    remove_stale_temps,
    save_snapshot,
    save_train_state,
    seed_everything,
)
from .train_log import MetricsLog

if TYPE_CHECKING:
    from .pipeline import TrainData


class TrainingError(Exception):
    """A run that cannot start or continue (the message says why and what to do)."""


# ---- schedules: functions of update counts only (never of elapsed time), so every machine follows them ----
def lr_factor(cfg: TrainConfig, step: int, total_steps: int) -> float:
    """Multiplier of ``optim.lr`` for the update after ``step`` updates of a run planned at ``total_steps``."""
    o = cfg.optim
    warm = min(1.0, (step + 1) / max(1, o.warmup_steps))
    if o.schedule == "noam":
        return min(warm, math.sqrt(max(1, o.warmup_steps) / max(step + 1, 1)))
    if o.schedule == "constant":
        return warm
    progress = min(1.0, step / max(1, total_steps))
    cos = o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return warm * cos


def teacher_forcing(cfg: TrainConfig, step: int) -> float:
    """Teacher-forcing ratio after ``step`` updates (scheduled sampling when ``teacher_forcing_steps`` > 0)."""
    if cfg.teacher_forcing_steps <= 0:
        return cfg.teacher_forcing
    f = min(1.0, step / cfg.teacher_forcing_steps)
    return cfg.teacher_forcing + (cfg.teacher_forcing_final - cfg.teacher_forcing) * f


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


# ---- one training process -----------------------------------------------------------------------------
@dataclass
class Run:
    """The objects of one training process, handed to each function of the loop."""

    cfg: TrainConfig
    out: Path
    dist: Dist
    data: TrainData
    model: ASRModel
    net: torch.nn.Module  # what the forward pass calls: the model, or its DDP wrapper (which syncs gradients)
    opt: torch.optim.Optimizer
    scaler: Optional[torch.amp.GradScaler]  # fp16 on a GPU only
    state: TrainState
    log: MetricsLog
    num_params: int
    total_steps: int = 1  # planned updates (set by fit: the learning-rate schedule spans them)
    quiet: bool = False

    @property
    def ckpt_dir(self) -> Path:
        return self.out / "checkpoints"


def setup(cfg: TrainConfig, out: Path, resume: bool = False, quiet: bool = False) -> Run:
    """Device and process group, data, model, optimiser; with ``resume``, the state of ``checkpoints/last.pt``."""
    from .pipeline import build_data

    out = Path(out)
    d = distributed.setup(cfg.device, cfg.threads, cfg.amp)
    log = MetricsLog(out / "metrics.jsonl", enabled=d.is_main)
    if d.is_main:
        # Writable at all? Checked before tokenizer building and feature caching write into EXPDIR
        # (the space check, which needs the model size, follows once the model exists).
        preflight(out, 0)
    last = out / "checkpoints" / "last.pt"
    if last.exists() and not resume:
        raise TrainingError(f"{out} already holds a run ({last}); pass --resume to continue it or choose another --out")
    log.repair()
    if resume and d.is_main:
        remove_stale_temps(out / "checkpoints")
    seed_everything(cfg.seed)
    try:
        data = build_data(cfg, out, resume=resume and last.exists(), rank=d.rank, world=d.world)
    except CheckpointError as exc:  # EXPDIR/tokenizer.pt corrupt or carrying code
        raise TrainingError(f"cannot use {out}: {exc}") from None
    model = ASRModel(data.model_cfg, data.tokenizer, cfg.features if cfg.data.task == "asr" else None,
                     cmvn=cfg.data.cmvn, spec_augment=data.spec_augment, src_tokenizer=data.src_tokenizer)
    if data.cmvn_stats is not None and model.cmvn_stats is not None:
        model.set_cmvn_stats(*data.cmvn_stats)
    model = model.to(d.device)
    num_params = sum(p.numel() for p in model.seq2seq.parameters())
    if d.is_main:
        preflight(out, num_params)
        cfg.save(out / "config.yaml")
    net: torch.nn.Module = model
    if d.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    o = cfg.optim
    opt_cls = torch.optim.AdamW if o.optimizer == "adamw" else torch.optim.Adam
    opt = opt_cls(model.parameters(), lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if cfg.amp == "fp16" and d.device.type == "cuda" else None
    state = TrainState()
    if resume and last.exists():
        try:
            load_train_state(last, model, opt, scaler, state)
        except CheckpointError as exc:  # corrupt, foreign or code-carrying file: a clear refusal, no traceback
            raise TrainingError(f"cannot resume: {exc}") from None
        log({"event": "resumed", "step": state.step, "epoch": state.epoch, "batch_in_epoch": state.batch_in_epoch})
    # What the manifest reader dropped (per cause), recomputed on every start: part of the run's report.
    state.manifest_skipped = dict(data.manifest_skipped)
    if data.manifest_skipped:
        log({"event": "manifest_skipped", **data.manifest_skipped})
    return Run(cfg, out, d, data, model, net, opt, scaler, state, log, num_params, quiet=quiet)


def epoch_batches(run: Run, epoch: int) -> list[list[int]]:
    """This rank's share of every global batch of ``epoch`` (deterministic in the seed and the epoch)."""
    return distributed.shard(run.data.batches(epoch), run.dist)


def save_state(run: Run) -> None:
    if run.dist.is_main:
        save_train_state(run.ckpt_dir / "last.pt", run.model, run.opt, run.scaler, run.state)


# ---- the loop -------------------------------------------------------------------------------------------
def fit(run: Run) -> Path:
    """Train until the planned updates are taken (or early stopping, or the time cap) and write model.pt."""
    cfg, s = run.cfg, run.state
    # Fixed by the config and the data alone (the sampler's batches are a function of the seed and the epoch),
    # so the schedule and the stopping point are the same on any machine and after --resume.
    run.total_steps = planned_steps(cfg, (len(epoch_batches(run, e)) for e in itertools.count()))
    if run.dist.is_main and not run.quiet:
        cap = f" (safety cap: {cfg.max_minutes} min)" if cfg.max_minutes else ""
        print(f"training {run.num_params / 1e6:.2f} M parameters on {run.dist.device} x{run.dist.world}; "
              f"{len(run.data.train_set)} train utterances, {len(epoch_batches(run, 0))} batches/epoch, "
              f"{run.total_steps} updates planned{cap} -> {run.out}", flush=True)
    while s.epoch < cfg.epochs and not s.done:
        train_one_epoch(run, s.epoch)
        if s.done and not s.batch_in_epoch:
            break  # nothing trained since the last epoch end
        # An epoch ended by max_steps ran at the lowest learning rate and is often the best; one ended by
        # the time cap is what that run has. Either gets a dev check and a snapshot like a whole one (done stays set).
        end_epoch(run)
    s.done = True
    save_state(run)
    if run.dist.is_main and not run.quiet and (s.skipped_utterances or s.skipped_nonfinite or s.manifest_skipped):
        print(f"skipped: {s.skipped_utterances} unreadable utterance loads, {s.skipped_nonfinite} non-finite "
              f"steps, manifest entries {s.manifest_skipped} (details in {run.log.path})", flush=True)
    return finish(run)


def train_one_epoch(run: Run, epoch: int) -> None:
    """Train on the batches of ``epoch`` from ``state.batch_in_epoch`` on (a resumed epoch starts mid-way)."""
    from tqdm import tqdm

    cfg, s = run.cfg, run.state
    if s.batch_in_epoch == 0:
        s.skipped_batches += len(run.data.batches(epoch)) - len(epoch_batches(run, epoch))
    batches = epoch_batches(run, epoch)[s.batch_in_epoch :]
    # A DataLoader iterator draws its workers' base seed from `generator`, by default the global torch
    # RNG: a resume in mid-epoch would make one extra draw and shift every later dropout/SpecAugment
    # mask. A generator of its own (seed, epoch) keeps the global stream exactly as in an unbroken run.
    gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    if hasattr(run.data.train_set, "set_epoch"):  # waveform augmentation draws from (seed, epoch, item)
        run.data.train_set.set_epoch(epoch)
    loader = DataLoader(run.data.train_set, batch_sampler=batches, num_workers=cfg.data.num_workers,
                        collate_fn=run.data.collate, persistent_workers=False, generator=gen)
    run.net.train()
    bar = tqdm(total=len(batches), desc=f"epoch {epoch}", disable=not run.dist.is_main or run.quiet,
               mininterval=1.0 if sys.stderr.isatty() else 30.0, dynamic_ncols=True)
    t_last, audio_last, loss_acc, n_acc = time.perf_counter(), s.audio_seconds, 0.0, 0
    for indices, batch in zip(batches, loader):
        t0 = time.perf_counter()
        count_skipped(run, epoch, indices, batch)
        # Every utterance of the batch unreadable (on_error="skip"): all ranks skip together, or DDP would wait
        # for the missing one forever.
        empty = distributed.any_rank(batch is None, run.dist)
        loss = None if empty else train_step(run, batch)
        s.train_seconds += time.perf_counter() - t0
        s.audio_seconds += float(batch.get("duration", 0.0)) if batch is not None else 0.0
        s.batch_in_epoch += 1
        if loss is not None:
            loss_acc, n_acc = loss_acc + loss, n_acc + 1
        bar.update(1)
        if s.step % cfg.log_every == 0 and n_acc:
            now = time.perf_counter()
            rate = (s.audio_seconds - audio_last) / max(now - t_last, 1e-9) * run.dist.world
            rec = {"step": s.step, "epoch": epoch, "loss": loss_acc / n_acc, "lr": run.opt.param_groups[0]["lr"],
                   "teacher_forcing": teacher_forcing(cfg, s.step), "audio_s_per_s": rate, "train_seconds": s.train_seconds}
            run.log(rec)
            bar.set_postfix(loss=f"{rec['loss']:.3f}", aps=f"{rate:.0f}")
            t_last, audio_last, loss_acc, n_acc = now, s.audio_seconds, 0.0, 0
        if loss is not None and cfg.average_last > 0 and cfg.snapshot_every and s.step % cfg.snapshot_every == 0 \
                and run.dist.is_main:
            save_snapshot(run.ckpt_dir, s.step, run.model, keep=max(cfg.keep_epochs, cfg.average_last), kind="step")
        if cfg.checkpoint_every and s.step % cfg.checkpoint_every == 0 and loss is not None:
            save_state(run)
        if out_of_budget(run):
            s.done = True
            break
    bar.close()


def count_skipped(run: Run, epoch: int, indices: list[int], batch: Optional[dict]) -> None:
    """Count (state.skipped_utterances) and log the utterances the dataset could not load."""
    n = len(indices) if batch is None else int(batch.get("num_skipped", 0))
    if not n:
        return
    run.state.skipped_utterances += n
    entries = getattr(run.data.train_set, "entries", None)
    kept = set(batch["ids"]) if batch is not None else set()
    ids = [entries[j].id for j in indices if entries[j].id not in kept] if entries is not None else []
    run.log({"event": "skipped_audio", "step": run.state.step, "epoch": epoch, "count": n, "ids": ids[:64]})


def compute_loss(net: torch.nn.Module, batch: dict, cfg: TrainConfig, d: Dist, tf_ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward pass of one batch: (the loss to back-propagate, this rank's own mean loss).

    The first is normalised by the global token count (times the world size): DDP's gradient mean then equals
    one process's mean over the whole global batch."""
    src, src_lens, tgt, tgt_lens = (batch[k].to(d.device, non_blocking=True) for k in ("src", "src_lens", "tgt", "tgt_lens"))
    amp = (torch.autocast(d.device.type, dtype=torch.bfloat16 if cfg.amp == "bf16" else torch.float16)
           if cfg.amp == "bf16" or (cfg.amp == "fp16" and d.device.type == "cuda") else nullcontext())
    with amp:
        out = net(src, src_lens, tgt, tgt_lens, teacher_forcing=tf_ratio)  # ASRModel.forward is its loss
    ntok = torch.as_tensor(out["ntokens"], dtype=torch.float32, device=d.device).reshape(1)
    total = distributed.all_sum(ntok.clone(), d)
    return out["loss"].float() * ntok[0] / total[0] * d.world, out["loss"]


def train_step(run: Run, batch: dict) -> Optional[float]:
    """One update (learning rate from the schedule, clipped gradients); None when skipped for a non-finite
    loss or gradient (counted and logged: the weights stay as they were)."""
    cfg, s = run.cfg, run.state
    factor = lr_factor(cfg, s.step, run.total_steps)
    for g in run.opt.param_groups:
        g["lr"] = cfg.optim.lr * factor
    loss, own_loss = compute_loss(run.net, batch, cfg, run.dist, teacher_forcing(cfg, s.step))
    finite = distributed.all_ranks(torch.isfinite(loss.detach()), run.dist)
    run.opt.zero_grad(set_to_none=True)
    if not finite:
        s.skipped_nonfinite += 1
        run.log({"event": "skipped_nonfinite_loss", "step": s.step, "ids": batch.get("ids", [])[:8]})
        return None
    if run.scaler:
        run.scaler.scale(loss).backward()
        run.scaler.unscale_(run.opt)
    else:
        loss.backward()
    gnorm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.optim.grad_clip or float("inf"))
    if not torch.isfinite(gnorm):
        s.skipped_nonfinite += 1
        run.log({"event": "skipped_nonfinite_grad", "step": s.step})
        run.opt.zero_grad(set_to_none=True)
        if run.scaler:
            run.scaler.update()
        return None
    if run.scaler:
        run.scaler.step(run.opt)
        run.scaler.update()
    else:
        run.opt.step()
    s.step += 1
    return float(own_loss.detach())


def out_of_budget(run: Run) -> bool:
    """Stop after this update? At ``max_steps``, or when the opt-in ``max_minutes`` safety cap runs out."""
    c, s = run.cfg, run.state
    if c.max_steps and s.step >= c.max_steps:
        return True  # the same step on every rank
    if not c.max_minutes:
        return False
    # Clocks differ between ranks: rank 0's decides, so that every rank stops at the same step.
    over = distributed.from_main(s.train_seconds >= 60 * c.max_minutes, run.dist)
    if over:
        mark_cut_short(run)
    return over


def mark_cut_short(run: Run) -> None:
    """The time cap stopped the run before its planned updates: say so wherever its result is read."""
    c, s = run.cfg, run.state
    s.cut_short = True
    run.log({"event": "cut_short", "reason": "max_minutes", "max_minutes": c.max_minutes, "step": s.step,
             "planned_steps": run.total_steps, "train_seconds": s.train_seconds})
    if run.dist.is_main:
        print(f"WARNING: the max_minutes={c.max_minutes} cap stopped training at update {s.step} of "
              f"{run.total_steps} planned; the learning-rate schedule did not finish, so this run's model is not "
              f"the config's result (set max_minutes=null for that)", file=sys.stderr, flush=True)


# ---- epoch end: dev score, best model, snapshots, early stopping -------------------------------------------
def evaluate(run: Run) -> Optional[dict]:
    """Dev scores of the current weights ({"metric": "wer" | "bleu", "higher_is_better", <metric>, ...}), or None
    without a dev set."""
    return run.data.evaluate_dev(run.model, beam=run.cfg.eval_beam, ctc_weight=run.cfg.eval_ctc_weight)


def improves(res: dict, best: Optional[float], ties: bool = False) -> bool:
    """Whether the dev result ``res`` beats ``best`` (or equals it, with ``ties``)."""
    if best is None:
        return True
    v = res[res["metric"]]
    if res["higher_is_better"]:
        return v >= best if ties else v > best
    return v <= best if ties else v < best


def end_epoch(run: Run) -> None:
    cfg, s = run.cfg, run.state
    epoch = s.epoch
    stop = False
    if run.dist.is_main:
        res = evaluate(run)
        if res is not None:
            metric = res["metric"]
            if improves(res, s.best):
                s.best, s.best_epoch, s.bad_epochs = res[metric], epoch, 0
                run.model.save(run.out / "model.pt", meta=model_meta(run, res))
            else:
                s.bad_epochs += 1
            run.log({"event": "epoch", "epoch": epoch, "step": s.step, **{k: v for k, v in res.items() if k != "hypotheses"},
                     "train_seconds": s.train_seconds, "best": s.best})
            if not run.quiet:
                print(f"epoch {epoch}: dev {metric} {res[metric]:.4f} (best {s.best:.4f} @ {s.best_epoch}), "
                      f"step {s.step}, {s.train_seconds:.0f}s", flush=True)
            stop = bool(cfg.early_stop_patience and s.bad_epochs >= cfg.early_stop_patience)
        if cfg.average_last > 0 and not cfg.snapshot_every:
            save_snapshot(run.ckpt_dir, epoch, run.model, keep=max(cfg.keep_epochs, cfg.average_last))
        run.log.plot(every_s=60)
    stop = distributed.from_main(stop, run.dist)
    s.epoch += 1
    s.batch_in_epoch = 0
    if stop:
        s.done = True
    save_state(run)


def model_meta(run: Run, res: Optional[dict] = None) -> dict[str, Any]:
    s = run.state
    return {"step": s.step, "epoch": s.epoch, "planned_steps": run.total_steps, "cut_short": s.cut_short,
            "train_seconds": round(s.train_seconds, 1), "dev": {k: v for k, v in (res or {}).items() if isinstance(v, (int, float))},
            "num_parameters": run.num_params, "max_duration": run.data.max_duration}


def finish(run: Run) -> Path:
    """Write EXPDIR/model.pt: the best epoch, or the average of the last N if that is no worse on dev."""
    final = run.out / "model.pt"
    if not run.dist.is_main:
        distributed.barrier(run.dist)
        return final
    s = run.state
    kind = "step" if run.cfg.snapshot_every else "epoch"
    snaps = last_snapshots(run.ckpt_dir, run.cfg.average_last, kind) if run.cfg.average_last > 0 else []
    if len(snaps) > 1:
        run.model.seq2seq.load_state_dict(average_checkpoints(snaps))
        res = evaluate(run)
        if res is not None:
            m = res["metric"]
            kept = improves(res, s.best, ties=True)
            run.log({"event": "averaged", "snapshots": len(snaps), m: res[m], "kept": kept})
            if kept:
                s.best = res[m]
                run.model.save(final, meta={**model_meta(run, res), "averaged": len(snaps)})
    if not final.exists():  # no dev set, or no epoch finished: the current weights
        run.model.save(final, meta=model_meta(run))
    if s.cut_short:  # model.pt may come from an epoch before the cut: its meta must still tell
        payload = load_checkpoint(final)
        payload["meta"]["cut_short"] = True
        save_checkpoint(final, payload)
    run.log({"event": "end", "step": s.step, "planned_steps": run.total_steps, "epoch": s.epoch,
             "train_seconds": s.train_seconds, "best": s.best, "cut_short": s.cut_short})
    run.log.plot()
    distributed.barrier(run.dist)
    return final


def train(cfg: TrainConfig, out: Path, resume: bool = False, quiet: bool = False) -> Path:
    """Train and return the path of EXPDIR/model.pt.

    The main process holds EXPDIR's lock (asr_s2s.lock) for the whole run, taken before anything is read or
    written there: a second run on the folder, with or without ``resume``, is refused at once instead of
    interleaving its checkpoints with the live run's."""
    from . import lock

    if distributed.env_rank() != 0:  # DDP: the other ranks write nothing of their own into EXPDIR
        return fit(setup(cfg, out, resume=resume, quiet=quiet))
    try:
        lock.acquire(out)  # FolderLockedError (a UsageError) when another run holds it
    except OSError as exc:
        raise TrainingError(f"{out}: output directory is not writable ({exc.strerror or exc})") from None
    try:
        return fit(setup(cfg, out, resume=resume, quiet=quiet))
    finally:
        lock.release(out)


__all__ = ["train", "TrainingError", "Run", "setup", "fit", "train_one_epoch", "train_step", "compute_loss", "evaluate",
           "end_epoch", "finish", "lr_factor", "planned_steps", "preflight"]
