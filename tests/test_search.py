"""Batched greedy and beam search: beam 1 == greedy, wider beams score no worse on a trained model,
padding invariance, and the length guard on models that never emit eos."""

from __future__ import annotations

import math
import os

import pytest
import torch

from asr_s2s.accel import accelerate
from asr_s2s.seq2seq import ATTENTIONS, EOS, Seq2Seq, max_lengths
from asr_s2s.seq2seq.search import beam_search, greedy_search
from s2s_helpers import audio_batch, logmel, overfit, pad_feats, single_thread, tiny_config  # noqa: F401

NORMS = [("none", 1.0), ("length", 1.0), ("gnmt", 0.8)]


@pytest.fixture(scope="module")
def trained(fsdd_files):
    """An lstm/location model overfit on 8 FSDD utterances, plus 20 utterances it never saw."""
    x, xl, y, yl, vocab = audio_batch(fsdd_files)
    torch.manual_seed(0)
    m = Seq2Seq(tiny_config("lstm", "location", len(vocab)))
    steps, _ = overfit(m, x, xl, y, yl, max_steps=400)
    assert steps is not None
    held = [f for f in fsdd_files if f.stem.endswith("_1")]
    hx, hxl = pad_feats([logmel(f) for f in held])
    return m.eval(), (x, xl), (hx, hxl)


def _untrained(attention: str, cell: str = "gru", seed: int = 0) -> Seq2Seq:
    torch.manual_seed(seed)
    return Seq2Seq(tiny_config(cell, attention, vocab_size=14, hidden=24)).eval()


def _rand_batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4, 57, 40, generator=g), torch.tensor([57, 33, 12, 41])


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("norm,alpha", NORMS)
def test_beam_one_equals_greedy_untrained(attention, norm, alpha):
    m = _untrained(attention)
    x, xl = _rand_batch()
    g = m.greedy(x, xl, length_norm=norm, alpha=alpha)
    b = m.beam_search(x, xl, beam=1, length_norm=norm, alpha=alpha)
    assert g.tokens == b.tokens
    torch.testing.assert_close(g.scores, b.scores, rtol=1e-5, atol=1e-6)  # see the trained case below
    assert torch.equal(g.lengths, b.lengths)
    for a, c in zip(g.attention, b.attention):
        torch.testing.assert_close(a, c)


@pytest.mark.parametrize("norm,alpha", NORMS)
def test_beam_one_equals_greedy_trained(trained, norm, alpha):
    m, _, (hx, hxl) = trained
    g = m.greedy(hx, hxl, length_norm=norm, alpha=alpha)
    b = m.beam_search(hx, hxl, beam=1, length_norm=norm, alpha=alpha)
    assert g.tokens == b.tokens
    # Greedy steps fewer rows as they finish (see greedy_search), so the products' summation order can differ.
    torch.testing.assert_close(g.scores, b.scores, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("norm,alpha", NORMS)
def test_wider_beam_scores_no_worse_than_greedy(trained, norm, alpha):
    """On unseen utterances (the model is unsure there), every wider beam's best hypothesis scores at
    least the greedy one under the same normalisation. (Beam search is not monotone in general: on
    half-trained models a beam of 2 can prune the greedy path's eos — see search.py.)"""
    m, (x, xl), (hx, hxl) = trained
    for src, lens in ((x, xl), (hx, hxl)):
        g = m.greedy(src, lens, length_norm=norm, alpha=alpha)
        for k in (2, 4, 8):
            b = m.beam_search(src, lens, beam=k, length_norm=norm, alpha=alpha)
            assert (b.scores >= g.scores - 1e-5).all(), (k, g.scores, b.scores)


def test_beam_finds_the_references_of_the_training_batch(trained):
    m, (x, xl), _ = trained
    g = m.greedy(x, xl)
    assert m.beam_search(x, xl, beam=4).tokens == g.tokens


def test_scores_are_the_normalised_log_probability(trained):
    """Re-score the hypotheses by teacher forcing them: the search score is sum(log p) / lp(n)."""
    m, _, (hx, hxl) = trained
    for norm, alpha in NORMS:
        r = m.beam_search(hx, hxl, beam=3, length_norm=norm, alpha=alpha, max_len=50, max_len_ratio=5.0)
        tgt = torch.zeros(len(r.tokens), int(r.lengths.max()), dtype=torch.long)
        for i, t in enumerate(r.tokens):
            tgt[i, : len(t)] = torch.tensor(t)
        with torch.no_grad():
            logits, _ = m(hx, hxl, tgt, r.lengths)
            _, tgt_out = m.decoder_io(tgt, r.lengths)
            lp = torch.log_softmax(logits, -1).gather(-1, tgt_out.clamp(min=0)[..., None])[..., 0]
            total = (lp * (tgt_out != 0)).sum(-1)
        n = (r.lengths + 1).float()  # every hypothesis here ended with eos
        pen = {"none": torch.ones_like(n), "length": n ** alpha, "gnmt": ((5 + n) / 6) ** alpha}[norm]
        torch.testing.assert_close(r.scores, total / pen, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_padding_invariance(trained, search):
    """An utterance decoded alone gives the same tokens and score as inside a padded batch."""
    m, _, (hx, hxl) = trained
    run = (lambda s, l: m.greedy(s, l)) if search == "greedy" else (lambda s, l: m.beam_search(s, l, beam=3))
    batch = run(hx, hxl)
    for i in range(0, hx.size(0), 3):
        alone = run(hx[i : i + 1, : hxl[i]], hxl[i : i + 1])
        assert alone.tokens[0] == batch.tokens[i]
        torch.testing.assert_close(alone.scores[0], batch.scores[i], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(alone.attention[0], batch.attention[i], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("attention", ["none", "location"])
def test_padding_invariance_untrained(attention):
    m = _untrained(attention, cell="lstm")
    x, xl = _rand_batch(3)
    batch = m.greedy(x, xl)
    for i in range(x.size(0)):
        alone = m.greedy(x[i : i + 1, : xl[i]], xl[i : i + 1])
        assert alone.tokens[0] == batch.tokens[i]
        torch.testing.assert_close(alone.scores[0], batch.scores[i], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", ["dot", "location"])
def test_max_length_guard_stops_a_model_that_never_says_eos(attention):
    m = _untrained(attention)
    with torch.no_grad():
        m.decoder.output.bias[EOS] = -1e4  # eos is never the best token, nor in any beam
    x, xl = _rand_batch()
    enc_lens = m.encoder.output_lengths(xl)
    for max_len, ratio in ((100, 0.5), (7, 2.0)):
        want = [min(max_len, math.ceil(ratio * int(t))) for t in enc_lens]
        assert max_lengths(enc_lens, max_len, ratio).tolist() == want
        g = m.greedy(x, xl, max_len=max_len, max_len_ratio=ratio)
        assert g.lengths.tolist() == want == [len(t) for t in g.tokens]
        assert [a.shape for a in g.attention] == [(n, int(t)) for n, t in zip(want, enc_lens)]
        b = m.beam_search(x, xl, beam=3, max_len=max_len, max_len_ratio=ratio)
        assert b.lengths.tolist() == want
        assert all(EOS not in t for t in g.tokens + b.tokens)


@pytest.mark.parametrize("attention", ["dot", "location"])
def test_per_utterance_max_len_and_rows_leaving_the_greedy_batch(attention):
    """One limit per utterance: rows stop at steps 1, 3 and 9, so greedy and beam search drop them from their
    batch on the way; each row's result is still what it gets decoded alone (greedy: the prefix of what it
    emits with a common limit)."""
    m = _untrained(attention)
    with torch.no_grad():
        m.decoder.output.bias[EOS] = -1e4
    x, xl = _rand_batch()
    enc_lens = m.encoder.output_lengths(xl)
    caps = torch.tensor([3, 9, 1, 30])
    want = [min(int(c), math.ceil(2.0 * int(t))) for c, t in zip(caps, enc_lens)]
    assert max_lengths(enc_lens, caps, 2.0).tolist() == want
    full = m.greedy(x, xl, max_len=30)
    g = m.greedy(x, xl, max_len=caps)
    assert g.lengths.tolist() == want
    for i, n in enumerate(want):
        assert g.tokens[i] == full.tokens[i][:n]
        torch.testing.assert_close(g.attention[i], full.attention[i][:n], atol=1e-5, rtol=1e-5)
        alone = m.greedy(x[i : i + 1, : xl[i]], xl[i : i + 1], max_len=n)
        assert alone.tokens[0] == g.tokens[i]
        torch.testing.assert_close(alone.scores[0], g.scores[i], atol=1e-5, rtol=1e-5)
    bs = m.beam_search(x, xl, beam=2, max_len=caps)  # utterances leave the beam batch as well
    assert bs.lengths.tolist() == want
    for i, n in enumerate(want):
        alone = m.beam_search(x[i : i + 1, : xl[i]], xl[i : i + 1], beam=2, max_len=n)
        assert alone.tokens[0] == bs.tokens[i]
        torch.testing.assert_close(alone.scores[0], bs.scores[i], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(alone.attention[0], bs.attention[i], atol=1e-5, rtol=1e-5)


def test_search_leaves_training_mode_and_grad_alone(trained):
    m, (x, xl), _ = trained
    m.train()
    r = m.greedy(x, xl)
    assert m.training and not r.scores.requires_grad
    m.eval()


@pytest.mark.parametrize("pack_all", [False, True])
def test_bf16_decoding_matches_fp32(trained, monkeypatch, pack_all):
    """precision="bf16" (the encoder under bf16 autocast; with pack_all, also the search step's gate product,
    as on a full-size model) decodes what fp32 decodes on the trained model's training and held-out
    utterances, with scores within bf16 rounding; an unknown precision is refused. Where oneDNN cannot pack
    bf16 weights (no AVX-512), the step keeps fp32 weights and bf16 is the encoder's autocast alone."""
    from asr_s2s.accel import packed

    m, (x, xl), (hx, hxl) = trained
    if pack_all:
        monkeypatch.setattr(packed, "MIN_PACKED_ELEMENTS", 0)
    packed._DERIVED.pop(m.decoder, None)
    for src, lens in ((x, xl), (hx, hxl)):
        for beam in (1, 3):
            ref = m.beam_search(src, lens, beam=beam) if beam > 1 else m.greedy(src, lens)
            low = (beam_search(accelerate(m, "bf16"), src, lens, beam=beam) if beam > 1
                   else greedy_search(accelerate(m, "bf16"), src, lens))
            same = sum(a == b for a, b in zip(ref.tokens, low.tokens))
            assert same >= len(ref.tokens) - 1, (beam, ref.tokens, low.tokens)
            torch.testing.assert_close(low.scores, ref.scores, atol=0.05, rtol=0.05)
    # bf16 searches asked for a bf16 gate product: where oneDNN packs bf16 (elsewhere they run fp32's steps)
    packs_bf16 = packed.can_pack(m.decoder.rnn.weight_hh_l0, torch.bfloat16)
    gates = packed._DERIVED[m.decoder][("search_weights", "bf16" if packs_bf16 else "fp32")][1].gates
    assert gates.weight.dtype == (torch.bfloat16 if pack_all and packs_bf16 else torch.float32)
    with pytest.raises(ValueError, match="precision"):
        greedy_search(accelerate(m, "fp8"), x, xl)


def test_int8_decoding_matches_fp32_and_is_bf16_beyond_two_rows(trained, monkeypatch):
    """precision="int8": one utterance at a time, greedy search steps on int8 weights and decodes what fp32
    decodes on the trained model's training and held-out utterances (scores within bf16 rounding); a step of
    more rows (a beam of 3) is bf16's step, so int8 beam search equals bf16 beam search exactly. Where bf16 is
    not native, int8 is refused with a warning and decodes as precision "auto" (fp32) does."""
    from asr_s2s.accel import native_bf16, packed

    m, (x, xl), (hx, hxl) = trained
    if not native_bf16():
        with pytest.warns(UserWarning, match="int8"):
            low = greedy_search(accelerate(m, "int8"), hx, hxl)
        ref = greedy_search(accelerate(m, "fp32"), hx, hxl)
        assert low.tokens == ref.tokens and torch.equal(low.scores, ref.scores)  # the same fp32 path
        return
    monkeypatch.setattr(packed, "MIN_PACKED_ELEMENTS", 0)  # the bf16 fallback packed, as on a full-size model
    packed._DERIVED.pop(m.decoder, None)
    same = total = 0
    for src, lens in ((x, xl), (hx, hxl)):
        for i in range(src.size(0)):
            one, n = src[i:i + 1, :lens[i]], lens[i:i + 1]
            ref, low = m.greedy(one, n), greedy_search(accelerate(m, "int8"), one, n)
            same, total = same + (ref.tokens == low.tokens), total + 1
            torch.testing.assert_close(low.scores, ref.scores, atol=0.05, rtol=0.05)
    assert same >= total - 1, (same, total)
    weights = packed._DERIVED[m.decoder][("search_weights", "int8")][1]
    assert all(isinstance(lin, packed.Int8Linear) for lin in (weights.gates, weights.query, weights.combine))
    one, n = hx[:1, :hxl[0]], hxl[:1]
    a, b = beam_search(accelerate(m, "int8"), one, n, beam=3), beam_search(accelerate(m, "bf16"), one, n, beam=3)
    assert a.tokens == b.tokens and torch.equal(a.scores, b.scores)


def _cpu_flags() -> set[str]:
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return set()
    return {f for line in text.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}


def test_native_bf16_switch_makes_auto_fp32(monkeypatch, request):
    """ASR_S2S_NATIVE_BF16=0 (read once per process, by accel.precision.cpu_native_bf16) makes this CPU answer as
    one without native bf16: "auto" is fp32 and "int8" falls back with a warning; unset, the CPU's own answer
    returns."""
    from asr_s2s.accel import precision
    from asr_s2s.accel import native_bf16, resolve_precision

    request.addfinalizer(precision.cpu_native_bf16.cache_clear)  # after the environment is restored: asked afresh
    for value in ("0", "1"):
        monkeypatch.setenv("ASR_S2S_NATIVE_BF16", value)
        precision.cpu_native_bf16.cache_clear()
        hardware = bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})
        assert native_bf16() is (value == "1" and hardware)
        assert resolve_precision("auto") == ("bf16" if native_bf16() else "fp32")
    monkeypatch.setenv("ASR_S2S_NATIVE_BF16", "0")
    precision.cpu_native_bf16.cache_clear()
    with pytest.warns(UserWarning, match="int8"):
        assert resolve_precision("int8") == "fp32"


def test_auto_precision_is_bf16_exactly_where_the_cpu_has_native_bf16(trained):
    """precision="auto" resolves to bf16 on a CPU whose flags list AVX512-BF16 or AMX-BF16 (read from
    /proc/cpuinfo, independently of torch), to fp32 elsewhere and on other devices; a search with "auto"
    decodes what the precision it resolves to decodes."""
    from asr_s2s.accel import native_bf16, resolve_precision

    flags = _cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo flags on this system")
    native = bool(flags & {"avx512_bf16", "amx_bf16"}) and os.environ.get("ASR_S2S_NATIVE_BF16") != "0"
    assert native_bf16("cpu") is native
    assert resolve_precision("auto") == ("bf16" if native else "fp32")
    assert resolve_precision("auto", "cuda") == "fp32"  # GPUs: not measured, fp32 until they are
    assert (resolve_precision("fp32"), resolve_precision("bf16", "cuda")) == ("fp32", "bf16")
    if native:
        assert resolve_precision("int8") == "int8"
    else:
        with pytest.warns(UserWarning, match="int8"):
            assert resolve_precision("int8") == "fp32"
    with pytest.warns(UserWarning, match="int8"):  # int8 computes in bf16: where that is not native, auto
        assert resolve_precision("int8", "cuda") == "fp32"
    with pytest.raises(ValueError, match="auto"):
        resolve_precision("fp16")
    m, _, (hx, hxl) = trained
    want = greedy_search(accelerate(m, resolve_precision("auto")), hx, hxl)
    got = greedy_search(accelerate(m, "auto"), hx, hxl)
    assert got.tokens == want.tokens and torch.equal(got.scores, want.scores)


def test_bf16_encode_uses_a_bf16_copy_that_follows_the_weights():
    """accelerate(m, "bf16").encode runs a cached copy of the encoder with bf16 weights: the output of the encoder
    itself under bf16 autocast to bf16 rounding (the copy may run other kernels: reordered weights, or the C
    kernel), and a new copy once a weight changes."""
    from asr_s2s.accel import packed

    m = Seq2Seq(tiny_config("lstm", "location", vocab_size=14, hidden=24)).eval()
    x, xl = _rand_batch()  # padded rows included
    with torch.inference_mode():
        twins = []
        for _ in range(2):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                want = m.encode(x, xl)
            got = accelerate(m, "bf16").encode(x, xl)
            assert got.states.dtype == torch.float32
            torch.testing.assert_close(got.states, want.states.float(), atol=2e-2, rtol=2e-2)
            for a, b in zip(got.final, want.final):
                torch.testing.assert_close(a, b.float(), atol=2e-2, rtol=2e-2)
            twins.append(packed._DERIVED[m.encoder]["bf16_twin"][1])
            assert twins[-1].rnn.weight_hh_l0.dtype == torch.bfloat16
            assert accelerate(m, "bf16").encode(x, xl) is not None and packed._DERIVED[m.encoder]["bf16_twin"][1] is twins[-1]
            with torch.no_grad():  # a changed weight (an optimizer step, a loaded checkpoint) is picked up
                m.encoder.rnn.weight_hh_l0.mul_(1.5)
        assert twins[1] is not twins[0]
