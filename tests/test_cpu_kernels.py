"""The compiled batch-1 bf16 LSTM kernel (accel/cpu_kernels.py, lstm_bf16.c): its arithmetic against a plain
reference, its use by the encoder, and what happens where it cannot be built."""

from __future__ import annotations

import pytest
import torch

from asr_s2s.accel import accelerate, cpu_kernels
from asr_s2s.accel.encoder import run_rnn
from asr_s2s.seq2seq.encoder import make_rnn, run_rnn_padded
from asr_s2s.seq2seq.search import greedy_search
from s2s_helpers import needs_onednn_bf16

needs_kernel = pytest.mark.skipif(not cpu_kernels.available(), reason=f"kernel {cpu_kernels.status()}")


def reference_direction(x: torch.Tensor, w_ih, w_hh, b_ih, b_hh, reverse: bool):
    """The kernel's arithmetic in plain fp32 torch: bf16 weights and input, fp32 sums and cell state, h rounded
    to bf16 before it feeds the next step. x (T, K) -> outputs (T, H), final h and c (H)."""
    w_ih, w_hh = w_ih.bfloat16().float(), w_hh.bfloat16().float()
    gx = x.bfloat16().float() @ w_ih.t() + (b_ih.float() + b_hh.float())
    hidden = w_hh.size(1)
    h, c = torch.zeros(hidden), torch.zeros(hidden)
    out = torch.zeros(x.size(0), hidden)
    for t in (reversed(range(x.size(0))) if reverse else range(x.size(0))):
        i, f, g, o = (gx[t] + h.bfloat16().float() @ w_hh.t()).chunk(4)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        out[t] = h
    return out, h, c


def _weights(k: int, hidden: int, scale: float = 0.3):
    return (torch.randn(4 * hidden, k) * scale, torch.randn(4 * hidden, hidden) * scale,
            torch.randn(4 * hidden) * 0.5, torch.randn(4 * hidden) * 0.5)


@needs_kernel
@pytest.mark.parametrize("t,k,hidden", [(1, 2, 16), (7, 10, 16), (8, 64, 48), (13, 40, 32), (70, 96, 64)])
@pytest.mark.parametrize("dirs", [1, 2])
@pytest.mark.parametrize("threads", [1, 2])
def test_kernel_layer_equals_the_reference_arithmetic(t, k, hidden, dirs, threads):
    """Every length (including a partial tile of time steps), size and direction: outputs, final h and c as
    the plain reference computes them, up to bf16 rounding of h where the two sum in different orders."""
    torch.manual_seed(t * 100 + k + hidden)
    x = torch.randn(t, k) * 2
    ws = [_weights(k, hidden) for _ in range(dirs)]
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out, h_n, c_n = cpu_kernels.lstm_layer_b1(x.bfloat16(), [cpu_kernels.pack_direction(*w) for w in ws])
    finally:
        torch.set_num_threads(old)
    assert out.shape == (t, dirs * hidden) and out.dtype == torch.bfloat16
    for d, w in enumerate(ws):
        ref, ref_h, ref_c = reference_direction(x, *w, reverse=d == 1)
        got = out[:, d * hidden:(d + 1) * hidden].float()
        assert (got - ref).abs().max() <= 8e-3  # one bf16 step of h in [0.5, 1)
        assert (got - ref).abs().mean() <= 5e-4
        assert (h_n[d] - ref_h).abs().max() <= 8e-3
        assert (c_n[d] - ref_c).abs().max() <= 3e-2 and (c_n[d] - ref_c).abs().mean() <= 2e-3


@needs_kernel
def test_kernel_rejects_what_it_cannot_run():
    packs = [cpu_kernels.pack_direction(*_weights(4, 16))]
    with pytest.raises(ValueError, match="bf16"):
        cpu_kernels.lstm_layer_b1(torch.randn(3, 4), packs)  # fp32 input
    with pytest.raises(ValueError, match="input size"):
        cpu_kernels.lstm_layer_b1(torch.randn(3, 6).bfloat16(), packs)  # 6 inputs for a 4-input layer
    assert cpu_kernels.fits(192, 192) and cpu_kernels.fits(512, 256)
    assert not cpu_kernels.fits(513, 256) and not cpu_kernels.fits(512, 8)


@needs_kernel
def test_encoder_runs_batch_one_bf16_inference_on_the_kernel(monkeypatch):
    """accel's run_rnn takes the kernel exactly for one unpadded utterance of a bf16 LSTM in inference, and its
    states and finals agree with oneDNN's run of the same layers (the kernel switched off)."""
    torch.manual_seed(0)
    rnn = make_rnn("lstm", 40, 32, 3, bidirectional=True).eval().to(torch.bfloat16)
    calls = []
    real, lib = cpu_kernels.lstm_layer_b1, cpu_kernels._state["lib"]
    monkeypatch.setattr(cpu_kernels, "lstm_layer_b1", lambda *a: calls.append(1) or real(*a))
    x = torch.randn(1, 29, 40)
    with torch.inference_mode():
        out, (h, c) = run_rnn(rnn, x, torch.tensor([29]))
        assert len(calls) == 3  # one call per layer, both directions in it
        run_rnn(rnn, torch.randn(2, 29, 40), torch.tensor([29, 20]))  # batch 2: oneDNN
        assert len(calls) == 3
        monkeypatch.setitem(cpu_kernels._state, "lib", None)  # the kernel off: oneDNN's layers
        ref, (ref_h, ref_c) = run_rnn(rnn, x, torch.tensor([29]))
    assert out.shape == ref.shape == (1, 29, 64) and out.dtype == ref.dtype == torch.bfloat16
    assert h.shape == ref_h.shape == (6, 1, 32) and c.shape == ref_c.shape and h.dtype == ref_h.dtype
    assert (out.float() - ref.float()).abs().max() <= 3e-2  # three layers of bf16 rounding apart
    assert (out.float() - ref.float()).abs().mean() <= 2e-3
    assert (h.float() - ref_h.float()).abs().max() <= 3e-2
    assert (c.float() - ref_c.float()).abs().max() <= 6e-2
    monkeypatch.setitem(cpu_kernels._state, "lib", lib)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autograd on (training): never the kernel
        run_rnn(rnn, x, torch.tensor([29]))
    assert len(calls) == 3


def _fresh_state(monkeypatch, tmp_path, **env):
    monkeypatch.setattr(cpu_kernels, "_state", {})
    monkeypatch.setenv("ASR_S2S_CACHE", str(tmp_path))
    monkeypatch.delenv("ASR_S2S_CPU_KERNELS", raising=False)  # as in a run with the kernels off (README)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


@needs_kernel
def test_kernel_builds_into_the_cache_dir(monkeypatch, tmp_path):
    _fresh_state(monkeypatch, tmp_path)
    assert cpu_kernels.status().startswith("on")
    built = list((tmp_path / "kernels").glob("lstm_bf16-*.so"))
    assert len(built) == 1
    assert not [p for p in (tmp_path / "kernels").iterdir() if p.is_dir()]  # the build folder is gone


@pytest.mark.parametrize("env,why", [({"ASR_S2S_CPU_KERNELS": "0"}, "turned off"),
                                     ({"CC": "false"}, "failed on lstm_bf16.c"),
                                     ({"ASR_S2S_NATIVE_BF16": "0"}, "no AVX512-BF16")])
def test_without_the_kernel_the_encoder_runs_torch(monkeypatch, request, tmp_path, env, why):
    """Switched off, where the compiler fails, or on a CPU without AVX512-BF16 (or one made to look so): status
    says why, and batch-1 bf16 inference runs torch's layers (oneDNN's on reordered weights where it can pack
    bf16, else the plain ones), giving the plain run's result to bf16 rounding."""
    from asr_s2s.accel import precision

    _fresh_state(monkeypatch, tmp_path, **env)
    precision.cpu_native_bf16.cache_clear()  # asked again under this environment, and after it
    request.addfinalizer(precision.cpu_native_bf16.cache_clear)
    if why.startswith("failed") and not precision.cpu_native_bf16():
        why = "no AVX512-BF16"  # the compiler is never asked
    assert not cpu_kernels.available()
    assert cpu_kernels.status().startswith("off: ") and why in cpu_kernels.status()
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip(needs_onednn_bf16.kwargs["reason"])  # the reference run below is a bf16-autocast LSTM
    torch.manual_seed(0)
    rnn = make_rnn("lstm", 40, 32, 2, bidirectional=True).eval().to(torch.bfloat16)
    x = torch.randn(1, 17, 40)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as the bf16 encoder copy runs
        ref, _ = run_rnn_padded(rnn, x, torch.tensor([17]))  # autograd on: the plain path
        with torch.inference_mode():
            out, _ = run_rnn(rnn, x, torch.tensor([17]))
    assert out.abs().amax() > 0.05
    torch.testing.assert_close(out, ref.detach(), atol=2e-2, rtol=2e-2)


@needs_kernel
def test_kernel_builds_without_openmp_where_the_compiler_lacks_it(monkeypatch, tmp_path):
    """A compiler that refuses -fopenmp (clang without libomp): the kernel is built without it, says so, and
    runs both directions in turn with the same results."""
    import shutil

    cc = tmp_path / "cc-no-openmp"
    real_cc = shutil.which("cc") or shutil.which("gcc")
    cc.write_text(f'#!/bin/sh\nfor a in "$@"; do [ "$a" = -fopenmp ] && exit 1; done\nexec {real_cc} "$@"\n')
    cc.chmod(0o755)
    torch.manual_seed(1)
    ws = [_weights(24, 32) for _ in range(2)]
    x = torch.randn(11, 24).bfloat16()
    ref = cpu_kernels.lstm_layer_b1(x, [cpu_kernels.pack_direction(*w) for w in ws])
    _fresh_state(monkeypatch, tmp_path / "cache", CC=str(cc))
    assert cpu_kernels.status() == "on (built without OpenMP: one thread)"
    got = cpu_kernels.lstm_layer_b1(x, [cpu_kernels.pack_direction(*w) for w in ws])
    for a, b in zip(got, ref):  # the same arithmetic (each direction is one thread's), another build
        torch.testing.assert_close(a, b, atol=1e-2, rtol=1e-2)


def reference_location_step(weights, h, c, att, add, keys, values, lengths):
    """accel.decoder.search_step up to the output layer, in plain torch, with the kernel's roundings: the
    query, gate and combine products on bf16 inputs and weights (fp32 sums), the rest in fp32."""
    wq, wg, wc, bc, conv, loc2, v2 = weights

    def bf16_product(x, w):
        return x.bfloat16().float() @ w.bfloat16().float().t()

    t = att.size(-1)
    q = bf16_product(h, wq)
    f = torch.nn.functional.conv1d(att, conv, padding=conv.size(-1) // 2).transpose(1, 2)  # (N, T, C)
    e = torch.sigmoid(keys + q[:, None] + f @ loc2) @ v2
    e = torch.where(torch.arange(t) < lengths[:, None], e, float("-inf"))
    w = torch.softmax(e, dim=1)
    new_att = torch.stack([w, att[:, 1] + w], dim=1)
    ctx = torch.bmm(w[:, None], values)[:, 0]
    i, f_, g, o = (bf16_product(torch.cat([ctx, h], 1), wg) + add).chunk(4, dim=1)
    c_new = torch.sigmoid(f_) * c + torch.sigmoid(i) * torch.tanh(g)
    h_new = torch.sigmoid(o) * torch.tanh(c_new)
    feats = torch.tanh(bf16_product(torch.cat([h_new, ctx], 1), wc) + bc)
    return feats, h_new, c_new, w, new_att


@needs_kernel
@pytest.mark.parametrize("n", [1, 2, 5, 16, 37])
@pytest.mark.parametrize("t,a,v,hidden,d,ch,kw", [(23, 32, 22, 16, 48, 3, 5), (70, 64, 96, 48, 64, 4, 31),
                                                  (1, 16, 2, 16, 16, 1, 3)])
@pytest.mark.parametrize("threads", [1, 2])
def test_location_step_equals_the_reference_arithmetic(n, t, a, v, hidden, d, ch, kw, threads):
    """LocationStep, for 1 to 37 hypotheses on 1 or 2 threads (groups of up to 16 rows; padding past each row's
    length; sizes off the 64-row tiles; tails of 16-float vectors; a conv wider than the utterance), computes what
    the search step computes, with the kernel's bf16 roundings."""
    torch.manual_seed(n + t + a + v)
    weights = (torch.randn(a, hidden) * 0.3, torch.randn(4 * hidden, v + hidden) * 0.3,
               torch.randn(d, hidden + v) * 0.3, torch.randn(d) * 0.3, torch.randn(ch, 2, kw), torch.randn(ch, a),
               torch.randn(a))
    step = cpu_kernels.LocationStep(*weights)
    lengths = torch.randint(1, t + 1, (n,))
    lengths[0] = t
    real = (torch.arange(t) < lengths[:, None]).float()
    prev = torch.rand(n, t) * real
    att = torch.stack([prev / prev.sum(1, keepdim=True), torch.rand(n, t) * real], dim=1)
    inputs = (torch.randn(n, hidden), torch.randn(n, hidden), att, torch.randn(n, 4 * hidden), torch.randn(n, t, a),
              torch.randn(n, t, v), lengths)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = step(*inputs)
    finally:
        torch.set_num_threads(old)
    ref = reference_location_step(weights, *inputs)
    for name, x, y in zip(("feats", "h", "c", "weights", "state"), got, ref):
        assert x.shape == y.shape, name
        torch.testing.assert_close(x, y, atol=2e-3, rtol=2e-3, msg=name)
    assert (got[3] * (1 - real) == 0).all() and torch.equal(got[4][:, 0], got[3])
    with pytest.raises(ValueError, match="fp32 hypotheses"):
        step(*inputs[:4], inputs[4][:, :, :-1], *inputs[5:])
    assert not cpu_kernels.LocationStep.fits(24, 22, 16, 48) and not cpu_kernels.LocationStep.fits(32, 21, 16, 48)


@needs_kernel
def test_bf16_search_steps_on_the_kernel(monkeypatch):
    """Greedy search in bf16 (and int8) runs every step on the kernel, for one utterance and for a batch; the
    scores stay where the torch steps put them; a decoder whose sizes do not fit keeps the torch steps."""
    from asr_s2s.accel import packed
    from asr_s2s.seq2seq import Seq2Seq
    from s2s_helpers import tiny_config

    torch.manual_seed(0)
    m = Seq2Seq(tiny_config("lstm", "location", vocab_size=14, hidden=32)).eval()
    x, xl = torch.randn(2, 57, 40), torch.tensor([57, 41])
    calls = []
    real = cpu_kernels.LocationStep.__call__
    monkeypatch.setattr(cpu_kernels.LocationStep, "__call__", lambda self, *a: calls.append(1) or real(self, *a))
    for precision in ("bf16", "int8"):
        packed._DERIVED.pop(m.decoder, None)
        with_kernel = greedy_search(accelerate(m, precision), x[:1], xl[:1], max_len=6)
        assert len(calls) == 6
        greedy_search(accelerate(m, precision), x, xl, max_len=6)
        assert len(calls) == 12  # and a batch of two
        packed._DERIVED.pop(m.decoder, None)
        with monkeypatch.context() as off:
            off.setitem(cpu_kernels._state, "lib", None)
            without = greedy_search(accelerate(m, precision), x[:1], xl[:1], max_len=6)
        assert len(calls) == 12
        calls.clear()
        assert with_kernel.tokens == without.tokens
        torch.testing.assert_close(with_kernel.scores, without.scores, atol=0.05, rtol=0.05)
    odd = Seq2Seq(tiny_config("lstm", "location", vocab_size=14, hidden=24)).eval()
    greedy_search(accelerate(odd, "bf16"), x[:1], xl[:1], max_len=3)
    assert not calls and packed._DERIVED[odd.decoder][("search_weights", "bf16")][1].kernel is None
    packed._DERIVED.pop(m.decoder, None)
