"""``asr-s2s bench``: what the reference model costs on this machine, measured in one run.

On real AN4 audio (FSDD with ``--corpus fsdd``) and the reference configuration
(``recipe_configs/an4_reference.yaml``, the model matched to the SpeechBrain peer in ``../shared/peers``):

- the machine's fp32 matmul peak, measured here: square ``torch.mm`` (MKL) and a oneDNN (mkldnn) linear;
- training throughput: audio-seconds per wall-second over whole epochs after a warm-up, batches built by
  the trainer's own pipeline (length-bucketed sampler, feature cache, CMVN, SpecAugment, the trainer's
  ``train_step``: forward, backward, clipping, optimizer), timed with the data loading included;
- the FLOP rate that implies, counted like the peer: ``torch.utils.flop_counter.FlopCounterMode`` over the
  forward (convolutions, linears, matmuls) plus an analytic count for the encoder LSTM (whose fused
  kernel the counter does not see) over the frames it actually runs (real frames: padding is skipped);
  a multiply-add is 2 FLOP; training = 3x forward. Ratio to the measured peak;
- decoding real-time factor (features + encoder + search, waveforms already in memory): greedy at batch
  1 and 16, beam 4 at batch 16; with the number of decoder steps, since an undertrained model stops late;
- feature extraction rate (batched log-mel);
- peak resident memory while training (sampled RSS and ``ru_maxrss``).

Timings on a shared machine are noisy: the 1-minute load average is recorded next to every figure.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

REFERENCE_CONFIG = Path(__file__).resolve().parent / "recipe_configs" / "an4_reference.yaml"


# ---- machine -----------------------------------------------------------------------------------
def load1() -> float:
    return os.getloadavg()[0]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    from .accel import kernel_status, native_bf16  # native_bf16: what precision "auto" and the int8 case go by

    return {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "mkldnn": torch.backends.mkldnn.is_available(),
            "native_bf16": native_bf16(), "bf16_lstm_kernel": kernel_status()}


def rss_mb() -> float:
    """Current resident set size (MiB) from /proc (0 where unavailable)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def max_rss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024


def _stats(xs: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs), "values": xs}


# ---- the machine's matmul peak -------------------------------------------------------------------
def _timings(fn: Callable[[], Any], repeats: int, warmups: int = 1) -> list[float]:
    """Seconds per call of ``fn`` over ``repeats`` timed calls, after ``warmups`` untimed ones."""
    for _ in range(warmups):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return ts


def _best_rate(fn: Callable[[], None], flops: float, repeats: int) -> dict[str, Any]:
    ts = _timings(fn, repeats, warmups=2)
    rates = [flops / t / 1e9 for t in ts]
    return {"best": max(rates), "median": statistics.median(rates), "min": min(rates)}


def measure_peak(repeats: int, quick: bool = False) -> dict[str, Any]:
    """fp32 GFLOP/s of square products: torch.mm (MKL sgemm) and a oneDNN linear (mkldnn tensors)."""
    out: dict[str, Any] = {"load1_before": load1(), "mm": {}, "onednn_linear": {}}
    sizes = (512, 1024) if quick else (1024, 2048)
    budget = 2e9 if quick else 2e10  # FLOPs per timed sample (~0.1 s at 200 GFLOP/s)
    for n in sizes:
        a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
        inner = max(1, int(budget / (2.0 * n**3)))

        def mm() -> None:
            for _ in range(inner):
                torch.mm(a, b, out=c)

        out["mm"][str(n)] = _best_rate(mm, 2.0 * n**3 * inner, repeats)
    try:
        from torch.utils import mkldnn as mkldnn_utils

        for n in sizes:
            with torch.no_grad():
                lin = mkldnn_utils.to_mkldnn(torch.nn.Linear(n, n, bias=False))
                x = torch.randn(n, n).to_mkldnn()
                inner = max(1, int(budget / (2.0 * n**3)))

                def onednn() -> None:
                    for _ in range(inner):
                        lin(x)

                out["onednn_linear"][str(n)] = _best_rate(onednn, 2.0 * n**3 * inner, repeats)
    except Exception as exc:  # pragma: no cover - builds without oneDNN
        out["onednn_error"] = repr(exc)
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():  # what bf16 autocast (amp: bf16) can reach
        out["bf16_mm"] = {}
        for n in sizes:
            a, b, c = (torch.randn(n, n, dtype=torch.bfloat16) for _ in range(3))
            inner = max(1, int(2 * budget / (2.0 * n**3)))

            def mm_bf16() -> None:
                for _ in range(inner):
                    torch.mm(a, b, out=c)

            out["bf16_mm"][str(n)] = _best_rate(mm_bf16, 2.0 * n**3 * inner, repeats)
        out["bf16_peak_gflops"] = max(v["best"] for v in out["bf16_mm"].values())
    cases = [v["best"] for group in ("mm", "onednn_linear") for v in out[group].values()]
    out["peak_gflops"] = max(cases)
    out["peak_gflops_median"] = max(v["median"] for group in ("mm", "onednn_linear") for v in out[group].values())
    out["load1_after"] = load1()
    return out


# ---- FLOP counting (the peer's convention) -------------------------------------------------------
def lstm_flops(rnn: torch.nn.Module, frames: float) -> float:
    """Matrix-product FLOPs of a (multi-layer, maybe bidirectional) LSTM/GRU/RNN forward over `frames`
    (batch x time) input frames: per layer and direction 2 * gates * H * (in + H) per frame."""
    gates = {"LSTM": 4, "GRU": 3}.get(type(rnn).__name__, 1)
    dirs = 2 if rnn.bidirectional else 1
    total, inp = 0.0, rnn.input_size
    for _ in range(rnn.num_layers):
        total += dirs * frames * 2 * gates * rnn.hidden_size * (inp + rnn.hidden_size)
        inp = rnn.hidden_size * dirs
    return total


@torch.no_grad()
def forward_flops(model, batch: dict) -> tuple[float, float]:
    """(FLOPs the torch counter sees, analytic encoder-RNN FLOPs) of one forward of a training batch
    (encoder + teacher-forced decoder + output layer; features/CMVN excluded, as for the peer)."""
    from torch.utils.flop_counter import FlopCounterMode

    s2s = model.seq2seq
    src = model.prepare_source(batch["src"], batch["src_lens"])
    with FlopCounterMode(display=False) as fc:
        enc = s2s.encode(src, batch["src_lens"])
        tgt_in, _ = s2s.decoder_io(batch["tgt"], batch["tgt_lens"])
        s2s.decoder(enc, tgt_in)
    return float(fc.get_total_flops()), lstm_flops(s2s.encoder.rnn, float(enc.lengths.sum()))


# ---- data -------------------------------------------------------------------------------------------
def data_root(data_dir: str | os.PathLike | None) -> Path:
    """`--data-dir`, else the project's local-data root (corpora.default_data_dir), as an absolute path."""
    from .corpora import default_data_dir

    return Path(data_dir) if data_dir else default_data_dir().absolute()


def prepare_manifests(corpus: str, root: Path, work: Path, quick: bool) -> tuple[Path, Path]:
    """(train, eval) manifests of real audio; --quick keeps a small length-spread subset."""
    from .corpora import prepare_corpus
    from .manifest import read_manifest, write_manifest

    paths = prepare_corpus(corpus, root, work / "manifests")
    train = paths["train"]
    ev = paths.get("dev") or paths.get("test") or train
    if quick:
        out = {}
        for name, src, n in (("train", train, 24), ("eval", ev, 6)):
            entries, _ = read_manifest(src, on_error="skip")
            entries = sorted(entries, key=lambda e: e.duration)
            step = max(1, len(entries) // n)
            out[name] = work / f"quick_{name}.jsonl"
            write_manifest(out[name], entries[::step][:n])
        return out["train"], out["eval"]
    return train, ev


# ---- training throughput -------------------------------------------------------------------------
def train_bench(train_manifest: Path, work: Path, epochs: int, warmup: int, quick: bool,
                overrides: list[str]) -> tuple[dict[str, Any], Any]:
    from torch.utils.data import DataLoader

    from .config import load_config
    from .train import epoch_batches, setup, train_step

    sets = [f"data.train={train_manifest}", "data.dev=", f"data.cache_dir={work / 'feats'}", "checkpoint_every=0",
            f"threads={torch.get_num_threads()}", "epochs=1000"]
    if quick:
        sets.append("data.max_frames=3000")
    cfg = load_config(REFERENCE_CONFIG, sets + list(overrides))
    t0 = time.perf_counter()
    tr = setup(cfg, work / "exp", quiet=True)  # tokenizer, feature cache (computed here once), global CMVN, model, optimizer
    setup_s = time.perf_counter() - t0
    per_epoch = len(tr.data.batches(0))
    tr.total_steps = per_epoch * cfg.epochs
    model = tr.model
    res: dict[str, Any] = {"config": str(REFERENCE_CONFIG.name), "overrides": sets[2:] + list(overrides),
                           "params": tr.num_params, "batches_per_epoch": per_epoch,
                           "max_frames": cfg.data.max_frames, "amp": cfg.amp, "setup_s": setup_s, "epochs": []}
    rss_peak = rss_mb()

    def run_epoch(epoch: int, limit: int | None = None) -> dict[str, Any]:
        nonlocal rss_peak
        batches = epoch_batches(tr, epoch)[:limit]
        loader = DataLoader(tr.data.train_set, batch_sampler=batches, num_workers=cfg.data.num_workers,
                            collate_fn=tr.data.collate)
        model.train()
        audio = step_s = 0.0
        sizes = []
        load_start = time.perf_counter()
        t_ep = time.perf_counter()
        for batch in loader:
            t1 = time.perf_counter()
            train_step(tr, batch)
            step_s += time.perf_counter() - t1
            audio += batch["duration"]
            sizes.append(list(batch["src"].shape[:2]))
            rss_peak = max(rss_peak, rss_mb())
        wall = time.perf_counter() - t_ep
        del load_start
        return {"epoch": epoch, "audio_s": audio, "wall_s": wall, "step_s": step_s, "batches": len(sizes),
                "audio_s_per_s": audio / wall, "audio_s_per_s_steps_only": audio / step_s, "load1": load1()}

    t0 = time.perf_counter()
    run_epoch(0, warmup)  # warm-up: allocator, oneDNN primitives, caches
    res["warmup_s"] = time.perf_counter() - t0
    flop_batches = []
    for e in range(1, epochs + 1):
        rec = run_epoch(e)
        res["epochs"].append(rec)
    # FLOPs of each timed epoch (forward, counted after timing, outside the clock)
    model.eval()
    for rec in res["epochs"]:
        counted = analytic = 0.0
        for idx in epoch_batches(tr, rec["epoch"]):
            batch = tr.data.collate([tr.data.train_set[i] for i in idx])
            c, a = forward_flops(model, batch)
            counted, analytic = counted + c, analytic + a
        rec["fwd_flop_counted"], rec["fwd_flop_encoder_rnn_analytic"] = counted, analytic
        rec["train_flop"] = 3 * (counted + analytic)
        rec["gflops"] = rec["train_flop"] / rec["wall_s"] / 1e9
        rec["gflops_steps_only"] = rec["train_flop"] / rec["step_s"] / 1e9
        flop_batches.append(rec["train_flop"])
    eps = res["epochs"]
    res["audio_s_per_s"] = _stats([r["audio_s_per_s"] for r in eps])
    res["audio_s_per_s_steps_only"] = _stats([r["audio_s_per_s_steps_only"] for r in eps])
    res["gflops"] = _stats([r["gflops"] for r in eps])
    res["train_gflop_per_audio_s"] = statistics.median(r["train_flop"] / r["audio_s"] / 1e9 for r in eps)
    res["peak_rss_mb_sampled"] = rss_peak
    res["ru_maxrss_mb_after_training"] = max_rss_mb()
    res["load1"] = _stats([r["load1"] for r in eps])
    return res, tr


# ---- decoding -----------------------------------------------------------------------------------------
def decode_bench(model, eval_manifest: Path, repeats: int, cases: list[tuple]) -> dict[str, Any]:
    """Decoding real-time factors on `eval_manifest` for each case (name, beam, batch size, precision[, dict of
    further DecodeOptions fields: the CTC, LM and length-bonus cases]).

    The timed passes run in `repeats` rounds, each round one pass of every case (after one untimed pass of
    each), so that every case's median spans the same minutes of a noisy machine instead of one case landing
    wholly in a slow spell (on the shared development VM the same code runs up to ~1.3x slower for tens of
    seconds to minutes at a time, whatever our process did before: bench/RESULTS.md at 577362c, seventh landing)."""
    from .audio import load_audio
    from .batching import decode_in_batches
    from .manifest import read_manifest

    entries, _ = read_manifest(eval_manifest, on_error="skip")
    waves = [load_audio(e.audio_filepath, model.features.sample_rate, offset=e.offset, duration=e.duration)
             for e in entries]
    audio = sum(len(w) for w in waves) / model.features.sample_rate
    ref_len = [len(model.tokenizer.encode(e.text)) + 1 for e in entries]  # + eos
    model.eval()
    out: dict[str, Any] = {"utterances": len(waves), "audio_s": audio, "mean_reference_tokens": statistics.mean(ref_len),
                           "rounds": repeats}
    def run(beam: int, bs: int, capped: bool, precision: str, extra: dict | None = None) -> list[int]:
        """What transcription does (sort by length, batch, log-mel, CMVN, search, detokenize); with
        ``capped``, each utterance stops at its own reference length + eos: the decoding cost of a model
        that stops where a trained one does (a step costs the same whatever the weights; greedy search
        drops finished rows from its batch, so where each row stops matters). -> tokens emitted."""
        emitted = []
        options = DecodeOptions(beam=beam, precision=precision, **(extra or {}))
        for _, res in decode_in_batches(model, waves, options, batch_size=bs, max_len=ref_len if capped else 200):
            [model.tokenizer.decode(t) for t in res.tokens]
            emitted += res.lengths.tolist()
        return emitted

    def timed(beam: int, bs: int, capped: bool, precision: str, extra: dict | None = None) -> tuple[float, list[int]]:
        t0 = time.perf_counter()
        emitted = run(beam, bs, capped, precision, extra)
        return time.perf_counter() - t0, emitted

    from .decoding import DecodeOptions

    cases = [(c + (None,))[:5] for c in cases]
    for _, beam, bs, precision, extra in cases:  # warm-up
        run(beam, bs, True, precision, extra)
    capped_s: dict[str, list[float]] = {c[0]: [] for c in cases}
    for _ in range(repeats):
        for name, beam, bs, precision, extra in cases:
            capped_s[name].append(timed(beam, bs, True, precision, extra)[0])
    for name, beam, bs, precision, extra in cases:
        # One timed pass as emitted: an undertrained model runs every utterance to the length cap, which says
        # little and takes long; the reference-length figure is the repeated one.
        t, emitted = timed(beam, bs, False, precision, extra)
        out[name] = {"beam": beam, "batch_size": bs, "precision": precision, **(extra or {}), "rtf": _stats([t / audio]),
                     "mean_hyp_tokens": statistics.mean(emitted),
                     "rtf_reference_length": _stats([t / audio for t in capped_s[name]]), "load1": load1()}
    return out


def joint_cases(model) -> list[tuple]:
    """Beam 10 with the CTC prefix score and an LSTM LM at batch 16 (issue: RTF <= 0.02), and beam 10 alone for
    the ratio, where the decoding model has a CTC head. Without an LM of its own, the model gets an untrained one
    of `asr-s2s train-lm`'s default size: a step costs the same whatever the weights."""
    if getattr(model.seq2seq, "ctc", None) is None:
        return []
    if getattr(model, "_lm_payload", None) is None:
        from dataclasses import asdict

        from .lm import LM_FORMAT, LMConfig, LSTMLM

        lm = LSTMLM(LMConfig(vocab_size=model.tokenizer.vocab_size))
        model.attach_lm({"format": LM_FORMAT, "config": asdict(lm.cfg), "tokenizer": model.tokenizer.state_dict(),
                         "model": lm.state_dict()})
    joint = {"ctc_weight": 0.5, "lm_weight": 0.3, "length_norm": "none", "length_bonus": 0.5}
    return [("beam10_bs16", 10, 16, "fp32"), ("beam10_ctc_lm_bs16", 10, 16, "fp32", joint),
            ("beam10_ctc_bs16", 10, 16, "fp32", {"ctc_weight": 0.5, "length_norm": "none"}),
            ("ctc_greedy_bs16", 1, 16, "fp32", {"ctc_weight": 1.0})]


# ---- features ---------------------------------------------------------------------------------------
def feature_bench(eval_manifest: Path, repeats: int) -> dict[str, Any]:
    from .audio import load_audio
    from .batching import length_batches
    from .features import FeatureConfig, LogMel
    from .manifest import read_manifest

    cfg = FeatureConfig()
    entries, _ = read_manifest(eval_manifest, on_error="skip")
    waves = [load_audio(e.audio_filepath, cfg.sample_rate, offset=e.offset, duration=e.duration) for e in entries]
    audio = sum(len(w) for w in waves) / cfg.sample_rate
    lm = LogMel(cfg)
    batches = []
    for idx in length_batches([len(w) for w in waves], 16):
        ws = [waves[j] for j in idx]
        batches.append((torch.nn.utils.rnn.pad_sequence(ws, batch_first=True), torch.tensor([len(w) for w in ws])))

    def run() -> None:
        with torch.inference_mode():
            for x, lens in batches:
                lm(x, lens)

    ts = _timings(run, repeats)
    return {"audio_s": audio, "batch_size": 16, "audio_s_per_s": _stats([audio / t for t in ts]), "load1": load1()}


# ---- the whole run ----------------------------------------------------------------------------------
def run_bench(quick: bool = False, repeats: int | None = None, data_dir: str | None = None, corpus: str = "an4",
              threads: int | None = 2, model_path: str | None = None, overrides: list[str] = (),
              work_dir: str | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    if threads:
        torch.set_num_threads(threads)
    repeats = repeats or (2 if quick else 3)
    tmp = None
    if work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="asr-s2s-bench-")
        work = Path(tmp.name)
    else:
        work = Path(work_dir)
        work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    try:
        res: dict[str, Any] = {"command": " ".join(sys.argv), "quick": quick, "repeats": repeats, "corpus": corpus,
                               "machine": machine_info(), "load1_start": load1()}
        log(f"machine: {res['machine']['cpu']}, {res['machine']['torch_threads']} threads, torch {torch.__version__}, "
            f"load {res['load1_start']:.2f}")
        train_m, eval_m = prepare_manifests(corpus, data_root(data_dir), work, quick)  # first: a missing corpus fails fast
        log("measuring the fp32 matmul peak ...")
        res["peak"] = measure_peak(max(3, repeats * (1 if quick else 3)), quick)
        log("feature extraction ...")
        res["features"] = feature_bench(eval_m, repeats)
        log(f"training throughput ({repeats} timed epochs) ...")
        res["train"], tr = train_bench(train_m, work, epochs=repeats, warmup=1 if quick else 3, quick=quick,
                                       overrides=list(overrides))
        res["params"] = res["train"]["params"]
        res["train"]["fraction_of_peak"] = res["train"]["gflops"]["median"] / res["peak"]["peak_gflops"]
        if "bf16_peak_gflops" in res["peak"]:
            res["train"]["fraction_of_bf16_peak"] = res["train"]["gflops"]["median"] / res["peak"]["bf16_peak_gflops"]
        model = tr.model
        if model_path:
            from .model import load_model

            model = load_model(model_path)
            res["decode_model"] = str(model_path)
        else:
            res["decode_model"] = "the weights after the timed training epochs (undertrained)"
        log("decoding ...")
        from .accel import native_bf16

        cases = [("greedy_bs1", 1, 1, "fp32"), ("greedy_bs16", 1, 16, "fp32"), ("beam4_bs16", 4, 16, "fp32"),
                 ("greedy_bs16_bf16", 1, 16, "bf16")]
        if not quick:
            cases += [("beam4_bs1", 4, 1, "fp32"), ("greedy_bs1_bf16", 1, 1, "bf16"), ("beam4_bs16_bf16", 4, 16, "bf16"),
                      ("beam4_bs1_bf16", 4, 1, "bf16")]
            if native_bf16():  # int8 is bf16 plus int8 weights: elsewhere it would time "auto" under its name
                cases.append(("greedy_bs1_int8", 1, 1, "int8"))
        cases += joint_cases(model)
        with torch.no_grad():
            res["decode"] = decode_bench(model, eval_m, repeats, cases)
        res["ru_maxrss_mb_end"] = max_rss_mb()
        res["load1_end"] = load1()
        res["wall_s"] = time.perf_counter() - t_start
        return res
    finally:
        if tmp is not None:
            tmp.cleanup()


def format_table(res: dict[str, Any]) -> str:
    def ms(s: dict) -> str:
        return f"{s['median']:.4g} [{s['min']:.4g}..{s['max']:.4g}]"

    p, t, d, f = res["peak"], res["train"], res["decode"], res["features"]
    rows = [
        ("machine", f"{res['machine']['cpu']}, {res['machine']['torch_threads']} threads, torch {res['machine']['torch']}"),
        ("reference model parameters", f"{res['params']:,}"),
        ("fp32 peak, torch.mm (MKL)", " / ".join(f"{n}: {v['best']:.0f}" for n, v in p["mm"].items()) + " GFLOP/s (best)"),
        ("fp32 peak, oneDNN linear", " / ".join(f"{n}: {v['best']:.0f}" for n, v in p["onednn_linear"].items()) + " GFLOP/s (best)"),
        ("bf16 peak, torch.mm (oneDNN)", " / ".join(f"{n}: {v['best']:.0f}" for n, v in p.get("bf16_mm", {}).items())
         + " GFLOP/s (best)" if "bf16_mm" in p else "not measured (no native bf16)"),
        ("training, audio-s per s", ms(t["audio_s_per_s"]) + f"  (steps only {t['audio_s_per_s_steps_only']['median']:.4g})"),
        ("training, GFLOP/s (3x fwd)", ms(t["gflops"]) + f"  = {100 * t['fraction_of_peak']:.1f}% of {p['peak_gflops']:.0f}"
         + (f" (fp32 peak), {100 * t['fraction_of_bf16_peak']:.1f}% of {p['bf16_peak_gflops']:.0f} (bf16 peak)"
            if "fraction_of_bf16_peak" in t else "")),
        ("training precision", "fp32" if t.get("amp", "none") == "none" else f"{t['amp']} autocast (amp: {t['amp']})"),
        ("training FLOP per audio-s", f"{t['train_gflop_per_audio_s']:.3f} GFLOP"),
        ("peak RSS while training", f"{t['peak_rss_mb_sampled']:.0f} MiB sampled, ru_maxrss {t['ru_maxrss_mb_after_training']:.0f} MiB"),
        ("log-mel extraction, audio-s per s", ms(f["audio_s_per_s"])),
    ]
    for name, case in d.items():
        if isinstance(case, dict):  # the decoding cases, in the order they ran
            rows.append((f"decode RTF {name}, as emitted", ms(case["rtf"]) + f"  ({case['mean_hyp_tokens']:.1f} "
                                                                            "tokens/utt emitted, 1 pass)"))
            rows.append((f"decode RTF {name}, reference length", ms(case["rtf_reference_length"])
                         + f"  ({d['mean_reference_tokens']:.1f} tokens/utt incl. eos)"))
    rows.append(("1-min load average", f"start {res['load1_start']:.2f}, training {ms(t['load1'])}, end {res['load1_end']:.2f}"))
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


def main(args) -> int:
    res = run_bench(quick=args.quick, repeats=args.repeats, data_dir=args.data_dir, corpus=args.corpus,
                    threads=args.threads, model_path=args.model, overrides=args.set, work_dir=args.work_dir,
                    log=lambda m: print(m, file=sys.stderr, flush=True))
    print(format_table(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


__all__ = ["run_bench", "format_table", "measure_peak", "forward_flops", "lstm_flops", "machine_info"]
