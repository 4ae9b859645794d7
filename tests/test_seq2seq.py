"""The seq2seq core: subsampling arithmetic, padding invariance, decoder paths, config, and overfitting
real FSDD audio (and made-up char-level text pairs) with every cell x attention."""

from __future__ import annotations

import copy

import pytest
import torch
import yaml

from asr_s2s.seq2seq import (ATTENTIONS, EOS, PAD, SOS, DecoderConfig, EncoderConfig, ModelConfig, RecurrentEncoder,
                             Seq2Seq)
from s2s_helpers import (audio_batch, needs_onednn_bf16, overfit, pad_feats, single_thread,  # noqa: F401
                         text_batch, tiny_config)

CELLS = ("rnn", "lstm", "gru")


# ---- subsampling -----------------------------------------------------------------------------------
@pytest.mark.parametrize("subsampling,factor", [("conv", 2), ("conv", 4), ("conv", 8), ("stack", 3), ("stack", 4),
                                                ("none", 4)])
def test_subsampling_output_lengths_match_actual_sizes(subsampling, factor):
    torch.manual_seed(0)
    enc = RecurrentEncoder(EncoderConfig(cell="gru", input_dim=13, hidden=8, layers=1, subsampling=subsampling,
                                subsample_factor=factor, conv_channels=4, dropout=0.0)).eval()
    for t in list(range(1, 40)) + [63, 64, 65, 127, 128, 129, 1001]:
        x = torch.randn(1, t, 13)
        predicted = int(enc.output_lengths(torch.tensor([t])))
        sub = enc.subsample(x, torch.tensor([t])) if enc.subsample is not None else (x, torch.tensor([t]))
        assert sub[0].size(1) == predicted == int(sub[1]), (t, sub[0].shape, predicted)
        out = enc(x, torch.tensor([t]))
        assert out.states.size(1) == predicted and int(out.lengths) == predicted >= 1


@pytest.mark.parametrize("factor", [4, 8])
def test_conv_subsampling_padded_rows_equal_the_row_alone_forward_and_backward(factor):
    """Padding never reaches a real output of the conv subsampling, nor a real input's gradient: lengths of
    every parity at every stage (the stages zero only the one padded frame that real outputs read), loud
    garbage in the padding, 1 row alone against the padded batch, also with gradients."""
    torch.manual_seed(0)
    enc = RecurrentEncoder(EncoderConfig(cell="lstm", input_dim=13, hidden=8, layers=1, subsampling="conv",
                                subsample_factor=factor, conv_channels=4, dropout=0.0))
    sub = enc.subsample
    lengths = torch.tensor([40, 39, 37, 34, 33, 30, 29, 27, 25, 17, 9, 1])
    t = int(lengths.max())
    rows = [torch.randn(int(n), 13) for n in lengths]
    x = torch.full((len(rows), t, 13), 50.0)
    for i, r in enumerate(rows):
        x[i, : len(r)] = r
    x.requires_grad_(True)
    out, out_len = sub(x, lengths)
    g = torch.randn_like(out)
    mask = (torch.arange(out.size(1))[None, :] < out_len[:, None])[:, :, None]
    (out * g * mask).sum().backward()
    for i, r in enumerate(rows):
        xi = r[None].clone().requires_grad_(True)
        alone, n = sub(xi, lengths[i : i + 1])
        n = int(n)
        assert int(out_len[i]) == n
        torch.testing.assert_close(out[i, :n], alone[0], atol=1e-5, rtol=1e-4)
        (alone * g[i : i + 1, :n]).sum().backward()
        torch.testing.assert_close(x.grad[i, : len(r)], xi.grad[0], atol=1e-5, rtol=1e-4)
        assert x.grad[i, len(r):].abs().sum() == 0
    with torch.inference_mode():  # the in-place path without autograd gives the same (to rounding: oneDNN may
        # pick another convolution algorithm for inference than for training)
        torch.testing.assert_close(sub(x.detach(), lengths)[0] * mask, out.detach() * mask, atol=1e-5, rtol=1e-5)


def test_conv_subsampling_inference_follows_weight_updates():
    """Inference keeps the output layer's column-permuted weight between calls (Conv2dSubsampling._out_weight):
    it gives what the training path (which re-forms it) gives, also after an in-place update of the weight."""
    torch.manual_seed(0)
    enc = RecurrentEncoder(EncoderConfig(cell="lstm", input_dim=13, hidden=8, layers=1, subsampling="conv",
                                subsample_factor=4, conv_channels=4, dropout=0.0)).eval()
    x, xl = torch.randn(2, 31, 13), torch.tensor([31, 17])
    real = (torch.arange(8)[None, :] < torch.tensor([8, 5])[:, None])[:, :, None]  # padded frames hold garbage
    for scale in (1.0, 1.5):
        with torch.no_grad():
            enc.subsample.out.weight.mul_(scale)
        ref = enc.subsample(x, xl)[0].detach()  # gradients on: the permutation formed afresh
        with torch.inference_mode():
            torch.testing.assert_close(enc.subsample(x, xl)[0] * real, ref * real, atol=1e-5, rtol=1e-5)


# ---- padding invariance of the encoder -------------------------------------------------------------
@pytest.mark.parametrize("cell,subsampling", [("lstm", "conv"), ("gru", "stack"), ("rnn", "none"), ("lstm", "stack")])
def test_encoder_rows_equal_the_utterance_alone(cell, subsampling, fsdd_files):
    from s2s_helpers import logmel

    feats = [logmel(f) for f in fsdd_files[:5]]
    x, xl = pad_feats(feats, fill=7.5)  # loud garbage in the padding must not leak
    torch.manual_seed(0)
    enc = RecurrentEncoder(EncoderConfig(cell=cell, input_dim=x.size(-1), hidden=16, layers=2, bidirectional=True,
                                subsampling=subsampling, subsample_factor=4, conv_channels=4, dropout=0.0)).eval()
    with torch.no_grad():
        batch = enc(x, xl)
        for i, f in enumerate(feats):
            alone = enc(f[None], xl[i : i + 1])
            n = int(alone.lengths)
            assert int(batch.lengths[i]) == n
            torch.testing.assert_close(batch.states[i, :n], alone.states[0], atol=1e-5, rtol=1e-4)
            assert batch.states[i, n:].abs().sum() == 0
            finals = batch.final if isinstance(batch.final, tuple) else (batch.final,)
            finals_alone = alone.final if isinstance(alone.final, tuple) else (alone.final,)
            for fb, fa in zip(finals, finals_alone):
                torch.testing.assert_close(fb[:, i], fa[:, 0], atol=1e-5, rtol=1e-4)


# ---- decoder paths ---------------------------------------------------------------------------------
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("attention", ["none", "dot", "additive"])
def test_parallel_teacher_forcing_equals_step_loop(cell, attention):
    """The one-call Luong path computes exactly what the per-step loop (used by search) computes."""
    torch.manual_seed(0)
    m = Seq2Seq(tiny_config(cell, attention, vocab_size=12, hidden=16)).eval()
    x, xl = torch.randn(3, 37, 40), torch.tensor([37, 20, 9])
    tgt_in = torch.randint(3, 12, (3, 6))
    with torch.no_grad():
        enc = m.encode(x, xl)
        par, wp = m.decoder(enc, tgt_in, parallel=True)
        loop, wl = m.decoder(enc, tgt_in, parallel=False)
    torch.testing.assert_close(par, loop, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(wp, wl, atol=1e-6, rtol=1e-4)


def _stepped_logits(m, x, xl, tgt_in):
    """The logits the search step gives when fed tgt_in (B, U) one token at a time -> (B, U, V): accel's step
    (what the recognizer's searches call; a cached-weight step for the LSTM/location decoder), which gives the
    plain Decoder.step's logits to rounding (other kernels, another summation order)."""
    from asr_s2s.accel import accelerate

    outs = []
    with torch.inference_mode():
        for step in (m.decoder.step, accelerate(m, "fp32").stepper()):
            enc = m.encode(x, xl)
            mem = m.decoder.prepare(enc)
            state, out = m.decoder.init_state(enc, mem), []
            for t in range(tgt_in.size(1)):
                logits, state, _ = step(tgt_in[:, t], state, mem)
                out.append(logits)
            outs.append(torch.stack(out, dim=1))
    torch.testing.assert_close(outs[1], outs[0], atol=1e-5, rtol=1e-4)
    return outs[1]


@pytest.mark.parametrize("cell,attention", [("lstm", "location"), ("gru", "location"), ("lstm", "additive"),
                                            ("rnn", "dot")])
def test_search_step_equals_the_training_forward(cell, attention):
    """The search step (accel's: for the LSTM/location decoder a cached-weight step) gives the logits
    of the teacher-forced training forward fed the same tokens, and follows in-place weight updates."""
    torch.manual_seed(0)
    m = Seq2Seq(tiny_config(cell, attention, vocab_size=12, hidden=16)).eval()
    x, xl = torch.randn(3, 37, 40), torch.tensor([37, 20, 9])
    tgt_in = torch.randint(3, 12, (3, 6))
    ref = m.decoder(m.encode(x, xl), tgt_in)[0].detach()  # gradients on: the training path
    torch.testing.assert_close(_stepped_logits(m, x, xl, tgt_in), ref, atol=1e-5, rtol=1e-4)
    with torch.no_grad():  # what an optimizer step does
        for p in m.decoder.parameters():
            p.mul_(1.25)
    ref2 = m.decoder(m.encode(x, xl), tgt_in)[0].detach()
    assert not torch.allclose(ref, ref2, atol=1e-3)
    torch.testing.assert_close(_stepped_logits(m, x, xl, tgt_in), ref2, atol=1e-5, rtol=1e-4)
    copy.deepcopy(m)  # the search cache (packed weights cannot be copied) stays outside the module


def test_search_step_with_packed_weights(monkeypatch):
    """The search step with every product on a oneDNN-packed weight (forced here: the tiny model's weights are
    below the size where packing pays) gives the training forward's logits, also after a weight update."""
    from asr_s2s.accel import packed

    monkeypatch.setattr(packed, "MIN_PACKED_ELEMENTS", 0)
    torch.manual_seed(0)
    m = Seq2Seq(tiny_config("lstm", "location", vocab_size=12, hidden=16)).eval()
    x, xl = torch.randn(3, 37, 40), torch.tensor([37, 20, 9])
    tgt_in = torch.randint(3, 12, (3, 6))
    for scale in (1.0, 1.25):
        with torch.no_grad():
            for p in m.decoder.parameters():
                p.mul_(scale)
        ref = m.decoder(m.encode(x, xl), tgt_in)[0].detach()
        torch.testing.assert_close(_stepped_logits(m, x, xl, tgt_in), ref, atol=1e-5, rtol=1e-4)
    weights = packed._DERIVED[m.decoder][("search_weights", "fp32")][1]
    assert (weights.gates.packed is not None) == packed.can_pack(weights.gates.weight)


def test_traced_search_step_holds_no_packed_weights(monkeypatch):
    """Export traces `step`: the traced graph is the plain step (an opaque packed oneDNN tensor can be neither
    saved nor exported), whether accel's search cache is empty (a freshly loaded model) or holds packed weights."""
    from asr_s2s.accel import accelerate, packed
    from asr_s2s.seq2seq.decoder import DecoderState

    monkeypatch.setattr(packed, "MIN_PACKED_ELEMENTS", 0)
    torch.manual_seed(0)
    m = Seq2Seq(tiny_config("lstm", "location", vocab_size=12, hidden=16)).eval().requires_grad_(False)
    with torch.no_grad():
        enc = m.encode(torch.randn(2, 29, 40), torch.tensor([29, 17]))
        mem = m.decoder.prepare(enc)
        st = m.decoder.init_state(enc, mem)
        tok = torch.tensor([3, 5])

        def step(tok, h, c, att):
            return m.decoder.step(tok, DecoderState(h, c, att), mem)[0]

        cold = torch.jit.trace(step, (tok, st.h, st.c, st.att), check_trace=False)
        eager = accelerate(m, "fp32").stepper()(tok, st, mem)[0]  # fills the cache with packed weights
        assert packed._DERIVED[m.decoder][("search_weights", "fp32")][1].gates.packed is not None or \
            not packed.can_pack(m.decoder.rnn.weight_hh_l0)
        warm = torch.jit.trace(step, (tok, st.h, st.c, st.att), check_trace=False)
        for traced in (cold, warm):
            assert "mkldnn" not in str(traced.graph)
            torch.testing.assert_close(traced(tok, st.h, st.c, st.att), eager, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("rows", [1, 5, 16, 64])
def test_packed_linear_equals_linear(rows):
    from asr_s2s.accel.packed import PackedLinear, can_pack

    torch.manual_seed(0)
    w, b, x, other = torch.randn(48, 40), torch.randn(48), torch.randn(rows, 40), torch.randn(rows, 48)
    lin = PackedLinear(w, b, min_elements=0)
    assert (lin.packed is not None) == can_pack(w)
    ref = torch.nn.functional.linear(x, w, b)
    torch.testing.assert_close(lin(x), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lin(x, act="tanh"), ref.tanh(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lin(x, add=other), ref + other, atol=1e-5, rtol=1e-5)
    plain = PackedLinear(w, b)  # below the default size: stays F.linear
    assert plain.packed is None
    torch.testing.assert_close(plain(x, add=other), ref + other)
    with pytest.raises(ValueError):
        lin(x, act="relu")


def test_int8_linear_quantizes_per_row_and_hands_larger_batches_to_its_fallback():
    """Int8Linear stores each weight row as int8 times a bf16 scale (within half a step of the weight, the
    row's largest entry exact up to the scale's rounding), multiplies 1-2 rows in bf16 with fp32 results that
    match the dequantized weight's product to bf16 rounding (tanh and add as PackedLinear), and gives rows
    beyond INT8_MAX_ROWS to its fallback unchanged. An input size its kernel cannot take (not a multiple of 16:
    garbage or a crash in torch 2.13) is refused. Decoding uses it only where oneDNN does bf16 (`can_int8`), but
    its arithmetic is torch's on any CPU, so it is checked everywhere."""
    from asr_s2s.accel.packed import INT8_MAX_ROWS, Int8Linear, PackedLinear, can_int8, can_pack

    assert not can_int8(40) and not can_int8(64, "meta")
    with pytest.raises(ValueError, match="multiple of 16"):
        Int8Linear(torch.randn(48, 40))
    torch.manual_seed(0)
    w, b = torch.randn(48, 64), torch.randn(48)
    w[5] = 0.0  # an all-zero row quantizes to zeros, not NaN
    w[7] *= 1000.0  # rows are scaled independently
    fallback = PackedLinear(w, b, min_elements=0)
    lin = Int8Linear(w, b, fallback=fallback)
    assert can_int8(64) == can_pack(w, torch.bfloat16)
    assert lin.weight.dtype == torch.int8 and lin.scale.dtype == torch.bfloat16
    deq = lin.dequantized()
    step = lin.scale.float()[:, None]
    assert torch.all((deq - w).abs() <= step / 2 + 1e-6 * w.abs())
    assert torch.equal(deq[5], torch.zeros(64)) and lin.weight.abs().amax(1)[torch.arange(48) != 5].min() >= 126
    for rows in range(1, INT8_MAX_ROWS + 1):
        x, other = torch.randn(rows, 64), torch.randn(rows, 48)
        ref = torch.nn.functional.linear(x.bfloat16().float(), deq, b)
        y = lin(x)
        assert y.dtype == torch.float32
        torch.testing.assert_close(y, ref, atol=0.02 * float(ref.abs().max()), rtol=0.01)
        torch.testing.assert_close(lin(x, act="tanh"), y.tanh())
        torch.testing.assert_close(lin(x, add=other), y + other)
        assert float((y - torch.nn.functional.linear(x, w, b)).abs().max()) > 0  # it did run on int8 weights
    x = torch.randn(INT8_MAX_ROWS + 1, 64)
    assert torch.equal(lin(x), fallback(x))
    with pytest.raises(ValueError):
        lin(x[:1], act="relu")


def test_fused_location_loop_gradients_equal_the_plain_step_loop(monkeypatch):
    """The LSTM/location decoder's fused teacher-forced loop (deferred weight gradients, re-laid-out products)
    computes the loss and every gradient of the plain loop through nn.LSTM and the attention module."""
    torch.manual_seed(0)
    m = Seq2Seq(tiny_config("lstm", "location", vocab_size=12, hidden=16)).double().eval()
    x, xl = torch.randn(3, 37, 40, dtype=torch.float64), torch.tensor([37, 20, 9])
    y, yl = torch.randint(4, 12, (3, 5)), torch.tensor([5, 2, 3])

    def loss_and_grads():
        m.zero_grad()
        logits, _ = m(x, xl, y, yl)
        loss = logits.log_softmax(-1).square().mean()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in m.parameters()]

    assert m.decoder.fused_cell
    fused = loss_and_grads()
    monkeypatch.setattr(type(m.decoder), "fused_cell", property(lambda self: False))
    plain = loss_and_grads()
    torch.testing.assert_close(fused[0], plain[0])
    for gf, gp in zip(fused[1], plain[1]):
        torch.testing.assert_close(gf, gp)


def test_cpu_dropout_keeps_one_minus_p_and_scales():
    from asr_s2s.seq2seq.encoder import dropout

    torch.manual_seed(0)
    x = torch.ones(400, 500, requires_grad=True)
    y = dropout(x, 0.2)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.8) < 0.01
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.8))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # the gradient is the same mask and scale
    assert dropout(x, 0.2, training=False) is x and dropout(x, 0.0) is x


def test_location_attention_refuses_parallel_path():
    m = Seq2Seq(tiny_config("lstm", "location", vocab_size=12, hidden=16))
    enc = m.encode(torch.randn(2, 20, 40), torch.tensor([20, 11]))
    with pytest.raises(ValueError):
        m.decoder(enc, torch.randint(3, 12, (2, 4)), parallel=True)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_attention_weights_are_masked_distributions(attention):
    torch.manual_seed(0)
    m = Seq2Seq(tiny_config("gru", attention, vocab_size=12, hidden=16)).eval()
    x, xl = torch.randn(3, 41, 40), torch.tensor([41, 17, 5])
    y, yl = torch.randint(4, 12, (3, 5)), torch.tensor([5, 2, 3])
    with torch.no_grad():
        logits, w = m(x, xl, y, yl)
    assert logits.shape == (3, 6, 12) and w.shape == (3, 6, 11)
    tl = m.encoder.output_lengths(xl)
    for i in range(3):
        assert w[i, :, tl[i]:].abs().sum() == 0  # no weight on padding
        if attention != "none":
            torch.testing.assert_close(w[i].sum(-1), torch.ones(6))


def test_scheduled_sampling_feeds_predictions_and_trains():
    torch.manual_seed(0)
    m = Seq2Seq(tiny_config("lstm", "additive", vocab_size=12, hidden=16))
    x, xl = torch.randn(2, 30, 40), torch.tensor([30, 18])
    y, yl = torch.randint(4, 12, (2, 7)), torch.tensor([7, 4])
    m.eval()
    with torch.no_grad():
        ref, _ = m(x, xl, y, yl, teacher_forcing=1.0)
        same, _ = m(x, xl, y, yl, teacher_forcing=1.0 - 1e-9)  # loop path, all coins say "reference"
        own, _ = m(x, xl, y, yl, teacher_forcing=0.0)
    torch.testing.assert_close(ref, same, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(ref[:, 1:], own[:, 1:])
    # With ratio 0 the input at step t is the argmax at step t-1: the greedy decoder's trajectory.
    greedy_in = torch.cat([torch.full((2, 1), SOS), own.argmax(-1)[:, :-1]], dim=1)
    with torch.no_grad():
        replay, _ = m.decoder(m.encode(x, xl), greedy_in)
    torch.testing.assert_close(replay, own, atol=1e-5, rtol=1e-4)
    m.train()
    out = m.loss(x, xl, y, yl, teacher_forcing=0.5)
    out["loss"].backward()
    assert all(p.grad is not None for p in m.decoder.parameters() if p.requires_grad)


# ---- model I/O and loss ----------------------------------------------------------------------------
def test_decoder_io_adds_sos_and_eos():
    tgt = torch.tensor([[5, 6, 7], [8, 9, 0]])
    tin, tout = Seq2Seq.decoder_io(tgt, torch.tensor([3, 2]))
    assert tin.tolist() == [[SOS, 5, 6, 7], [SOS, 8, 9, PAD]]
    assert tout.tolist() == [[5, 6, 7, EOS], [8, 9, EOS, PAD]]


def test_config_yaml_round_trip():
    cfg = ModelConfig(input="text", vocab_size=40, src_vocab_size=33, ctc_weight=0.2, label_smoothing=0.05,
                      encoder=EncoderConfig(cell="gru", input_dim=24, subsampling="none"),
                      decoder=DecoderConfig(cell="rnn", attention="dot", layers=2))
    d = yaml.safe_load(yaml.safe_dump(cfg.to_dict()))
    again = ModelConfig.from_dict(d)
    assert again == cfg and ModelConfig.from_yaml(cfg.to_yaml()) == cfg
    with pytest.raises(ValueError):
        ModelConfig.from_dict({**d, "bogus": 1})
    with pytest.raises(ValueError):
        EncoderConfig(subsampling="conv", subsample_factor=3)


def test_encoder_registry_picks_the_encoder_by_name(monkeypatch):
    """A new encoder is one class and one ENCODERS entry; the config names it. A config without a type (every
    model file written before the registry) means the recurrent encoder; an unknown name is refused."""
    from asr_s2s.seq2seq import ENCODERS, Encoder, EncoderOutput

    class MeanEncoder(Encoder):
        """A linear map of each frame, final = the mean state: enough to train and decode."""

        def __init__(self, cfg: EncoderConfig) -> None:
            super().__init__(cfg)
            self.proj = torch.nn.Linear(cfg.input_dim, cfg.output_dim)

        def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
            mask = (torch.arange(x.size(1))[None, :] < lengths[:, None])[:, :, None]
            states = self.proj(x) * mask
            mean = states.sum(1) / lengths[:, None]
            final = mean.view(mean.size(0), 2, -1).transpose(0, 1).contiguous()  # (dirs, B, hidden)
            return EncoderOutput(states, lengths, final)

    monkeypatch.setitem(ENCODERS, "mean", MeanEncoder)
    cfg = tiny_config("gru", "dot", vocab_size=12, hidden=8)
    d = cfg.to_dict()
    assert d["encoder"]["type"] == "recurrent"
    d["encoder"] = {**d["encoder"], "type": "mean", "subsampling": "none"}
    model = Seq2Seq(ModelConfig.from_dict(d))
    assert isinstance(model.encoder, MeanEncoder)
    x, xl = torch.randn(2, 9, model.cfg.encoder.input_dim), torch.tensor([9, 5])
    model.loss(x, xl, torch.tensor([[4, 5], [6, 0]]), torch.tensor([2, 1]))["loss"].backward()
    res = model.greedy(x, xl, max_len=4)
    assert len(res.tokens) == 2 and all(len(t) <= 4 for t in res.tokens)

    old = cfg.to_dict()
    del old["encoder"]["type"]
    assert isinstance(Seq2Seq(ModelConfig.from_dict(old)).encoder, RecurrentEncoder)
    with pytest.raises(ValueError, match="encoder type"):
        ModelConfig.from_dict({**d, "encoder": {**d["encoder"], "type": "conformer"}})


def test_loss_terms_and_ctc():
    torch.manual_seed(0)
    cfg = tiny_config("lstm", "dot", vocab_size=12, hidden=16)
    cfg.ctc_weight = 0.3
    m = Seq2Seq(cfg)
    x, xl = torch.randn(2, 40, 40), torch.tensor([40, 25])
    y, yl = torch.randint(4, 12, (2, 4)), torch.tensor([4, 2])
    out = m.loss(x, xl, y, yl)
    assert set(out) == {"loss", "ce", "ctc", "ntokens"} and int(out["ntokens"]) == 4 + 1 + 2 + 1
    torch.testing.assert_close(out["loss"], 0.7 * out["ce"] + 0.3 * out["ctc"])
    assert out["ctc"] > 0 and out["ce"] > 0
    out["loss"].backward()
    assert m.ctc.weight.grad is not None
    assert m.num_parameters() == sum(p.numel() for p in m.parameters())


# ---- overfitting real data -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fsdd_batch(fsdd_files):
    return audio_batch(fsdd_files)


@pytest.fixture(scope="module")
def overfit_table():
    rows: list[tuple] = []
    yield rows
    if rows:
        print("\n\noverfit table (steps until greedy == references; Adam 3e-3, hidden 64)")
        print(f"{'input':6s} {'cell':5s} {'attention':9s} {'params':>8s} {'steps':>6s} {'seconds':>8s}")
        for r in rows:
            print(f"{r[0]:6s} {r[1]:5s} {r[2]:9s} {r[3]:8d} {str(r[4]):>6s} {r[5]:8.1f}")


FAST_AUDIO = [("lstm", "none"), ("lstm", "location"), ("gru", "dot"), ("rnn", "additive")]
FULL_AUDIO = [(c, a) for c in CELLS for a in ATTENTIONS]
FAST_TEXT = [("lstm", "none"), ("lstm", "location")]


def _audio_case(cell, attention, fsdd_batch, overfit_table):
    x, xl, y, yl, vocab = fsdd_batch
    torch.manual_seed(0)
    m = Seq2Seq(tiny_config(cell, attention, len(vocab)))
    steps, sec = overfit(m, x, xl, y, yl, max_steps=400, check_every=5)
    overfit_table.append(("audio", cell, attention, m.num_parameters(), steps, sec))
    print(f"overfit audio {cell}/{attention}: {steps} steps, {sec:.1f}s, {m.num_parameters()} params")
    assert steps is not None, f"{cell}/{attention} did not overfit 8 FSDD utterances in 400 steps"
    hyp = [vocab.decode(t) for t in m.greedy(x, xl).tokens]
    assert hyp == [vocab.decode(y[i, : yl[i]].tolist()) for i in range(len(yl))]


def _text_case(cell, attention, overfit_table):
    x, xl, y, yl, src_v, tgt_v = text_batch()
    torch.manual_seed(0)
    m = Seq2Seq(tiny_config(cell, attention, len(tgt_v), text_vocab=len(src_v)))
    steps, sec = overfit(m, x, xl, y, yl, max_steps=400, check_every=5)
    overfit_table.append(("text", cell, attention, m.num_parameters(), steps, sec))
    print(f"overfit text {cell}/{attention}: {steps} steps, {sec:.1f}s, {m.num_parameters()} params")
    assert steps is not None, f"text {cell}/{attention} did not overfit 8 pairs in 400 steps"


@pytest.mark.parametrize("cell,attention", FAST_AUDIO)
def test_overfits_fsdd(cell, attention, fsdd_batch, overfit_table):
    _audio_case(cell, attention, fsdd_batch, overfit_table)


@pytest.mark.slow
@pytest.mark.parametrize("cell,attention", [c for c in FULL_AUDIO if c not in FAST_AUDIO])
def test_overfits_fsdd_full_matrix(cell, attention, fsdd_batch, overfit_table):
    _audio_case(cell, attention, fsdd_batch, overfit_table)


@pytest.mark.parametrize("cell,attention", FAST_TEXT)
def test_overfits_text_pairs(cell, attention, overfit_table):
    _text_case(cell, attention, overfit_table)


@pytest.mark.slow
@pytest.mark.parametrize("cell,attention", [c for c in FULL_AUDIO if c not in FAST_TEXT])
def test_overfits_text_pairs_full_matrix(cell, attention, overfit_table):
    _text_case(cell, attention, overfit_table)


@pytest.mark.parametrize("attention,tf", [("location", 1.0), ("location", 0.5), ("additive", 0.5)])
def test_step_loop_does_no_host_syncs(attention, tf):
    """The per-step training loop never reads a tensor value back to the host (no .item(), no
    bool(tensor)): the profiler would show aten::_local_scalar_dense / aten::item."""
    from torch.profiler import profile

    torch.manual_seed(0)
    m = Seq2Seq(tiny_config("lstm", attention, vocab_size=12, hidden=16))
    x, xl = torch.randn(2, 30, 40), torch.tensor([30, 18])
    enc = m.encode(x, xl)
    tgt_in = torch.randint(3, 12, (2, 9))
    with profile() as prof:
        logits, _ = m.decoder(enc, tgt_in, teacher_forcing=tf)
        logits.sum().backward()
    names = {e.key for e in prof.key_averages()}
    assert not names & {"aten::_local_scalar_dense", "aten::item", "aten::is_nonzero"}, names


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [True, False])
def test_padded_rnn_equals_packed_sequences(cell, bidirectional):
    """The CPU encoder's one-call-per-layer padded run computes what packed sequences compute: the same
    outputs (zero past each length), final states and gradients w.r.t. inputs and every weight."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from asr_s2s.seq2seq.encoder import make_rnn, run_rnn_padded

    torch.manual_seed(0)
    rnn = make_rnn(cell, 6, 8, 2, bidirectional=bidirectional)
    lengths = torch.tensor([5, 11, 1, 11, 7])
    x = torch.randn(5, 11, 6) * 3
    x[0, 5:] = 50.0  # loud garbage in the padding must not leak
    probe = torch.randn(5, 11, 8 * (2 if bidirectional else 1))

    def run(fn):
        xi = x.clone().requires_grad_(True)
        out, final = fn(xi)
        finals = final if isinstance(final, tuple) else (final,)
        loss = (out * probe).sum() + sum((f * f).sum() for f in finals)  # gradients through finals too
        grads = torch.autograd.grad(loss, [xi, *rnn.parameters()])
        return out, finals, grads

    def packed(xi):
        out, final = rnn(pack_padded_sequence(xi, lengths, batch_first=True, enforce_sorted=False))
        return pad_packed_sequence(out, batch_first=True, total_length=11)[0], final

    out_p, fin_p, g_p = run(packed)
    out_o, fin_o, g_o = run(lambda xi: run_rnn_padded(rnn, xi, lengths))
    torch.testing.assert_close(out_o, out_p, atol=1e-5, rtol=1e-4)
    assert out_o[0, 5:].abs().sum() == 0 and out_o[2, 1:].abs().sum() == 0
    for a, b in zip(fin_o, fin_p):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    for a, b in zip(g_o, g_p):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, pytest.param(torch.bfloat16, marks=needs_onednn_bf16)])
def test_inference_lstm_on_reordered_weights_equals_the_plain_run(dtype):
    """In inference accel runs the CPU encoder's LSTM layers on weights reordered for oneDNN once (packed.lstm_layer)
    where the CPU allows (else the plain run's kernels): outputs and final states equal the plain run's to
    rounding (fp32) or bf16 rounding (bf16 under autocast, as the bf16 encoder copy runs), with and without
    padding, and an in-place weight update is followed. Another kernel sums in another order: the paths are
    compared within tolerance, not bit for bit."""
    from asr_s2s.accel import packed
    from asr_s2s.accel.encoder import run_rnn
    from asr_s2s.seq2seq.encoder import make_rnn, run_rnn_padded

    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 2e-2, "rtol": 2e-2}
    torch.manual_seed(0)
    rnn = make_rnn("lstm", 6, 8, 2, bidirectional=True).eval().to(dtype)
    x = torch.randn(4, 11, 6) * 3
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        for scale in (1.0, 1.5):
            with torch.no_grad():
                for p in rnn.parameters():
                    p.mul_(scale)
            for lengths in (torch.tensor([11, 11, 11, 11]), torch.tensor([5, 11, 1, 7])):
                ref, ref_final = run_rnn_padded(rnn, x, lengths)  # gradients on: the plain path
                with torch.inference_mode():
                    assert packed.can_pack_lstm(rnn, x.to(dtype)) == packed.can_pack(rnn.weight_ih_l0, dtype)
                    out, final = run_rnn(rnn, x, lengths)
                torch.testing.assert_close(out, ref.detach(), **tol)
                assert out.abs().amax() > 0.05 and all(out[i, n:].abs().sum() == 0 for i, n in enumerate(lengths))
                for a, b in zip(final, ref_final):
                    torch.testing.assert_close(a, b.detach(), **tol)


@needs_onednn_bf16
@pytest.mark.parametrize("attention", ["location", "dot"])
def test_bf16_autocast_training_step_matches_fp32_gradients(attention):
    """Training under bf16 autocast (config amp: bf16) runs forward and backward through every path,
    including the location decoder's deferred-gradient loop, and its gradients point where fp32's do."""
    torch.manual_seed(0)
    m = Seq2Seq(tiny_config("lstm", attention, vocab_size=12, hidden=32))
    x, xl = torch.randn(3, 37, 40), torch.tensor([37, 20, 9])
    y, yl = torch.randint(3, 12, (3, 6)), torch.tensor([6, 4, 5])

    def grads(bf16: bool) -> torch.Tensor:
        m.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = m.loss(x, xl, y, yl)["loss"]
        loss.float().backward()
        return torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None])

    ref, low = grads(False), grads(True)
    assert low.dtype == torch.float32 and torch.isfinite(low).all() and low.numel() == ref.numel()
    assert torch.nn.functional.cosine_similarity(ref, low, dim=0) > 0.99
