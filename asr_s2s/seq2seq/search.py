"""Batched greedy and beam search.

All hypotheses of all utterances advance together: one decoder step per output position for the
whole batch (B rows for greedy, B*K for beam), never a Python loop over utterances.

Length limit: utterance b may emit at most L_b = min(max_len, ceil(max_len_ratio * T'_b)) tokens
(eos included), T'_b its encoder length, so an untrained model that never says eos still stops;
max_len is one int or a (B,) tensor, one limit per utterance.
A hypothesis cut at L_b is returned without eos.

Scores (what `SearchResult.scores` holds and what beam search ranks finished hypotheses by) are the
total log-probability of the emitted tokens (eos included) divided by a length penalty lp(n),
n the number of emitted tokens:

- `length_norm="none"`:   lp(n) = 1                       (raw log-probability)
- `length_norm="length"`: lp(n) = n ** alpha              (alpha=1: mean log-prob per token)
- `length_norm="gnmt"`:   lp(n) = ((5 + n) / 6) ** alpha  (Wu et al. 2016, alpha ~ 0.6-1.0)

Greedy reports the same normalised score, so beam width 1 gives greedy's tokens and scores (equal up to
float rounding: greedy drops finished rows from its batch, which can change a product's summation order, and
takes the argmax of the logits, where beam search ranks log-probabilities).

The model: search talks only to the `Inference` interface (inference.py: encode, initial state, step). A plain
Seq2Seq is wrapped in the plain `Inference`; `asr_s2s.accel.accelerate(model, precision)` gives the same
interface on faster weights (bf16, int8, oneDNN layouts, compiled kernels), and is what the recognizer uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ..tokens import EOS, PAD, SOS
from .attention import AttentionMemory
from .decoder import DecoderState
from .inference import Inference, as_inference
from .scorers import CTCPrefixScorer, FullScorer

LENGTH_NORMS = ("none", "length", "gnmt")
# Greedy (beam) search drops finished rows (utterances) from the batch it steps once at most this fraction
# of them is live.
SHRINK_AT = 0.75


@dataclass
class SearchResult:
    """tokens: per utterance, the best hypothesis without eos; lengths (B,): len(tokens[b]);
    scores (B,): normalised log-probability (see module doc); attention: per utterance (L_b, T'_b),
    row i the weights used to emit tokens[b][i] (all zeros for attention "none")."""

    tokens: list[list[int]]
    lengths: Tensor
    scores: Tensor
    attention: list[Tensor]


def length_penalty(n: Tensor, length_norm: str = "length", alpha: float = 1.0) -> Tensor:
    """lp(n) for emitted-token counts n (any shape) -> float tensor of the same shape."""
    n = n.float()
    if length_norm == "none" or alpha == 0.0:
        return torch.ones_like(n)
    if length_norm == "length":
        return n.clamp(min=1.0) ** alpha
    if length_norm == "gnmt":
        return ((5.0 + n) / 6.0) ** alpha
    raise ValueError(f"length_norm must be one of {LENGTH_NORMS}, got {length_norm!r}")


def max_lengths(enc_lengths: Tensor, max_len: int | Tensor, max_len_ratio: float) -> Tensor:
    """(B,) token limit per utterance: min(max_len, ceil(ratio * T')), at least 1; max_len an int or (B,)."""
    lim = torch.ceil(enc_lengths.double() * max_len_ratio).long()
    if isinstance(max_len, Tensor):
        return torch.minimum(lim, max_len.to(lim.device, torch.long)).clamp(min=1)
    return lim.clamp(min=1, max=max(1, max_len))


def _check(length_norm: str, alpha: float) -> None:
    if length_norm not in LENGTH_NORMS:
        raise ValueError(f"length_norm must be one of {LENGTH_NORMS}, got {length_norm!r}")
    if alpha < 0:
        raise ValueError("alpha must be >= 0 (the early-stopping bound relies on lp growing with n)")


def _bonus_bound(limit: Tensor, steps: int, bonus: float, length_norm: str, alpha: float) -> Tensor | None:
    """(B,) the most a length bonus can add to a normalised score: max over n <= L_b of bonus * n / lp(n).
    A hypothesis's score less its bonus, (cum - bonus * n) / lp(L_b), bounds what the rest can give (log-scores
    only fall, and lp grows with n), so their sum bounds every continuation; None without a bonus."""
    if bonus == 0.0:
        return None
    n = torch.arange(1, steps + 1, device=limit.device)
    gain = bonus * n.float() / length_penalty(n, length_norm, alpha)  # (steps,)
    gain = gain[None, :].expand(limit.numel(), -1).masked_fill(n[None, :] > limit[:, None], float("-inf"))
    return gain.max(dim=1).values


def _result(tokens: Tensor, n_emit: Tensor, scores: Tensor, att: Tensor, enc_lengths: Tensor) -> SearchResult:
    """tokens (B, L) padded, n_emit (B,) tokens emitted incl. eos, att (B, L, T) -> SearchResult."""
    rows = tokens.tolist()
    n = n_emit.tolist()
    t_lens = enc_lengths.tolist()
    out_tokens, out_att = [], []
    for b, row in enumerate(rows):
        k = n[b] - 1 if n[b] > 0 and row[n[b] - 1] == EOS else n[b]
        out_tokens.append(row[:k])
        out_att.append(att[b, :k, :t_lens[b]].clone())
    lengths = torch.tensor([len(r) for r in out_tokens], dtype=torch.long)
    return SearchResult(out_tokens, lengths, scores, out_att)


def greedy_search(model: nn.Module | Inference, src: Tensor, src_lens: Tensor, *, max_len: int | Tensor = 200,
                  max_len_ratio: float = 2.0, length_norm: str = "length", alpha: float = 1.0) -> SearchResult:
    """Batched greedy decoding of a Seq2Seq model (or an Inference, see the module doc): rows that have emitted eos or reached their length
    limit stop (they emit pad at no cost) until every row is done.

    Finished rows leave the batch: once at most SHRINK_AT of the rows being stepped are still live, the
    state and attention memory are cut down to the live rows. Utterances of similar audio length differ
    widely in transcript length (AN4 dev in length-sorted batches of 16: 55% of row-steps live), and
    every step costs per row stepped."""
    _check(length_norm, alpha)
    inf = as_inference(model)
    with inf.running():
        enc = inf.encode(src, src_lens)
        state, mem = inf.initial_state(enc)
        step = inf.stepper()
        b, t_max = enc.states.size(0), enc.states.size(1)
        dev = enc.states.device
        limit = max_lengths(enc.lengths, max_len, max_len_ratio)
        steps = int(limit.max())  # a host sync before the loop; then one per step (the live count)
        rows = torch.arange(b, device=dev)  # original index of each row being stepped
        under = torch.arange(1, steps + 1, device=dev)[None, :] < limit[:, None]  # (B, steps): t + 1 < L_b
        tok = torch.full((b,), SOS, dtype=torch.long, device=dev)
        alive = torch.ones(b, dtype=torch.bool, device=dev)
        # Per step only what decides the next one (the argmax; log-probabilities are formed after the loop); a
        # finished row keeps being fed its own argmax until it leaves (rows never interact), and its tokens, scores
        # and counts are masked once, after the loop.
        # Per segment of steps between two cuts: (rows, tokens, logits, emitting rows, attention weights).
        segments: list[tuple[Tensor, ...]] = [(rows, [], [], [], [])]
        # One row (batch-1 decoding): its stop test is one host read of the token, not the five small tensor
        # ops of the batched test (7.3 -> 0.3 us per step, ~1% of a batch-1 decode of the reference model); the
        # loop's bound is its length limit.
        one_row = b == 1
        for t in range(steps):
            logits, state, w = step(tok, state, mem)
            tok = logits.argmax(dim=-1)
            for hist, x in zip(segments[-1][1:], (tok, logits, alive, w)):
                hist.append(x)
            if one_row:
                if int(tok) == EOS:
                    break
                continue
            alive = (tok != EOS).logical_and_(alive).logical_and_(under[:, t])
            n_alive = int(alive.sum())
            if n_alive == 0:
                break
            if n_alive <= SHRINK_AT * rows.numel():
                keep = alive.nonzero()[:, 0]
                rows, tok, alive, under = rows[keep], tok[keep], alive[keep], under[keep]
                state, mem = state.index_select(keep), mem.index_select(keep)
                segments.append((rows, [], [], [], []))
        parts = []  # per segment: rows, tokens (rows, n) with pad where not emitted, summed log-probs, counts, att
        for seg_rows, toks, logits, emitted, weights in segments:
            if toks:
                on, toks = torch.stack(emitted, 1), torch.stack(toks, 1)  # (rows, steps of the segment)
                lp = torch.log_softmax(torch.stack(logits, 1).float(), dim=-1).gather(2, toks[:, :, None])[:, :, 0]
                parts.append((seg_rows, toks.masked_fill_(~on, PAD), lp.masked_fill_(~on, 0.0).sum(1), on.sum(1),
                              torch.stack(weights, 1).float()))
        if len(parts) == 1 and parts[0][0].numel() == b:  # nobody left the batch: the parts are the result
            _, out_tok, score, n_emit, out_att = parts[0]
        else:
            n = sum(len(seg[1]) for seg in segments)
            out_tok = torch.full((b, n), PAD, dtype=torch.long, device=dev)
            out_att = torch.zeros(b, n, t_max, device=dev)
            score = torch.zeros(b, device=dev)
            n_emit = torch.zeros(b, dtype=torch.long, device=dev)
            t0 = 0
            for seg_rows, toks, lp_sum, count, att in parts:
                out_tok[seg_rows, t0:t0 + toks.size(1)] = toks
                out_att[seg_rows, t0:t0 + toks.size(1)] = att
                score.index_add_(0, seg_rows, lp_sum)
                n_emit.index_add_(0, seg_rows, count)
                t0 += toks.size(1)
        scores = score / length_penalty(n_emit, length_norm, alpha)
        return _result(out_tok, n_emit, scores, out_att, enc.lengths)


def beam_search(model: nn.Module | Inference, src: Tensor, src_lens: Tensor, *, beam: int = 4,
                max_len: int | Tensor = 200, max_len_ratio: float = 2.0, length_norm: str = "length",
                alpha: float = 1.0, ctc_weight: float = 0.0,
                scorers: Sequence[tuple[FullScorer, float]] = (), length_bonus: float = 0.0,
                pre_beam: float = 1.5) -> SearchResult:
    """Batched beam search over a flattened (B*K) batch.

    Each step takes, per utterance, the K best one-token extensions of its live hypotheses (ranked by
    total log-probability: all live hypotheses have the same length). Extensions ending in eos (or
    reaching the length limit) leave the beam as finished hypotheses, scored with the length
    penalty; the rest stay live, so the beam refills to K from them next step (as in ESPnet). With
    K = 1 this is exactly greedy search. An utterance stops when nothing is live, or when no live
    hypothesis can still beat its best finished one: log-probabilities only decrease and lp(n)
    grows with n, so cum / lp(L_b) bounds every continuation and the early stop is exact.

    Like every pruned beam search, a wider beam is not guaranteed to score at least as well as
    greedy: the greedy path's eos extension can fall outside the top K of a step. On trained models
    this is rare (tests/test_search.py checks it on unseen utterances); on half-trained models with
    flat distributions we measured it in ~1% of (utterance, K, normalisation) cases, mostly K = 2.

    Scorers (see scorers.py): a hypothesis's score is (1 - ctc_weight) times the decoder's log-probability,
    plus ctc_weight times its CTC prefix score (the model's CTC head; ctc_weight 1 is CTC prefix beam search
    steered by nothing else), plus weight times each full scorer's (a language model, a vocabulary
    constraint), plus length_bonus per token. The CTC prefix score, whose cost grows with the frames, is
    computed for the best ceil(pre_beam * K) tokens of each hypothesis by the other scores (at least 4, eos
    always among them); for all tokens when the other scores carry no weight. With no scorer, no CTC and no bonus this is the
    plain search above, to the bit.

    The loop, one decoder step per output position: `_extend` scores the extensions and keeps the K best,
    `_Beams.finish` records the finished ones and stops utterances that cannot improve, `_Hyps.follow` moves the
    hypotheses' states to the extensions kept, `_shrink` drops stopped utterances from the batch, and `_backtrack`
    reads each utterance's best hypothesis back from the per-step histories.
    """
    _check(length_norm, alpha)
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    if not 0.0 <= ctc_weight <= 1.0:
        raise ValueError(f"ctc_weight must be in [0, 1], got {ctc_weight}")
    inf = as_inference(model)
    if ctc_weight > 0 and not inf.has_ctc:
        raise ValueError("ctc_weight > 0 needs a model trained with a CTC head (model.ctc_weight > 0)")
    k = beam
    with inf.running():
        enc = inf.encode(src, src_lens)
        b = enc.states.size(0)
        dev = enc.states.device
        expand = torch.arange(b, device=dev).repeat_interleave(k)
        state, mem = inf.initial_state(enc)
        step = inf.stepper()
        full = [(sc, float(wt)) for sc, wt in scorers if wt != 0.0]
        ctc = CTCPrefixScorer(inf.ctc_log_probs(enc), enc.lengths) if ctc_weight > 0 else None
        weights = _Weights(full, ctc, ctc_weight, length_bonus, pre_beam, torch.tensor([EOS], device=dev))
        hyps = _Hyps(torch.full((b * k,), SOS, dtype=torch.long, device=dev), state.index_select(expand),
                     mem.index_select(expand), [sc.init_state(expand) for sc, _ in full],
                     None if ctc is None else ctc.init_state(expand))
        # A constrained search (a vocabulary) only finishes on eos: a hypothesis cut at the length limit could
        # end inside a word. An utterance where nothing finishes comes out empty.
        strict_end = any(getattr(sc, "strict_end", False) for sc, _ in full)
        beams = _Beams.start(max_lengths(enc.lengths, max_len, max_len_ratio), k, length_bonus, length_norm, alpha)
        steps = int(beams.limit.max())
        # The length bonus is the one term that grows with length: bound what it can still add (see _bonus_bound).
        beams.bonus_bound = _bonus_bound(beams.limit, steps, length_bonus, length_norm, alpha)
        base = (torch.arange(b, device=dev) * k)[:, None]  # first hypothesis row of each utterance stepped
        final = [beams.best.clone(), beams.best_step.clone(), beams.best_slot.clone()]
        segments: list[tuple[Tensor, ...]] = [(beams.utts, [], [], [])]  # (utterances, tokens, origins, weights)
        for t in range(steps):
            nb = beams.utts.numel()
            logits, hyps.state, w = step(hyps.tok, hyps.state, hyps.mem)
            top, origin, token, pos, ctc_cand = _extend(logits, hyps, beams.cum, weights, k)
            beams.finish(top, token, t, strict_end, length_norm, alpha)
            att = w.view(nb, k, -1).gather(1, origin[:, :, None].expand(-1, -1, w.size(-1)))
            for hist, x in zip(segments[-1][1:], (token, origin, att)):
                hist.append(x)
            n_live = nb - int(beams.done.sum())
            if n_live == 0:
                break
            hyps.follow((base[:nb] + origin).view(-1), token, pos, ctc_cand, weights)
            if n_live <= SHRINK_AT * nb:  # finished utterances leave the batch, as in greedy_search
                beams.store(final)
                beams, hyps = _shrink(beams, hyps, weights, k)
                segments.append((beams.utts, [], [], []))
        beams.store(final)
        best, best_step, best_slot = final
        out_tok, out_att = _backtrack(segments, best_step, best_slot, b, k)
        n_emit = torch.where(torch.isfinite(best), best_step + 1, torch.zeros_like(best_step))
        return _result(out_tok, n_emit, best, out_att.float(), enc.lengths)


@dataclass
class _Weights:
    """What joins the decoder's log-probabilities in beam search, and with what weight (see beam_search)."""

    full: list[tuple[FullScorer, float]]  # full scorers (an LM, a vocabulary) with nonzero weights
    ctc: CTCPrefixScorer | None  # the CTC prefix scorer (ctc_weight > 0)
    ctc_weight: float
    length_bonus: float
    pre_beam: float
    eos_index: Tensor | None = None  # (1,) [EOS] on the search's device, made once (see _ctc_candidates)

    @property
    def plain(self) -> bool:
        """The decoder's log-probabilities alone rank the extensions."""
        return self.ctc is None and not self.full and self.length_bonus == 0.0


@dataclass
class _Hyps:
    """The K hypotheses of every utterance being stepped, as N = B' * K rows (utterance-major)."""

    tok: Tensor  # (N,) each hypothesis's last token
    state: DecoderState  # N rows
    mem: AttentionMemory  # N rows
    full_states: list[Any]  # one state per full scorer (_Weights.full), N rows each
    ctc_state: Any  # the CTC prefix scorer's state (None without CTC)

    def follow(self, rows: Tensor, token: Tensor, pos: Tensor, ctc_cand: Any, weights: _Weights) -> None:
        """Make hypothesis i the extension kept in slot i: rows (N,) the hypothesis it extends, token (B', K) the
        token it adds, pos (B', K) that token's column among the CTC candidates (see _extend)."""
        self.state = self.state.index_select(rows)
        self.full_states = [sc.select(st, rows) for (sc, _), st in zip(weights.full, self.full_states)]
        if weights.ctc is not None:
            self.ctc_state = weights.ctc.select(ctc_cand, rows, pos.reshape(-1))
        self.tok = token.view(-1)

    def select(self, rows: Tensor, weights: _Weights) -> "_Hyps":
        """Only hypotheses `rows` (M,), in that order."""
        return _Hyps(self.tok[rows], self.state.index_select(rows), self.mem.index_select(rows),
                     [sc.select(st, rows) for (sc, _), st in zip(weights.full, self.full_states)],
                     None if weights.ctc is None else weights.ctc.select(self.ctc_state, rows))


@dataclass
class _Beams:
    """Per utterance being stepped (B' rows): its live hypotheses' scores and its best finished hypothesis."""

    utts: Tensor  # (B',) original index of each utterance
    cum: Tensor  # (B', K) total score of each live hypothesis, -inf where none
    best: Tensor  # (B',) normalised score of the best finished hypothesis, -inf before one finishes
    best_step: Tensor  # (B',) the step it finished at
    best_slot: Tensor  # (B',) its slot at that step
    done: Tensor  # (B',) bool: nothing live can beat `best`
    limit: Tensor  # (B',) token limit L_b (see max_lengths)
    bound_lp: Tensor  # (B',) lp(L_b)
    bonus_bound: Tensor | None = None  # (B',) the most the length bonus can still add (see _bonus_bound)
    length_bonus: float = 0.0

    @classmethod
    def start(cls, limit: Tensor, k: int, length_bonus: float, length_norm: str, alpha: float) -> "_Beams":
        """One live hypothesis per utterance (score 0), so that the first K extensions are distinct."""
        b, dev = limit.numel(), limit.device
        cum = torch.full((b, k), float("-inf"), device=dev)
        cum[:, 0] = 0.0
        return cls(torch.arange(b, device=dev), cum, torch.full((b,), float("-inf"), device=dev),
                   torch.zeros(b, dtype=torch.long, device=dev), torch.zeros(b, dtype=torch.long, device=dev),
                   torch.zeros(b, dtype=torch.bool, device=dev), limit, length_penalty(limit, length_norm, alpha),
                   length_bonus=length_bonus)

    def finish(self, top: Tensor, token: Tensor, t: int, strict_end: bool, length_norm: str, alpha: float) -> None:
        """After step t: the kept extensions top (B', K) ending in `token` (B', K) that end (eos, or the length
        limit unless `strict_end`) may become the best finished hypothesis; they and the ones at the limit leave
        the live set; an utterance whose live hypotheses cannot beat its best is done (its live set emptied)."""
        neg_inf = float("-inf")
        valid = torch.isfinite(top)
        at_limit = (t + 1 >= self.limit)[:, None]
        ends = valid & (token == EOS) if strict_end else valid & ((token == EOS) | at_limit)
        pen = float(length_penalty(torch.tensor(t + 1), length_norm, alpha))  # CPU scalar, no sync
        norm = torch.where(ends, top / pen, torch.full_like(top, neg_inf))
        cand_best, cand_slot = norm.max(dim=-1)
        better = cand_best > self.best
        self.best = torch.where(better, cand_best, self.best)
        self.best_step = torch.where(better, torch.full_like(self.best_step, t), self.best_step)
        self.best_slot = torch.where(better, cand_slot, self.best_slot)
        cum = torch.where(ends | ~valid | at_limit, torch.full_like(top, neg_inf), top)
        if self.bonus_bound is None:
            self.done = self.done | (cum.max(dim=-1).values / self.bound_lp <= self.best)
        else:
            self.done = self.done | ((cum.max(dim=-1).values - self.length_bonus * (t + 1)) / self.bound_lp
                                     + self.bonus_bound <= self.best)
        self.cum = cum.masked_fill(self.done[:, None], neg_inf)

    def store(self, final: list[Tensor]) -> None:
        """Write best, best_step and best_slot into `final`'s (B,) tensors at the original utterance indices."""
        for full_x, x in zip(final, (self.best, self.best_step, self.best_slot)):
            full_x[self.utts] = x

    def select(self, keep: Tensor) -> "_Beams":
        """Only utterances `keep` (B'',)."""
        return _Beams(*(x[keep] for x in (self.utts, self.cum, self.best, self.best_step, self.best_slot, self.done,
                                          self.limit, self.bound_lp)),
                      bonus_bound=None if self.bonus_bound is None else self.bonus_bound[keep],
                      length_bonus=self.length_bonus)


def _extend(logits: Tensor, hyps: _Hyps, cum: Tensor, weights: _Weights, k: int
            ) -> tuple[Tensor, Tensor, Tensor, Tensor, Any]:
    """Score every one-token extension of every hypothesis and keep the K best per utterance.

    logits (N, V) the decoder's, cum (B', K) the hypotheses' scores. Updates the full scorers' states in `hyps` to
    after the step. -> top (B', K) the kept extensions' total scores, origin (B', K) the slot each extends,
    token (B', K) the token each adds, pos (B', K) its column among the scored candidates, and the CTC scorer's
    candidate states (None without CTC)."""
    nb = cum.size(0)
    logp = torch.log_softmax(logits.float(), dim=-1)
    ctc_cand, cand_tok = None, None
    if weights.plain:
        scores = logp
    else:
        att_weight = 1.0 - weights.ctc_weight
        scores = logp * att_weight if att_weight != 1.0 else logp
        for i, ((sc, wt), st) in enumerate(zip(weights.full, hyps.full_states)):
            s, hyps.full_states[i] = sc.score(hyps.tok, st)
            scores = scores + wt * s
        if weights.length_bonus != 0.0:
            scores = scores + weights.length_bonus
        if weights.ctc is not None:
            scores, cand_tok = _ctc_candidates(scores, att_weight == 0.0 and not weights.full, weights.pre_beam, k,
                                               weights.eos_index)
            delta, ctc_cand = weights.ctc.score(hyps.tok, hyps.ctc_state, cand_tok)
            scores = scores + weights.ctc_weight * delta
    p = scores.size(-1)
    cand = cum[:, :, None] + scores.view(nb, k, p)
    top, idx = cand.view(nb, k * p).topk(k, dim=-1)  # (B', K)
    origin, pos = idx // p, idx % p
    token = pos if cand_tok is None else cand_tok.reshape(nb, k * p).gather(1, idx)
    return top, origin, token, pos, ctc_cand


def _ctc_candidates(scores: Tensor, all_tokens: bool, pre_beam: float, k: int, eos_index: Tensor
                    ) -> tuple[Tensor, Tensor]:
    """The tokens the CTC prefix score is computed for: all of them when `all_tokens` (nothing else carries weight),
    else the best ceil(pre_beam * K) (at least 4) by `scores` (N, V), eos always among them: without it nothing
    may ever finish. eos_index: (1,) [EOS]. -> their scores (N, P), their token ids (N, P)."""
    v = scores.size(-1)
    n_pre = v if all_tokens else min(v, max(4, math.ceil(pre_beam * k)))
    if n_pre < v:
        pre, cand_tok = scores.index_fill(1, eos_index, float("-inf")).topk(n_pre - 1, dim=-1)
        scores = torch.cat([pre, scores[:, EOS:EOS + 1]], dim=1)  # (N, P)
        cand_tok = torch.cat([cand_tok, eos_index.expand(cand_tok.size(0), 1)], dim=1)
        return scores, cand_tok
    return scores, torch.arange(v, device=scores.device).expand(scores.size(0), v)


def _shrink(beams: _Beams, hyps: _Hyps, weights: _Weights, k: int) -> tuple[_Beams, _Hyps]:
    """Drop the utterances that are done from the batch being stepped (their results are stored already)."""
    keep = (~beams.done).nonzero()[:, 0]
    hyp_rows = (keep[:, None] * k + torch.arange(k, device=keep.device)).view(-1)
    return beams.select(keep), hyps.select(hyp_rows, weights)


def _backtrack(segments: list[tuple[Tensor, ...]], best_step: Tensor, best_slot: Tensor, b: int, k: int
               ) -> tuple[Tensor, Tensor]:
    """Each utterance's best finished hypothesis (step best_step, slot best_slot, both (B,)), read back through the
    per-step histories of tokens, origins and attention weights that `segments` hold (one segment per stretch of
    steps between two shrinks: (utterances stepped, [tokens (B', K)], [origins (B', K)], [weights (B', K, T)])).
    -> tokens (B, n) with pad after each hypothesis, attention (B, n, T), n the number of steps."""
    dev = best_step.device
    # Histories (n, B, K[, T]) of every utterance (zeros after an utterance left the batch: never read).
    if len(segments) == 1:
        toks, bps, atts = (torch.stack(h) for h in segments[0][1:])
    else:
        n = sum(len(seg[1]) for seg in segments)
        t_max = segments[0][3][0].size(-1)
        toks = torch.zeros(n, b, k, dtype=torch.long, device=dev)
        bps = torch.zeros_like(toks)
        atts = segments[0][3][0].new_zeros(n, b, k, t_max)
        t0 = 0
        for seg_utts, *hists in segments:
            if hists[0]:
                for full, h in zip((toks, bps, atts), hists):
                    full[t0:t0 + len(h), seg_utts] = torch.stack(h)
            t0 += len(hists[0])
    n = toks.size(0)
    out_tok = torch.full((b, n), PAD, dtype=torch.long, device=dev)
    out_att = atts.new_zeros(b, n, atts.size(-1))
    slot = best_slot.clone()
    for t in range(n - 1, -1, -1):
        on = t <= best_step
        out_tok[:, t] = torch.where(on, toks[t].gather(1, slot[:, None])[:, 0], out_tok[:, t])
        out_att[:, t] = torch.where(on[:, None], atts[t, torch.arange(b, device=dev), slot], out_att[:, t])
        slot = torch.where(on, bps[t].gather(1, slot[:, None])[:, 0], slot)
    return out_tok, out_att
