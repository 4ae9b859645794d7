"""Export a speech model for deployment (TorchScript or ONNX) and a small reference runner.

    asr-s2s export MODEL.pt --format onnx --out DIR

``DIR`` holds three files:

- ``encoder.onnx`` (or ``encoder.pt``, TorchScript): normalised log-mel ``feats (1, T, F)`` ->
  encoder states and the decoder's initial state (the bridge) and attention keys;
- ``decoder_step.onnx`` (``decoder_step.pt``): one decoder step, ``token (1,)`` + state + encoder
  memory -> ``logits (1, V)`` + the new state (LSTM/GRU h, c and, for location attention, the
  previous and cumulative alignment);
- ``model.json``: everything else, as plain JSON: feature config, CMVN statistics, subsampling,
  vocabulary, search settings, the graphs' input/output names and the model's meta.

Two graphs instead of one because the greedy loop is data-dependent (it stops at ``<eos>``): any
runtime drives it with a ten-line loop (:class:`ExportedModel` is that loop). Batch size is 1.

What stays outside the graphs, in :class:`ExportedModel`, in numpy: the log-mel frontend
(framing, periodic Hann window, rfft, the mel filterbank of :func:`asr_s2s.features.mel_filterbank`, log with floor — the same
numbers as :class:`asr_s2s.features.LogMel`), CMVN, zero-padding for frame stacking, the greedy
loop and detokenisation. Audio is read and resampled with :func:`asr_s2s.audio.load_audio`
(soundfile + soxr; that module imports torch), long recordings are split with the same VAD as
:mod:`asr_s2s.transcribe`.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Union

import numpy as np

from .tokens import EOS, SOS, UNK

EXPORT_FORMAT = "asr-s2s-export/1"
BACKENDS = {"onnx": ".onnx", "torchscript": ".pt"}


# ---- graphs --------------------------------------------------------------------------------------
def _graph_modules(model: Any):
    import torch
    from torch import nn

    from .seq2seq.attention import AttentionMemory
    from .seq2seq.decoder import DecoderState
    from .seq2seq.inference import Inference

    s2s = model.seq2seq
    inf = Inference(s2s)  # the plain search interface: what a graph can hold (no packed or compiled weights)
    dec = s2s.decoder
    has_c = dec.is_lstm
    has_att = dec.attention.stateful
    has_keys = dec.attention.project_keys(torch.zeros(1, 1, s2s.encoder.output_dim)) is not None

    step = inf.stepper()

    def memory(values: torch.Tensor, keys: torch.Tensor | None) -> AttentionMemory:
        ones = torch.ones_like(values[:, :, 0])
        return AttentionMemory(values, keys, ones > 0, ones.sum(1).long())

    class EncoderGraph(nn.Module):
        """feats (1, T, F), normalised (and zero-padded to a multiple of the stacking factor). Batch 1 without
        padding: the encoder's padding branches are traced as not taken."""

        def __init__(self) -> None:
            super().__init__()
            self.s2s = s2s

        def forward(self, feats: torch.Tensor):
            lengths = torch.ones_like(feats[:, :, 0]).sum(1).long()  # (1,) = T, traced from the input's shape
            enc = inf.encode(feats, lengths)
            st, mem = inf.initial_state(enc)
            out = [enc.states] + ([mem.keys] if has_keys else []) + [st.h] + ([st.c] if has_c else []) + ([st.att] if has_att else [])
            return tuple(out)

    class StepGraph(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.s2s = s2s

        def forward(self, *args: torch.Tensor):
            it = iter(args)
            token, h = next(it), next(it)
            c = next(it) if has_c else None
            att = next(it) if has_att else None
            values = next(it)
            keys = next(it) if has_keys else None
            logits, st, _ = step(token, DecoderState(h, c, att), memory(values, keys))
            return tuple([logits, st.h] + ([st.c] if has_c else []) + ([st.att] if has_att else []))

    enc_out = ["values"] + (["keys"] if has_keys else []) + ["h"] + (["c"] if has_c else []) + (["att"] if has_att else [])
    step_in = ["token", "h"] + (["c"] if has_c else []) + (["att"] if has_att else []) + ["values"] + (["keys"] if has_keys else [])
    step_out = ["logits", "h_out"] + (["c_out"] if has_c else []) + (["att_out"] if has_att else [])
    return EncoderGraph().eval(), StepGraph().eval(), enc_out, step_in, step_out


def _tokenizer_json(tok: Any) -> dict:
    state = tok.state_dict()
    if state["type"] == "char":
        return {"type": "char", "vocab": list(state["vocab"])}
    return {"type": "sentencepiece", "vocab": [tok.sp.id_to_piece(i) for i in range(tok.vocab_size)]}


def export_model(model_or_path: Any, fmt: str, out: Union[str, os.PathLike], opset: int = 17) -> Path:
    """Write ``out/{encoder,decoder_step}.{onnx|pt}`` and ``out/model.json``; returns ``out``."""
    import torch

    from .model import load_model
    from .transcribe import model_max_segment

    if fmt not in BACKENDS:
        raise ValueError(f"format must be one of {sorted(BACKENDS)}, got {fmt!r}")
    model = model_or_path if hasattr(model_or_path, "seq2seq") else load_model(model_or_path)
    model = model.cpu().eval()
    if not model.is_audio:
        raise ValueError("export supports speech models (input: audio) only")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    enc_g, step_g, enc_out, step_in, step_out = _graph_modules(model)
    ecfg = model.seq2seq.encoder.cfg
    feats = torch.randn(1, 37 * max(1, ecfg.subsample_factor), model.features.n_mels)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on shape-dependent Python values: batch is 1 by design
        enc_vals = enc_g(feats)
        named = dict(zip(enc_out, enc_vals))
        step_args = tuple(torch.tensor([SOS]) if n == "token" else named[n] for n in step_in)
        ext = BACKENDS[fmt]
        if fmt == "torchscript":
            torch.jit.save(torch.jit.trace(enc_g, (feats,), check_trace=False), str(out / f"encoder{ext}"))
            torch.jit.save(torch.jit.trace(step_g, step_args, check_trace=False), str(out / f"decoder_step{ext}"))
        else:
            time_axes = {"values": {1: "T"}, "keys": {1: "T"}, "att": {2: "T"}, "att_out": {2: "T"}}
            torch.onnx.export(enc_g, (feats,), str(out / f"encoder{ext}"), input_names=["feats"], output_names=enc_out,
                              dynamic_axes={"feats": {1: "frames"}, **{k: v for k, v in time_axes.items() if k in enc_out}},
                              opset_version=opset, dynamo=False)
            torch.onnx.export(step_g, step_args, str(out / f"decoder_step{ext}"), input_names=step_in,
                              output_names=step_out, dynamic_axes={k: v for k, v in time_axes.items() if k in step_in + step_out},
                              opset_version=opset, dynamo=False)
    cmvn = None
    stats = model.cmvn_stats
    if stats is not None:
        cmvn = {"kind": "global", "mean": stats[0].tolist(), "std": stats[1].tolist()}
    elif model.cmvn_kind == "utterance":
        cmvn = {"kind": "utterance", "eps": model.cmvn.eps, "norm_vars": model.cmvn.norm_vars}
    stack = ecfg.subsample_factor if ecfg.subsampling == "stack" and ecfg.subsample_factor > 1 else 1
    sidecar = {
        "format": EXPORT_FORMAT, "backend": fmt,
        "encoder": {"file": f"encoder{ext}", "inputs": ["feats"], "outputs": enc_out},
        "decoder_step": {"file": f"decoder_step{ext}", "inputs": step_in, "outputs": step_out},
        "features": model.features.to_dict(), "cmvn": cmvn, "stack_factor": stack,
        "tokenizer": _tokenizer_json(model.tokenizer),
        "search": {"sos": SOS, "eos": EOS, "max_len_ratio": 1.5, "max_len": 100000},
        "max_segment": model_max_segment(model),
        "meta": json.loads(json.dumps(getattr(model, "meta", {}), default=str)),
    }
    (out / "model.json").write_text(json.dumps(sidecar, indent=1))
    return out


# ---- reference runner ------------------------------------------------------------------------
class ExportedModel:
    """Run an exported model: numpy features + CMVN, the encoder graph, a greedy loop over the
    decoder-step graph. ``transcribe`` takes the same inputs as :meth:`ASRModel.transcribe`."""

    def __init__(self, path: Union[str, os.PathLike]):
        self.dir = Path(path)
        self.spec = json.loads((self.dir / "model.json").read_text())
        if self.spec.get("format") != EXPORT_FORMAT:
            raise ValueError(f"{self.dir}: not an asr-s2s export (format {self.spec.get('format')!r})")
        self.backend = self.spec["backend"]
        self._encoder = self._load(self.spec["encoder"])
        self._step = self._load(self.spec["decoder_step"])
        self._init_frontend()
        self.meta = self.spec.get("meta", {})

    # graphs
    def _load(self, g: dict):
        path = str(self.dir / g["file"])
        if self.backend == "onnx":
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
            present = {i.name for i in sess.get_inputs()}  # the exporter drops inputs a graph never reads
            outs = g["outputs"]
            return lambda feeds: dict(zip(outs, sess.run(outs, {k: v for k, v in feeds.items() if k in present})))
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch >= 2.10 deprecates TorchScript
            mod = torch.jit.load(path, map_location="cpu").eval()
        ins, outs = g["inputs"], g["outputs"]

        def run(feeds: dict) -> dict:
            # optimized_execution(False): the profiling executor re-specialises the graph for every new
            # input length (seconds per call on short inputs); plain interpretation is faster here.
            with torch.inference_mode(), torch.jit.optimized_execution(False):
                res = mod(*[torch.from_numpy(np.asarray(feeds[k])) for k in ins])
            res = res if isinstance(res, (tuple, list)) else (res,)
            return {k: v.numpy() for k, v in zip(outs, res)}

        return run

    # frontend
    def _init_frontend(self) -> None:
        from .features import mel_filterbank

        f = self.spec["features"]
        self.sample_rate = int(f["sample_rate"])
        self.win = int(round(self.sample_rate * f["win_ms"] / 1000))
        self.hop = int(round(self.sample_rate * f["hop_ms"] / 1000))
        self.n_fft = f.get("n_fft") or 1 << (self.win - 1).bit_length()
        self.center, self.log_floor = f.get("center", True), f["log_floor"]
        window = np.zeros(self.n_fft)
        left = (self.n_fft - self.win) // 2  # torch.stft centres a shorter window inside n_fft
        window[left : left + self.win] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(self.win) / self.win)  # periodic Hann
        self.window = window
        self.mel_fb = mel_filterbank(self.sample_rate, self.n_fft, f["n_mels"], f["f_min"], f["f_max"],
                                     htk=f.get("mel_scale", "slaney") == "htk",
                                     norm=f.get("mel_norm", "slaney")).T.astype(np.float64)

    def features(self, wave: np.ndarray) -> np.ndarray:
        """Mono waveform at ``sample_rate`` -> normalised log-mel ``(T, n_mels)`` float32."""
        x = np.asarray(wave, dtype=np.float64)
        if self.center:
            x = np.pad(x, (self.n_fft // 2, self.n_fft // 2))
        if x.shape[0] < self.n_fft:
            x = np.pad(x, (0, self.n_fft - x.shape[0]))
        n = 1 + (x.shape[0] - self.n_fft) // self.hop
        frames = np.lib.stride_tricks.as_strided(x, (n, self.n_fft), (x.strides[0] * self.hop, x.strides[0]))
        spec = np.fft.rfft(frames * self.window, axis=-1)
        feats = np.log(np.maximum((spec.real ** 2 + spec.imag ** 2) @ self.mel_fb, self.log_floor))
        if self.spec["features"].get("level_norm", False):
            feats = self._normalize_level(feats)
        cm = self.spec.get("cmvn")
        if cm and cm["kind"] == "global":
            feats = (feats - np.asarray(cm["mean"])) / np.asarray(cm["std"])
        elif cm and cm["kind"] == "utterance":
            feats = feats - feats.mean(0)
            if cm.get("norm_vars", True):
                feats = feats / np.sqrt(feats.var(0) + cm.get("eps", 1e-5))
        return feats.astype(np.float32)

    @staticmethod
    def _normalize_level(feats: np.ndarray) -> np.ndarray:
        """asr_s2s.features.normalize_level for one utterance ``(T, F)``."""
        from .features import LEVEL_RANGE_DB, LEVEL_TOP_PERCENT

        energy = np.log(np.exp(feats).mean(-1))
        ref = np.sort(energy)[::-1][(len(energy) - 1) * LEVEL_TOP_PERCENT // 100]
        return np.maximum(feats - ref, -LEVEL_RANGE_DB * np.log(10.0) / 10.0)

    # search
    def decode(self, wave: np.ndarray) -> tuple[list[int], float]:
        """Greedy search on one waveform -> (token ids without eos, mean log-probability per token)."""
        feats = self.features(wave)
        k = self.spec.get("stack_factor", 1)
        if k > 1 and feats.shape[0] % k:
            feats = np.concatenate([feats, np.zeros((k - feats.shape[0] % k, feats.shape[1]), np.float32)])
        state = self._encoder({"feats": feats[None]})
        memory = {k: v for k, v in state.items() if k in ("values", "keys")}
        srch = self.spec["search"]
        limit = max(1, min(srch["max_len"], math.ceil(memory["values"].shape[1] * srch["max_len_ratio"])))
        tok, toks, total = srch["sos"], [], 0.0
        for _ in range(limit):
            out = self._step({"token": np.array([tok], dtype=np.int64), **state, **memory})
            logits = out["logits"][0].astype(np.float64)
            logp = logits - (logits.max() + np.log(np.exp(logits - logits.max()).sum()))
            tok = int(np.argmax(logits))
            total += float(logp[tok])
            state = {k[: -len("_out")]: v for k, v in out.items() if k.endswith("_out")}
            if tok == srch["eos"]:
                return toks, total / (len(toks) + 1)
            toks.append(tok)
        return toks, total / max(1, len(toks))

    def detokenize(self, ids: list[int]) -> str:
        tk = self.spec["tokenizer"]
        pieces = [tk["vocab"][i] for i in ids if i > UNK]
        if tk["type"] == "char":
            return "".join(pieces)
        return "".join(pieces).replace("\u2581", " ").strip()

    def transcribe(self, inputs: Any, sample_rate: int | None = None, long_form: bool = True):
        """Files or arrays -> Transcript(s), as :meth:`asr_s2s.model.ASRModel.transcribe` (greedy, batch 1)."""
        from .transcribe import Segment, Transcript, iter_segments, truncate_repetitions

        single = isinstance(inputs, (str, os.PathLike, np.ndarray)) or type(inputs).__module__.startswith("torch")
        items: Iterable = [inputs] if single else list(inputs)
        results = []
        for item in items:
            segs, scores = [], []
            for s, e, wave in iter_segments(item, self.sample_rate, sample_rate=sample_rate, long_form=long_form,
                                            max_segment=float(self.spec.get("max_segment") or 15.0)):
                toks, score = self.decode(wave.numpy())
                text = self.detokenize(truncate_repetitions(toks)).strip()
                scores.append((max(e - s, 1e-3), score))
                if text:
                    segs.append(Segment(s, e, text))
            dur = sum(d for d, _ in scores)
            results.append(Transcript(text=" ".join(x.text for x in segs), segments=segs,
                                      score=sum(d * sc for d, sc in scores) / dur if dur else 0.0,
                                      path=str(item) if isinstance(item, (str, os.PathLike)) else None))
        return results[0] if single else results


__all__ = ["export_model", "ExportedModel", "EXPORT_FORMAT"]
