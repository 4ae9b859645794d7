"""Scorers that beam search adds to the attention decoder's log-probabilities.

A hypothesis is ranked by a weighted sum (ESPnet's `BeamSearch`, SpeechBrain's `ScorerBuilder`)::

    score(y) = (1 - λ) log p_att(y | x) + λ log p_ctc(y... | x) + β log p_lm(y) + γ |y|   [+ vocabulary mask]

Two kinds of scorer, batched over all N = B*K hypotheses of a search step:

- a *full* scorer scores every token of the vocabulary: ``score(tokens, state) -> (N, V), state'``
  (`LMScorer`, `VocabularyConstraint`);
- a *partial* scorer scores only C candidates per hypothesis, the pre-beam chosen by the full scores:
  ``score(tokens, state, cand) -> (N, C), state'`` (`CTCPrefixScorer`, whose cost grows with the frames
  times the candidates).

``tokens`` (N,) is each hypothesis's last token (``SOS`` at the first step). A full scorer's new state has
consumed that token; a partial scorer's new state holds one entry per candidate. After the search picks
the survivors, ``select(state', rows[, positions])`` keeps their states: rows index hypotheses of the
step, positions the chosen candidate of each (partial scorers only). All scores are log-domain and never
positive, so a hypothesis's weighted score only falls as it grows (beam search's early stop relies on it;
the length bonus γ is the search's own term and it accounts for it).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, Sequence

import torch
from torch import Tensor, nn

from ..tokens import CTC_BLANK, EOS, SOS

NEG_INF = float("-inf")


class FullScorer(Protocol):
    def init_state(self, utts: Tensor) -> Any:
        """State for hypotheses of utterances `utts` (N,) (rows of the encoder batch)."""

    def score(self, tokens: Tensor, state: Any) -> tuple[Tensor, Any]:
        """tokens (N,) -> log-scores (N, V) of every next token, state after `tokens`."""

    def select(self, state: Any, rows: Tensor) -> Any:
        """Keep hypotheses `rows` (N',) of `state`."""


class PartialScorer(Protocol):
    def init_state(self, utts: Tensor) -> Any: ...

    def score(self, tokens: Tensor, state: Any, cand: Tensor) -> tuple[Tensor, Any]:
        """tokens (N,), cand (N, C) candidate next tokens -> log-scores (N, C), per-candidate state."""

    def select(self, state: Any, rows: Tensor, positions: Tensor | None = None) -> Any:
        """Keep hypotheses `rows`; with `positions` (N',), the candidate each one took (state from `score`)."""


# ---- CTC prefix score ------------------------------------------------------------------------------------
class CTCState(NamedTuple):
    """utts (N,): encoder row of each hypothesis; r (T, 2, N): log-probability that the prefix ends at frame
    t in a label (r[:, 0]) or in a blank (r[:, 1]); psi (N,): the prefix's log-probability (of every CTC path
    that starts with it); last (N,): its last label (-1 when empty); length: the prefix length (the same
    for every hypothesis of a step)."""

    utts: Tensor
    r: Tensor
    psi: Tensor
    last: Tensor
    length: int


class CTCPrefixScorer:
    """CTC prefix scores (Watanabe et al. 2017, "Hybrid CTC/attention"), vectorised over hypotheses and
    candidates; the recursion over frames is the one sequential loop.

    ``score`` gives, for each candidate c of hypothesis h, log psi(h c) - log psi(h): how much appending c
    lowers the probability that the CTC paths start with the prefix. For c = eos the new "prefix" is the
    whole transcript, so psi(h eos) = p_ctc(h | x). Summed over a hypothesis's tokens the scores give
    log p_ctc(y | x) for a finished one. Blank, sos and pad are never labels: -inf.

    logp (B, T, V): CTC log-probabilities of the encoder batch; lengths (B,). Frames past an utterance's
    length are padded with a certain blank (log 1) and impossible labels, so every utterance can be read at
    the batch's last frame.
    """

    def __init__(self, logp: Tensor, lengths: Tensor, blank: int = CTC_BLANK) -> None:
        b, t, v = logp.shape
        x = logp.float().transpose(0, 1).clone()  # (T, B, V)
        pad = torch.arange(t, device=logp.device)[:, None] >= lengths[None, :]  # (T, B)
        x.masked_fill_(pad[:, :, None], NEG_INF)
        x[:, :, blank].masked_fill_(pad, 0.0)
        self.x, self.blank, self.vocab_size = x, blank, v
        self.never = torch.zeros(v, dtype=torch.bool, device=logp.device)
        self.never[[blank, SOS]] = True

    def init_state(self, utts: Tensor) -> CTCState:
        n = utts.numel()
        r = self.x.new_full((self.x.size(0), 2, n), NEG_INF)
        r[:, 1] = torch.cumsum(self.x[:, utts, self.blank], dim=0)  # the empty prefix: blanks only
        return CTCState(utts, r, self.x.new_zeros(n), torch.full_like(utts, -1), 0)

    def score(self, tokens: Tensor, state: CTCState, cand: Tensor) -> tuple[Tensor, CTCState]:
        utts, r, psi_prev, last, length = state
        t_max, n, c = r.size(0), cand.size(0), cand.size(1)
        x_c = self.x[:, utts[:, None].expand(n, c), cand]  # (T, N, C)
        x_b = self.x[:, utts, self.blank][:, :, None].expand(t_max, n, c)
        r_sum = torch.logaddexp(r[:, 0], r[:, 1])  # (T, N): the prefix, ending anywhere up to t
        # A label repeated right after itself needs a blank between: only paths ending in blank extend.
        phi = torch.where((cand == last[:, None])[None], r[:, 1, :, None], r_sum[:, :, None])  # (T, N, C)
        r_new = r.new_full((t_max, 2, n, c), NEG_INF)
        if length == 0:
            r_new[0, 0] = x_c[0]
        start = max(length, 1)  # a prefix of `length` labels cannot end before frame length - 1
        rn, rb = r_new[:, 0], r_new[:, 1]
        for t in range(start, t_max):  # the one sequential loop: four kernels a frame, written in place
            torch.logaddexp(rn[t - 1], phi[t - 1], out=rn[t]).add_(x_c[t])
            torch.logaddexp(rn[t - 1], rb[t - 1], out=rb[t]).add_(x_b[t])
        terms = [rn[start - 1][None]]
        if start < t_max:
            terms.append(phi[start - 1:t_max - 1] + x_c[start:])
        psi = torch.logsumexp(torch.cat(terms), dim=0)  # (N, C)
        psi = torch.where(cand == EOS, r_sum[-1][:, None], psi)
        psi = psi.masked_fill(self.never[cand], NEG_INF)
        delta = psi - psi_prev[:, None]
        return delta, CTCState(utts, r_new, psi, cand, length + 1)

    def select(self, state: CTCState, rows: Tensor, positions: Tensor | None = None) -> CTCState:
        utts, r, psi, last, length = state
        if positions is None:
            return CTCState(utts[rows], r[:, :, rows], psi[rows], last[rows], length)
        return CTCState(utts[rows], r[:, :, rows, positions], psi[rows, positions], last[rows, positions], length)


def ctc_greedy(logp: Tensor, lengths: Tensor, blank: int = CTC_BLANK) -> list[list[int]]:
    """Best-path CTC decoding: per frame the most likely label, repeats merged, blanks (and the special tokens,
    which never occur in a CTC target) dropped. logp (B, T, V), lengths (B,) -> token ids per utterance."""
    best = logp.argmax(dim=-1)  # (B, T)
    t = best.size(1)
    real = torch.arange(t, device=best.device)[None, :] < lengths[:, None]
    changed = torch.ones_like(real)
    changed[:, 1:] = best[:, 1:] != best[:, :-1]
    keep = real & changed & (best != blank) & (best != SOS) & (best != EOS)
    return [row[k].tolist() for row, k in zip(best, keep)]


# ---- language model ----------------------------------------------------------------------------------------
class LMScorer:
    """A token-level language model as a full scorer: `lm.step(tokens, state) -> (log-probs (N, V), state)`,
    `lm.init_state(n)`, `lm.select_state(state, rows)` (see asr_s2s.lm.LSTMLM). The LM reads `<sos>` first, as
    in training, and scores eos as the end of the transcript."""

    def __init__(self, lm: nn.Module) -> None:
        self.lm = lm

    def init_state(self, utts: Tensor) -> Any:
        return self.lm.init_state(utts.numel(), utts.device)

    def score(self, tokens: Tensor, state: Any) -> tuple[Tensor, Any]:
        return self.lm.step(tokens, state)

    def select(self, state: Any, rows: Tensor) -> Any:
        return self.lm.select_state(state, rows)


# ---- vocabulary constraint -----------------------------------------------------------------------------
class VocabularyConstraint:
    """Only token sequences that spell an allowed entry: a trie over the entries' token ids, as a full
    scorer whose scores are 0 (allowed) or -inf (not). State: one trie node per hypothesis.

    mode "phrases": the transcript is exactly one entry. mode "words": any sequence of entries, each
    followed by `separator` (e.g. the space token of a character tokenizer) before the next; with no
    separator (sentencepiece, whose word pieces carry the word boundary), an entry's end continues as the
    trie's root. eos is allowed only where an entry ends.

    sequences: the token ids of each entry; vocab_size: V.
    """

    strict_end = True  # beam search finishes a hypothesis only on eos, never at the length limit

    def __init__(self, sequences: Sequence[Sequence[int]], vocab_size: int, mode: str = "phrases",
                 separator: Sequence[int] = ()) -> None:
        if mode not in ("phrases", "words"):
            raise ValueError(f"vocabulary mode must be 'phrases' or 'words', got {mode!r}")
        seqs = [list(s) for s in sequences if len(s)]
        if not seqs:
            raise ValueError("the vocabulary has no entry")
        children: list[dict[int, int]] = [{}]
        accept = [False]
        for seq in seqs:
            node = 0
            for tok in seq:
                if not 0 <= tok < vocab_size or tok in (EOS, SOS, CTC_BLANK):
                    raise ValueError(f"token id {tok} cannot be part of a vocabulary entry")
                if tok not in children[node]:
                    children.append({})
                    accept.append(False)
                    children[node][tok] = len(children) - 1
                node = children[node][tok]
            accept[node] = True
        if mode == "words":
            root = children[0]
            for node, ends in enumerate(accept):
                if not ends:
                    continue
                if separator:
                    self._add_path(children, accept, node, list(separator), target=0)
                else:
                    for tok, child in root.items():
                        children[node].setdefault(tok, child)
        dead = len(children)  # the node of a sequence that left the trie: nothing is allowed from it
        nxt = torch.full((dead + 1, vocab_size), dead, dtype=torch.long)
        allowed = torch.full((dead + 1, vocab_size), NEG_INF)
        for node, kids in enumerate(children):
            for tok, child in kids.items():
                nxt[node, tok] = child
                allowed[node, tok] = 0.0
            if accept[node]:
                allowed[node, EOS] = 0.0
            nxt[node, SOS] = node  # the first step's input
        self.next, self.allowed, self.mode = nxt, allowed, mode
        self.num_entries = len(seqs)

    @staticmethod
    def _add_path(children: list[dict[int, int]], accept: list[bool], node: int, path: list[int], target: int) -> None:
        for tok in path[:-1]:
            if tok not in children[node]:
                children.append({})
                accept.append(False)
                children[node][tok] = len(children) - 1
            node = children[node][tok]
        children[node].setdefault(path[-1], target)

    def to(self, device: torch.device | str) -> "VocabularyConstraint":
        self.next, self.allowed = self.next.to(device), self.allowed.to(device)
        return self

    def init_state(self, utts: Tensor) -> Tensor:
        return torch.zeros_like(utts)

    def score(self, tokens: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        node = self.next[state, tokens]
        return self.allowed[node], node

    def select(self, state: Tensor, rows: Tensor) -> Tensor:
        return state[rows]
