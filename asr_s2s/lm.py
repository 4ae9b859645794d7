"""Token-level LSTM language models for shallow fusion in beam search.

An LM reads `<sos> y_1 .. y_n` and predicts `y_1 .. y_n <eos>` over the recognizer's own tokenizer
(characters or sentencepiece), so its log-probabilities add to the decoder's token by token. It is one
self-contained file (config, tokenizer, weights, dev perplexity) that loads with ``weights_only=True``.

    asr-s2s train-lm train.txt --tokenizer exp/an4/model.pt --out exp/an4/lm   # -> exp/an4/lm/lm.pt
    asr-s2s evaluate exp/an4/model.pt dev.jsonl --beam 10 --lm exp/an4/lm/lm.pt --lm-weight 0.3
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .text import Tokenizer, tokenizer_from_state_dict
from .tokens import EOS, PAD, SOS, UNK
from .dataclass_dict import from_dict_strict

LM_FORMAT = "asr-s2s-lm/1"
LMState = tuple[Tensor, Tensor]  # h, c: (layers, N, hidden)


@dataclass
class LMConfig:
    vocab_size: int = 32
    embed_dim: int = 128
    hidden: int = 256
    layers: int = 2
    dropout: float = 0.2

    def __post_init__(self) -> None:
        for name in ("vocab_size", "embed_dim", "hidden", "layers"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"LM {name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LM dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LMConfig":
        return from_dict_strict(cls, d)


class LSTMLM(nn.Module):
    """embedding -> LSTM stack -> projection to the vocabulary."""

    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=PAD)
        self.rnn = nn.LSTM(cfg.embed_dim, cfg.hidden, cfg.layers, batch_first=True,
                           dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.drop = nn.Dropout(cfg.dropout)
        self.output = nn.Linear(cfg.hidden, cfg.vocab_size)

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens (B, U) -> logits (B, U, V) of the token after each position."""
        out, _ = self.rnn(self.drop(self.embed(tokens)))
        return self.output(self.drop(out))

    def loss(self, tgt: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """tgt (B, U) token ids without sos/eos, lengths (B,) -> (summed NLL of `y <eos>`, token count)."""
        b, u = tgt.shape
        real = torch.arange(u)[None, :] < lengths[:, None]
        tgt = tgt.masked_fill(~real, PAD)
        inp = torch.cat([tgt.new_full((b, 1), SOS), tgt], dim=1)
        out = torch.cat([tgt, tgt.new_full((b, 1), PAD)], dim=1)
        out.scatter_(1, lengths[:, None], EOS)
        logits = self(inp)
        nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), out.reshape(-1), ignore_index=PAD, reduction="sum")
        return nll, (out != PAD).sum()

    def init_state(self, n: int, device: torch.device | str = "cpu") -> LMState:
        z = torch.zeros(self.cfg.layers, n, self.cfg.hidden, device=device)
        return z, z.clone()

    def step(self, tokens: Tensor, state: LMState) -> tuple[Tensor, LMState]:
        """tokens (N,) -> log-probabilities (N, V) of the next token, state after `tokens`."""
        out, state = self.rnn(self.embed(tokens)[:, None], state)
        return torch.log_softmax(self.output(out[:, 0]).float(), dim=-1), state

    @staticmethod
    def select_state(state: LMState, rows: Tensor) -> LMState:
        return state[0].index_select(1, rows), state[1].index_select(1, rows)


# ---- files -----------------------------------------------------------------------------------------
def save_lm(path: str | os.PathLike, lm: LSTMLM, tokenizer: Tokenizer, meta: dict | None = None) -> Path:
    return save_checkpoint(path, {"format": LM_FORMAT, "config": asdict(lm.cfg), "tokenizer": tokenizer.state_dict(),
                                  "model": {k: v.detach().cpu() for k, v in lm.state_dict().items()},
                                  "meta": dict(meta or {})})


def load_lm(path: str | os.PathLike) -> tuple[LSTMLM, Tokenizer, dict]:
    """-> (LM in eval mode, its tokenizer, meta). CheckpointError naming the file for anything but an LM file."""
    payload = load_checkpoint(path)
    if payload.get("format") != LM_FORMAT:
        raise CheckpointError(f"{path}: not an asr-s2s language model file (format {payload.get('format')!r}; "
                              f"expected {LM_FORMAT!r}: make one with `asr-s2s train-lm`)")
    try:
        lm = LSTMLM(LMConfig.from_dict(payload["config"]))
        lm.load_state_dict(payload["model"])
        tok = tokenizer_from_state_dict(payload["tokenizer"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a valid language model file ({type(e).__name__}: {str(e)[:300]})") from e
    return lm.eval(), tok, dict(payload.get("meta") or {})


# ---- training ------------------------------------------------------------------------------------------
@dataclass
class LMTrainConfig:
    steps: int = 3000  # updates (the schedule is defined over them: same model on any machine)
    batch_size: int = 64  # sentences per update
    lr: float = 2e-3
    warmup: int = 100
    dev_share: float = 0.05  # of the text lines held out for perplexity, when no dev text is given
    seed: int = 0
    eval_every: int = 500
    threads: int = 1


def read_text_lines(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Non-empty lines of text files; a JSON-lines manifest contributes its "text" fields. Errors name the file."""
    lines: list[str] = []
    for p in paths:
        path = Path(p)
        try:
            raw = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such text file") from None
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        except OSError as e:
            raise ValueError(f"{path}: cannot read ({e.strerror})") from None
        manifest = path.suffix == ".jsonl"
        for no, line in enumerate(raw.splitlines(), 1):
            line = line.strip()
            if not line:
                continue
            if manifest:
                try:
                    line = str(json.loads(line)["text"])
                except (ValueError, KeyError, TypeError):
                    raise ValueError(f"{path}: line {no} is not a manifest entry with a \"text\" field") from None
            lines.append(line)
    return lines


def _encode_all(lines: Iterable[str], tokenizer: Tokenizer) -> tuple[list[list[int]], int]:
    out, dropped = [], 0
    for line in lines:
        ids = tokenizer.encode(line)
        if not ids or UNK in ids:  # a line the recognizer cannot spell teaches it nothing it can use
            dropped += 1
            continue
        out.append(ids)
    return out, dropped


def _batch(seqs: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
    lengths = torch.tensor([len(s) for s in seqs])
    tgt = torch.zeros(len(seqs), int(lengths.max()), dtype=torch.long)
    for i, s in enumerate(seqs):
        tgt[i, :len(s)] = torch.tensor(s)
    return tgt, lengths


@torch.no_grad()
def perplexity(lm: LSTMLM, seqs: Sequence[Sequence[int]], batch_size: int = 128) -> float:
    """exp(mean NLL per token, eos included) over `seqs`."""
    was = lm.training
    lm.eval()
    nll, n = 0.0, 0
    for i in range(0, len(seqs), batch_size):
        tgt, lengths = _batch(seqs[i:i + batch_size])
        s, c = lm.loss(tgt, lengths)
        nll, n = nll + float(s), n + int(c)
    lm.train(was)
    return math.exp(nll / max(n, 1))


def train_lm(texts: Sequence[str], tokenizer: Tokenizer, out: str | os.PathLike, cfg: LMConfig | None = None,
             train_cfg: LMTrainConfig | None = None, dev_texts: Sequence[str] | None = None, resume: bool = False,
             log=print) -> Path:
    """Train an LSTM LM on `texts` with `tokenizer`; writes OUT/lm.pt (and OUT/lm_state.pt to resume from).

    Deterministic for a seed: batches are drawn from a seeded generator per update, and a resumed run restores
    weights, optimizer and generator state, so it ends with the weights an uninterrupted run would have."""
    out = Path(out)
    tc = train_cfg or LMTrainConfig()
    cfg = cfg or LMConfig()
    cfg = LMConfig(**{**asdict(cfg), "vocab_size": tokenizer.vocab_size})
    seqs, dropped = _encode_all(texts, tokenizer)
    if dev_texts is None:
        rng = random.Random(tc.seed)
        order = list(range(len(seqs)))
        rng.shuffle(order)
        n_dev = max(1, int(round(tc.dev_share * len(seqs)))) if len(seqs) > 20 else 0
        dev = [seqs[i] for i in order[:n_dev]]
        seqs = [seqs[i] for i in order[n_dev:]]
    else:
        dev, d2 = _encode_all(dev_texts, tokenizer)
        dropped += d2
    if not seqs:
        raise ValueError("no training text left for the language model (every line empty or unencodable)")
    torch.set_num_threads(max(1, tc.threads))
    torch.manual_seed(tc.seed)
    lm = LSTMLM(cfg)
    opt = torch.optim.Adam(lm.parameters(), lr=tc.lr)
    gen = torch.Generator().manual_seed(tc.seed)
    step, history = 0, []
    state_path = out / "lm_state.pt"
    if resume and state_path.exists():
        st = load_checkpoint(state_path)
        lm.load_state_dict(st["model"])
        opt.load_state_dict(st["optim"])
        gen.set_state(st["generator"])
        step, history = int(st["step"]), list(st["history"])
        log(f"resuming the language model at update {step} of {tc.steps}")
    elif state_path.exists() or (out / "lm.pt").exists():
        raise ValueError(f"{out} already holds a language model; pass --resume to continue it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    lm.train()
    t0 = time.perf_counter()

    def save_state() -> None:
        save_checkpoint(state_path, {"format": "asr-s2s-train/lm", "model": lm.state_dict(), "optim": opt.state_dict(),
                                     "generator": gen.get_state(), "step": step, "history": history})

    while step < tc.steps:
        idx = torch.randint(len(seqs), (min(tc.batch_size, len(seqs)),), generator=gen).tolist()
        tgt, lengths = _batch([seqs[i] for i in idx])
        factor = min(1.0, (step + 1) / max(1, tc.warmup)) * 0.5 * (1 + math.cos(math.pi * step / tc.steps))
        for g in opt.param_groups:
            g["lr"] = tc.lr * factor
        nll, n = lm.loss(tgt, lengths)
        opt.zero_grad(set_to_none=True)
        (nll / n).backward()
        nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
        opt.step()
        step += 1
        if step % tc.eval_every == 0 or step == tc.steps:
            rec = {"step": step, "train_ppl": math.exp(float(nll.detach()) / int(n)),
                   "dev_ppl": perplexity(lm, dev) if dev else None, "seconds": round(time.perf_counter() - t0, 1)}
            history.append(rec)
            save_state()
            log(json.dumps(rec))
    meta = {"steps": step, "dev_ppl": history[-1]["dev_ppl"] if history else None, "train_lines": len(seqs),
            "dev_lines": len(dev), "dropped_lines": dropped, "history": history}
    path = save_lm(out / "lm.pt", lm.eval(), tokenizer, meta)
    log(f"language model: {path} (dev perplexity {meta['dev_ppl']})")
    return path
