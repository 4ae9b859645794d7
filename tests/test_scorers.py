"""Scorers in beam search: CTC prefix scores, joint CTC/attention decoding, LM fusion, vocabulary constraints."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from asr_s2s.decoding import DecodeOptions, decode_batch, vocabulary_constraint
from asr_s2s.lm import LMConfig, LSTMLM, load_lm, perplexity, save_lm, train_lm
from asr_s2s.seq2seq import EOS, SOS, DecoderConfig, EncoderConfig, ModelConfig, Seq2Seq
from asr_s2s.seq2seq.scorers import CTCPrefixScorer, LMScorer, VocabularyConstraint, ctc_greedy
from asr_s2s.seq2seq.search import beam_search
from asr_s2s.text import CharTokenizer

from s2s_helpers import single_thread  # noqa: F401  (autouse fixture)

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "oh"]
TOKENIZER = CharTokenizer.build(WORDS + ["abcdefghijklmnopqrstuvwxyz"])


def _model(seed: int, ctc: bool = True) -> Seq2Seq:
    """An untrained (random) model: its distributions are flat and arbitrary, the hard case for bookkeeping."""
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=TOKENIZER.vocab_size,
                      encoder=EncoderConfig(cell="lstm", input_dim=8, hidden=16, layers=1, subsampling="none"),
                      decoder=DecoderConfig(cell="lstm", embed_dim=8, hidden=16, attention="location", attention_dim=16),
                      ctc_weight=0.3 if ctc else 0.0)
    return Seq2Seq(cfg).eval()


def _batch(seed: int, lengths=(13, 9, 6)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor(lengths)
    return torch.randn(len(lengths), int(lens.max()), 8, generator=g) * 2, lens


# ---- CTC prefix score ------------------------------------------------------------------------------------
def _ctc_total(logp: torch.Tensor, lens: torch.Tensor, ys: list[list[int]]) -> torch.Tensor:
    """Sum of prefix-score increments over each y followed by eos, fed one token at a time."""
    b = len(ys)
    sc = CTCPrefixScorer(logp, lens)
    state = sc.init_state(torch.arange(b))
    tok = torch.full((b,), SOS)
    total = torch.zeros(b, dtype=torch.float64)
    for i in range(max(len(y) for y in ys) + 1):
        cand = torch.tensor([[y[i] if i < len(y) else EOS] for y in ys])
        delta, cand_state = sc.score(tok, state, cand)
        live = torch.tensor([i <= len(y) for y in ys])
        total += torch.where(live, delta[:, 0].double(), torch.zeros(b, dtype=torch.float64))
        state = sc.select(cand_state, torch.arange(b), torch.zeros(b, dtype=torch.long))
        tok = cand[:, 0]
    return total


@pytest.mark.parametrize("seed", range(4))
def test_ctc_prefix_score_of_a_whole_hypothesis_is_the_ctc_log_likelihood(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    b, t, v = 4, 15, 7
    logp = torch.log_softmax(torch.randn(b, t, v, generator=g) * 3, dim=-1)
    lens = torch.tensor([15, 11, 6, 3])
    # repeated labels (need a blank between), a label at every frame it can take, a single label
    ys = [[4, 4, 5, 4], [3, 6, 6, 6, 3], [5, 4, 5], [6]]
    got = _ctc_total(logp, lens, ys)
    for i, y in enumerate(ys):
        ref = -F.ctc_loss(logp[i:i + 1, :lens[i]].transpose(0, 1).double(), torch.tensor([y]), lens[i:i + 1],
                          torch.tensor([len(y)]), blank=0, reduction="sum")
        assert got[i].item() == pytest.approx(ref.item(), abs=1e-4)


def test_ctc_prefix_scores_fall_and_special_tokens_are_impossible() -> None:
    g = torch.Generator().manual_seed(0)
    logp = torch.log_softmax(torch.randn(2, 10, 8, generator=g), dim=-1)
    sc = CTCPrefixScorer(logp, torch.tensor([10, 7]))
    state = sc.init_state(torch.arange(2))
    cand = torch.arange(8).expand(2, 8)
    delta, _ = sc.score(torch.full((2,), SOS), state, cand)
    assert torch.isinf(delta[:, [0, SOS]]).all()  # blank and sos are never labels
    assert (delta[:, 4:] <= 1e-5).all()  # a longer prefix is never more probable


def test_ctc_greedy_merges_repeats_and_drops_blanks() -> None:
    path = torch.tensor([[0, 5, 5, 0, 5, 6, 6, 0, 7], [4, 4, 4, 0, 0, 0, 0, 9, 9]])
    logp = torch.log_softmax(F.one_hot(path, 10).float() * 10, dim=-1)
    assert ctc_greedy(logp, torch.tensor([9, 4])) == [[5, 5, 6, 7], [4]]


# ---- joint search ------------------------------------------------------------------------------------------
class _Zero:
    """A full scorer that scores nothing: the rescoring path must then find what the plain search finds."""

    def init_state(self, utts):
        return utts

    def score(self, tokens, state):
        return torch.zeros(tokens.numel(), TOKENIZER.vocab_size), state

    def select(self, state, rows):
        return state[rows]


@pytest.mark.parametrize("beam", [1, 3])
@pytest.mark.parametrize("length_norm", ["length", "none"])
def test_beam_with_scorers_that_add_nothing_is_the_plain_beam(beam: int, length_norm: str) -> None:
    model = _model(1)
    src, lens = _batch(1)
    plain = beam_search(model, src, lens, beam=beam, length_norm=length_norm, max_len=12)
    zero = beam_search(model, src, lens, beam=beam, length_norm=length_norm, max_len=12, scorers=[(_Zero(), 1.0)])
    assert zero.tokens == plain.tokens
    torch.testing.assert_close(zero.scores, plain.scores)
    opts = DecodeOptions(beam=beam, length_norm=length_norm, ctc_weight=0.0, lm_weight=0.0, length_bonus=0.0)
    assert decode_batch(model, src, lens, opts, max_len=12).tokens == plain.tokens


@pytest.mark.parametrize("ctc_weight", [0.3, 1.0])
def test_joint_score_of_the_best_hypothesis_is_the_weighted_sum_of_both_models(ctc_weight: float) -> None:
    model = _model(2)
    src, lens = _batch(2)
    res = beam_search(model, src, lens, beam=4, ctc_weight=ctc_weight, length_norm="none", max_len=40,
                      max_len_ratio=5.0)
    with torch.no_grad():
        enc = model.encode(src, lens)
        ctc_lp = torch.log_softmax(model.ctc(enc.states), dim=-1)
        for i, toks in enumerate(res.tokens):
            tgt = torch.tensor([toks + [EOS]])
            logits, _ = model.decoder(type(enc)(enc.states[i:i + 1], enc.lengths[i:i + 1],
                                                tuple(f[:, i:i + 1] for f in enc.final)),
                                      torch.tensor([[SOS] + toks]))
            att = torch.log_softmax(logits, -1)[0].gather(1, tgt[0][:, None]).sum()
            ctc = -F.ctc_loss(ctc_lp[i:i + 1, :lens[i]].transpose(0, 1), torch.tensor([toks]), lens[i:i + 1],
                              torch.tensor([len(toks)]), reduction="sum", zero_infinity=False) if toks else \
                ctc_lp[i, :lens[i], 0].sum()
            expected = (1 - ctc_weight) * att + ctc_weight * ctc
            assert res.scores[i].item() == pytest.approx(expected.item(), abs=1e-3)


def test_length_bonus_moves_the_length_and_ctc_only_beam_agrees_with_ctc_greedy_on_a_peaked_head() -> None:
    model = _model(3)
    src, lens = _batch(3)
    # A wide beam on a random model: eos is among the candidates, and unnormalised scores prefer it at once.
    plain = beam_search(model, src, lens, beam=10, length_norm="none", max_len=15)
    bonus = beam_search(model, src, lens, beam=10, length_norm="none", max_len=15, length_bonus=5.0)
    assert sum(map(len, plain.tokens)) == 0 and all(len(t) >= 12 for t in bonus.tokens)
    with torch.no_grad():  # a sharper CTC head: prefix beam search must find a labelling at least as likely
        model.ctc.weight.mul_(50)
        greedy = decode_batch(model, src, lens, DecodeOptions(ctc_weight=1.0))
        beam = decode_batch(model, src, lens, DecodeOptions(ctc_weight=1.0, beam=4, length_norm="none",
                                                            max_len_ratio=3.0))
        logp = torch.log_softmax(model.ctc(model.encode(src, lens).states), dim=-1)

        def ll(i: int, toks: list[int]) -> float:
            return -F.ctc_loss(logp[i:i + 1, :lens[i]].transpose(0, 1), torch.tensor([toks]), lens[i:i + 1],
                               torch.tensor([len(toks)]), reduction="sum").item()

        for i in range(len(lens)):
            assert ll(i, beam.tokens[i]) >= ll(i, greedy.tokens[i]) - 1e-4
            assert beam.scores[i].item() == pytest.approx(ll(i, beam.tokens[i]), abs=1e-3)


def test_ctc_decoding_of_a_model_without_ctc_head_is_refused() -> None:
    model = _model(0, ctc=False)
    src, lens = _batch(0)
    with pytest.raises(ValueError, match="CTC head"):
        decode_batch(model, src, lens, DecodeOptions(beam=2, ctc_weight=0.5))


# ---- vocabulary ------------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), beam=st.sampled_from([1, 2, 4]), mode=st.sampled_from(["phrases", "words"]),
       entries=st.lists(st.sampled_from(WORDS + ["two one", "nine nine"]), min_size=1, max_size=4, unique=True),
       ctc=st.booleans())
def test_a_constrained_decode_never_writes_outside_its_vocabulary(seed, beam, mode, entries, ctc) -> None:
    if mode == "words":
        entries = [e for e in entries if " " not in e] or ["one"]
    model = _model(seed % 7)
    src, lens = _batch(seed, lengths=(14, 11, 8))
    vocab = vocabulary_constraint(TOKENIZER, entries, mode)
    opts = DecodeOptions(beam=beam, vocabulary=tuple(entries), vocabulary_mode=mode, ctc_weight=0.4 if ctc else 0.0,
                         max_len_ratio=3.0)
    res = decode_batch(model, src, lens, opts, vocabulary=vocab, max_len=40)
    for toks in res.tokens:
        text = TOKENIZER.decode(toks)
        if not text:
            continue  # nothing allowed fitted in the length limit
        if mode == "phrases":
            assert text in entries
        else:
            assert all(w in entries for w in text.split(" ")), text


def test_vocabulary_trie_allows_exactly_the_entries() -> None:
    tok = TOKENIZER
    trie = vocabulary_constraint(tok, ["one", "oh"], "phrases")
    node = trie.init_state(torch.zeros(1, dtype=torch.long))
    allowed, node = trie.score(torch.tensor([SOS]), node)
    assert {i for i in range(tok.vocab_size) if allowed[0, i] == 0} == {tok.stoi["o"]}
    allowed, node = trie.score(torch.tensor([tok.stoi["o"]]), node)
    assert {i for i in range(tok.vocab_size) if allowed[0, i] == 0} == {tok.stoi["n"], tok.stoi["h"]}
    allowed, node = trie.score(torch.tensor([tok.stoi["h"]]), node)
    assert {i for i in range(tok.vocab_size) if allowed[0, i] == 0} == {EOS}
    words = vocabulary_constraint(tok, ["oh"], "words")
    node = words.init_state(torch.zeros(1, dtype=torch.long))
    for ch in "oh":
        _, node = words.score(torch.tensor([SOS if ch == "o" else tok.stoi["o"]]), node)
    allowed, node = words.score(torch.tensor([tok.stoi["h"]]), node)
    assert {i for i in range(tok.vocab_size) if allowed[0, i] == 0} == {EOS, tok.stoi[" "]}
    with pytest.raises(ValueError, match="entry 2"):
        vocabulary_constraint(tok, ["one", "w@t"], "phrases")
    with pytest.raises(ValueError, match="no entry"):
        VocabularyConstraint([], tok.vocab_size)


def test_vocabulary_with_sentencepiece_words(tmp_path) -> None:
    from asr_s2s.text import SentencePieceTokenizer

    texts = [" ".join(WORDS[i % 10] for i in range(j, j + 5)) for j in range(200)]
    sp = SentencePieceTokenizer.train(texts, vocab_size=30, model_type="unigram")
    trie = vocabulary_constraint(sp, ["one", "two"], "words")
    seqs = {tuple(sp.encode(w)) for w in ("one", "two")}
    # walk "one two": allowed at every step, eos after each word
    node = trie.init_state(torch.zeros(1, dtype=torch.long))
    prev = SOS
    for tok in list(sp.encode("one two")) + [EOS]:
        allowed, node = trie.score(torch.tensor([prev]), node)
        assert allowed[0, tok] == 0
        prev = tok
    assert seqs


# ---- language model ------------------------------------------------------------------------------------
def test_lm_file_round_trip_and_step_matches_forward(tmp_path) -> None:
    torch.manual_seed(0)
    lm = LSTMLM(LMConfig(vocab_size=TOKENIZER.vocab_size, embed_dim=8, hidden=16, layers=2)).eval()
    path = save_lm(tmp_path / "lm.pt", lm, TOKENIZER, {"dev_ppl": 3.0})
    back, tok, meta = load_lm(path)
    assert tok.state_dict() == TOKENIZER.state_dict() and meta["dev_ppl"] == 3.0
    seq = torch.tensor([[SOS] + TOKENIZER.encode("two one")])
    full = torch.log_softmax(back(seq), -1)[0]
    scorer = LMScorer(back)
    state = scorer.init_state(torch.zeros(1, dtype=torch.long))
    for i in range(seq.size(1)):
        lp, state = scorer.score(seq[:, i], state)
        torch.testing.assert_close(lp[0], full[i], atol=1e-5, rtol=1e-5)


def test_lm_training_learns_and_resumes_to_the_same_weights(tmp_path) -> None:
    from asr_s2s.lm import LMTrainConfig

    texts = [" ".join(WORDS[(i * 7 + j) % 10] for j in range(3)) for i in range(120)]
    cfg = LMConfig(embed_dim=16, hidden=32, layers=1, dropout=0.0)
    whole = train_lm(texts, TOKENIZER, tmp_path / "a", cfg, LMTrainConfig(steps=60, eval_every=30, batch_size=16, lr=0.02, warmup=5),
                     log=lambda *_: None)
    lm, _, meta = load_lm(whole)
    assert meta["steps"] == 60 and meta["dev_ppl"] < 10  # the uniform model's perplexity is vocab_size = 31

    def crash(line: str) -> None:  # the process dies right after the first evaluation's checkpoint
        if '"step": 30' in line:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_lm(texts, TOKENIZER, tmp_path / "b", cfg, LMTrainConfig(steps=60, eval_every=30, batch_size=16, lr=0.02, warmup=5), log=crash)
    resumed = train_lm(texts, TOKENIZER, tmp_path / "b", cfg, LMTrainConfig(steps=60, eval_every=30, batch_size=16, lr=0.02, warmup=5),
                       resume=True, log=lambda *_: None)
    lm2, _, _ = load_lm(resumed)
    for a, b in zip(lm.state_dict().values(), lm2.state_dict().values()):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="already holds"):
        train_lm(texts, TOKENIZER, tmp_path / "a", cfg, LMTrainConfig(steps=5), log=lambda *_: None)
    assert perplexity(lm, [TOKENIZER.encode("one two three")]) > 1.0
    assert math.isfinite(meta["dev_ppl"])


# ---- command line and model files ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    import numpy as np
    import soundfile as sf

    path = tmp_path_factory.mktemp("audio") / "tone.wav"
    t = np.arange(8000) / 8000
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t) * np.hanning(8000)).astype("float32"), 8000)
    return path


def _run(argv, capsys) -> tuple[int, str, str]:
    from asr_s2s.cli import main

    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("content, why", [(None, "no such file"), (b"", "no entry"),
                                          (b"\xff\xfe\x00bad", "not a UTF-8"), ("caf\u00e9 \u4e2d".encode(), "cannot write")])
def test_a_bad_vocabulary_file_is_refused_naming_it(tmp_path, wav, capsys, content, why) -> None:
    vocab = tmp_path / "vocab.txt"
    if content is not None:
        vocab.write_bytes(content)
    code, out, err = _run(["transcribe", wav, "--vocabulary", vocab], capsys)
    assert code == 2 and str(vocab) in err and why in err and "Traceback" not in err and not out


def test_a_bad_lm_file_is_refused_naming_it(tmp_path, wav, capsys) -> None:
    from asr_s2s import load_model

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    not_lm = tmp_path / "model.pt"
    load_model().save(not_lm)
    other_tok = tmp_path / "other.pt"
    digits = CharTokenizer.build(WORDS)
    save_lm(other_tok, LSTMLM(LMConfig(vocab_size=digits.vocab_size, hidden=8, embed_dim=4, layers=1)), digits)
    for bad, why in [(tmp_path / "missing.pt", "no such file"), (garbage, "corrupt"), (not_lm, "not an asr-s2s language model"),
                     (other_tok, "another tokenizer")]:
        code, out, err = _run(["transcribe", wav, "--lm", bad, "--lm-weight", "0.3", "--beam", "2"], capsys)
        assert code == 2 and str(bad) in err and why in err and "Traceback" not in err, (bad, out, err)


def test_decoding_flags_validate_and_the_vocabulary_constrains_transcribe(tmp_path, wav, capsys) -> None:
    vocab = tmp_path / "digits.txt"
    vocab.write_text("\n".join(WORDS[:10]) + "\n")
    code, out, err = _run(["transcribe", wav, "--vocabulary", vocab, "--beam", "3", "--ctc-weight", "0.5",
                           "--format", "json"], capsys)
    assert code == 0, err
    import json

    text = json.loads(out)["text"]
    assert text == "" or text in WORDS[:10]
    for bad in (["--beam", "0"], ["--ctc-weight", "1.5"], ["--lm-weight", "-1"], ["--beam", "x"]):
        code, out, err = _run(["transcribe", wav, *bad], capsys)
        assert code == 2 and bad[0] in err and "Traceback" not in err


def test_recommended_decoding_and_its_lm_travel_inside_the_model_file(tmp_path) -> None:
    from asr_s2s import load_model
    from asr_s2s.checkpoint import load_checkpoint

    model = load_model()
    lm_path = save_lm(tmp_path / "lm.pt", LSTMLM(LMConfig(vocab_size=model.tokenizer.vocab_size, hidden=8,
                                                          embed_dim=4, layers=1)), model.tokenizer)
    model.attach_lm(load_checkpoint(lm_path))
    model.set_recommended_decoding(DecodeOptions(beam=5, ctc_weight=0.4, lm_weight=0.2, length_bonus=0.5,
                                                 length_norm="none"))
    model.save(tmp_path / "tuned.pt", half=True)
    back = load_model(tmp_path / "tuned.pt")
    rec = back.recommended_decoding
    assert (rec.beam, rec.ctc_weight, rec.lm_weight, rec.length_bonus, rec.length_norm) == (5, 0.4, 0.2, 0.5, "none")
    assert back.language_model(rec) is not None  # the model's own LM, no file needed
    assert load_model().recommended_decoding.lm_weight == 0.0 or load_model().language_model(
        load_model().recommended_decoding) is not None


def test_search_flags_replace_the_recommended_decoding_and_the_rest_apply_on_top() -> None:
    from asr_s2s.decoding import choose_options

    rec = DecodeOptions(beam=4, ctc_weight=0.5, lm_weight=0.2, length_norm="none")
    assert choose_options(rec) == rec
    assert choose_options(rec, beam=1, ctc_weight=0.0) == DecodeOptions()  # today's greedy decoding
    assert choose_options(rec, vocabulary=("one",), precision="bf16") == rec.replace(vocabulary=("one",),
                                                                                   precision="bf16")
    assert choose_options(rec, beam=10) == DecodeOptions(beam=10)
