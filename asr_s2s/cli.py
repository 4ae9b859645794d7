"""The ``asr-s2s`` command: one verb per job. Each verb imports its module lazily so ``--help`` is instant."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _cmd_features(args: argparse.Namespace) -> int:
    """Print duration, rate and log-mel shape/statistics of audio files (a quick check of the frontend)."""
    import torch

    from .audio import AudioError, audio_info, load_audio
    from .features import FeatureConfig, LogMel

    lm = LogMel(FeatureConfig(n_mels=args.n_mels))
    failed = 0
    for path in args.paths:
        try:
            rate, frames, channels = audio_info(path)
            wave = load_audio(path, lm.cfg.sample_rate)
        except AudioError as err:
            print(f"error: {err}", file=sys.stderr)
            failed += 1
            continue
        with torch.inference_mode():
            feats, _ = lm(wave[None])
        print(json.dumps({"path": str(path), "sample_rate": rate, "channels": channels, "duration": round(frames / rate, 3),
                          "frames": feats.shape[1], "n_mels": feats.shape[2], "mean": round(float(feats.mean()), 3)}))
    return 1 if failed else 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from .corpora import prepare_corpus
    from .recipes import default_data_dir

    opts = dict(kv.split("=", 1) for kv in args.option)
    paths = prepare_corpus(args.corpus, Path(args.data_dir or default_data_dir()), args.out, **opts)
    for split, path in paths.items():
        print(f"{split}\t{path}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .train import train

    try:
        cfg = load_config(args.config, args.set)
        path = train(cfg, args.out, resume=args.resume)
    except ValueError as err:  # a bad config value (TrainingError and the other user errors: see main)
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"model: {path}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .recipes import evaluate_split

    text = args.manifest.suffix == ".tsv"
    if text:
        res = evaluate_split(args.model, args.manifest, args.report, text=True, beam=args.beam or 1)
    else:
        from .model import load_model

        model = load_model(args.model)
        res = evaluate_split(model, args.manifest, args.report, options=_decode_options(args, model))
    if args.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k:>16s}: {v:.4f}" if isinstance(v, float) else f"{k:>16s}: {v}")
    return 0


def _cmd_recipe(args: argparse.Namespace) -> int:
    from .recipes import run_recipe

    run_recipe(args.name, args.data_dir, args.out, quick=args.quick, overrides=args.set, beam=args.beam,
               seed_experiment=args.seed_experiment, lm_text=args.lm_text)
    return 0


def _cmd_translate(args: argparse.Namespace) -> int:
    from .model import load_model

    model = load_model(args.model)
    sentences = args.sentences or [line.rstrip("\n") for line in sys.stdin]
    for out in model.translate(sentences, beam=args.beam):
        print(out, flush=True)
    return 0


def _cmd_transcribe(args: argparse.Namespace) -> int:
    """Transcribe files, folders and globs; one bad file is reported and skipped (exit code 1)."""
    from .transcribe import find_audio, iter_transcripts, render_transcript, write_transcript

    found, missing = find_audio(args.paths)
    for msg in missing:
        print(f"error: {msg}", file=sys.stderr)
    if args.output_dir is None and args.format in ("srt", "vtt", "tsv") and len(found) > 1:
        print(f"error: --format {args.format} for several inputs needs --output-dir", file=sys.stderr)
        return 2
    if not found:
        return 1
    from .vad import INSTALL_HINT, silero_available

    if args.vad == "silero" and not silero_available():
        print(f"error: --vad silero needs the silero-vad package, which is not installed: {INSTALL_HINT}", file=sys.stderr)
        return 2
    from .model import default_model_path, load_model

    if args.model is None and not default_model_path().exists():
        print(f"error: no bundled default model ({default_model_path()} is missing); pass --model PATH "
              "(e.g. exp/fsdd/model.pt from `asr-s2s recipe fsdd`)", file=sys.stderr)
        return 2
    try:
        model = load_model(args.model, device=args.device)
    except Exception as err:  # CheckpointError, FileNotFoundError, a CUDA error ...
        print(f"error: cannot load model {args.model or default_model_path()}: {err}", file=sys.stderr)
        return 2
    from tqdm import tqdm

    names: dict[str, int] = {}
    failed = len(missing)
    bar = tqdm(total=len(found), unit="file", file=sys.stderr, disable=True if len(found) < 2 else None)
    try:
        options = _decode_options(args, model, max_len_ratio=1.5)
        model.language_model(options), model.vocabulary_constraint(options)  # refuse a bad file before any work
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for idx, res in iter_transcripts(model, [f.path for f in found], batch_size=args.batch_size,
                                     long_form=not args.no_long_form, errors="skip", options=options, vad=args.vad):
        bar.update(1)
        item = found[idx]
        if isinstance(res, Exception):
            failed += 1
            bar.write(f"error: {res}", file=sys.stderr)
            continue
        res.path = str(item.path)
        if args.output_dir is not None:
            name = item.name
            names[name] = names.get(name, 0) + 1
            if names[name] > 1:
                name = f"{name}-{names[name]}"
            write_transcript(res, args.format, args.output_dir / f"{name}.{args.format}")
        elif args.format == "txt" and len(found) > 1:
            print(f"{item.path}\t{res.text}", flush=True)
        else:
            sys.stdout.write(render_transcript(res, args.format))
            sys.stdout.flush()
    bar.close()
    if failed:
        print(f"{failed} of {len(found) + len(missing)} inputs failed", file=sys.stderr)
    return 1 if failed else 0


def _cmd_export(args: argparse.Namespace) -> int:
    """Export a speech model to TorchScript or ONNX (two graphs + model.json; see asr_s2s/export.py)."""
    from .export import export_model

    try:
        if args.format == "fp16":  # the same model file with half-precision weights (how the default model ships)
            from .model import load_model

            model = load_model(args.model)
            model.save(args.out, meta={**model.meta, "weights": "fp16"}, half=True)
            out = args.out
        else:
            out = export_model(args.model, args.format, args.out, opset=args.opset)
    except Exception as err:  # unreadable model, text model, missing onnx ...
        print(f"error: cannot export {args.model}: {err}", file=sys.stderr)
        return 2
    print(f"exported: {out}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import main

    return main(args)


def _cmd_train_lm(args: argparse.Namespace) -> int:
    """Train an LSTM language model over a recognizer's tokenizer (for --lm in evaluate / transcribe)."""
    from .checkpoint import load_checkpoint
    from .lm import LMConfig, LMTrainConfig, read_text_lines, train_lm
    from .text import tokenizer_from_state_dict

    payload = load_checkpoint(args.tokenizer)
    if "tokenizer" not in payload:
        print(f"error: {args.tokenizer}: not a model file with a tokenizer", file=sys.stderr)
        return 2
    tokenizer = tokenizer_from_state_dict(payload["tokenizer"])
    try:
        texts = read_text_lines(args.text)
        dev = read_text_lines(args.dev) if args.dev else None
        cfg = LMConfig(embed_dim=args.embed_dim, hidden=args.hidden, layers=args.layers, dropout=args.dropout)
        tc = LMTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                           threads=args.threads, eval_every=min(args.eval_every, args.steps))
        path = train_lm(texts, tokenizer, args.out, cfg, tc, dev_texts=dev, resume=args.resume)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"lm: {path}")
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    """Tune the decoding on a dev manifest; --out writes the model with it as its recommended decoding."""
    from .checkpoint import load_checkpoint
    from .manifest import read_manifest
    from .model import load_model
    from .tune import tune_decoding

    model = load_model(args.model)
    if not model.is_audio:
        print(f"error: {args.model}: tune is for speech models", file=sys.stderr)
        return 2
    try:
        lm_path = str(args.lm) if args.lm else None
        if lm_path:
            from .decoding import DecodeOptions

            model.language_model(DecodeOptions(lm=lm_path, lm_weight=1.0))  # refuse a bad LM before any work
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    entries, _ = read_manifest(args.manifest, on_error="skip")
    entries = [e.to_dict() if hasattr(e, "to_dict") else e for e in entries]
    if not entries:
        print(f"error: {args.manifest}: no usable utterance to tune on", file=sys.stderr)
        return 2
    res = tune_decoding(model, entries, lm=lm_path, has_lm=getattr(model, "_lm_payload", None) is not None,
                        log=lambda line: print(line, file=sys.stderr, flush=True))
    print(res.table())
    print(f"best: {json.dumps({k: v for k, v in res.best.to_dict().items() if k not in ('vocabulary', 'precision')})}"
          f" WER {100 * res.wer:.2f} CER {100 * res.cer:.2f}")
    if args.out:
        best = res.best
        if best.lm_weight > 0 and best.lm is not None:  # carry the LM inside the model file: self-contained
            model.attach_lm(load_checkpoint(best.lm))
            best = type(best).from_dict({**best.to_dict(), "lm": None})
        model.set_recommended_decoding(best)
        model.save(args.out, meta=model.meta, half=model.meta.get("weights") == "fp16")
        print(f"model with its recommended decoding: {args.out}")
    return 0


def _decode_options(args: argparse.Namespace, model, **defaults):
    """The DecodeOptions a command's flags ask for: the model's recommended decoding (or plain greedy with
    --decoding plain), then every flag that was given."""
    from .decoding import DecodeOptions, read_vocabulary

    base = model.recommended_decoding if args.decoding == "recommended" else DecodeOptions()
    vocabulary = read_vocabulary(args.vocabulary) if args.vocabulary else None
    if vocabulary is not None:  # every entry must be spellable by this model: say which line is not
        from .decoding import vocabulary_constraint

        vocabulary_constraint(model.tokenizer, vocabulary, args.vocabulary_mode or base.vocabulary_mode,
                              source=str(args.vocabulary))
    return base.replace(**defaults).replace(
        beam=args.beam, ctc_weight=args.ctc_weight, lm=str(args.lm) if args.lm else None, lm_weight=args.lm_weight,
        length_bonus=args.length_bonus, length_norm=args.length_norm, vocabulary=vocabulary,
        vocabulary_mode=args.vocabulary_mode, precision=args.precision)


def _add_decoding_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("decoding (defaults: the model's recommended decoding; see README)")
    g.add_argument("--decoding", choices=("recommended", "plain"), default="recommended",
                   help="start from the decoding recorded in the model file (default), or from plain greedy "
                        "attention decoding; the flags below apply on top")
    g.add_argument("--beam", type=_positive_int, help="hypotheses kept per utterance (1: greedy)")
    g.add_argument("--ctc-weight", type=_unit_interval, metavar="W",
                   help="weight of the CTC head's prefix score (0: attention only, 1: CTC only)")
    g.add_argument("--lm", type=Path, metavar="FILE", help="language model file from `asr-s2s train-lm`")
    g.add_argument("--lm-weight", type=_non_negative, metavar="W", help="weight of the language model")
    g.add_argument("--length-bonus", type=float, metavar="G", help="added to a hypothesis's score per token")
    g.add_argument("--length-norm", choices=("none", "length", "gnmt"),
                   help="normalisation of finished hypotheses' scores")
    g.add_argument("--vocabulary", type=Path, metavar="FILE",
                   help="only output these phrases (one per line; with --vocabulary-mode words, any sequence of "
                        "these words)")
    g.add_argument("--vocabulary-mode", choices=("phrases", "words"))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _unit_interval(text: str) -> float:
    value = _float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def _non_negative(text: str) -> float:
    value = _float(text)
    if value < 0.0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="asr-s2s", description="Sequence-to-sequence speech recognition and translation.")
    ap.add_argument("--version", action="version", version=f"%(prog)s {__import__('asr_s2s').__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("features", help="inspect audio files: duration, rate, log-mel shape")
    p.add_argument("paths", nargs="+", type=Path)
    p.add_argument("--n-mels", type=int, default=80)
    p.set_defaults(func=_cmd_features)

    p = sub.add_parser("prepare", help="find or download a corpus and write its manifests")
    p.add_argument("corpus")
    p.add_argument("--data-dir", type=Path, help="local-data root (default: $ASR_S2S_DATA, else ./data)")
    p.add_argument("--out", type=Path, required=True, help="folder for {train,dev,test} manifests")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="corpus option, e.g. split=speaker")
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("train", help="train a model from a YAML config")
    p.add_argument("config", type=Path)
    p.add_argument("--out", type=Path, required=True, help="experiment directory")
    p.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override config values, e.g. --set optim.lr=3e-4 epochs=20")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="WER/CER of a model on a manifest (BLEU/chrF on a .tsv for text models)")
    p.add_argument("model", type=Path)
    p.add_argument("manifest", type=Path)
    p.add_argument("--report", type=Path, help="write per-utterance TSV, alignments and attention plots here")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "int8"), default="fp32",
                   help="speech models: fp32 (default, the same scores on every machine), bf16, int8, or auto "
                        "(what `transcribe` uses by default: bf16 where the CPU has native bf16)")
    _add_decoding_flags(p)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("recipe", help="prepare, train and evaluate on a corpus in one command")
    p.add_argument("name")
    p.add_argument("--data-dir", type=Path, help="local-data root (default: $ASR_S2S_DATA, else ./data)")
    p.add_argument("--out", type=Path, help="experiment directory (default: exp/NAME)")
    p.add_argument("--quick", action="store_true", help="a minute-long smoke run of the same stages")
    p.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE", help="override config values")
    p.add_argument("--beam", type=_positive_int,
                   help="evaluate with this beam (default: the tuned decoding for models with a CTC head, else 1)")
    p.add_argument("--lm-text", nargs="+", type=Path, default=[], metavar="FILE",
                   help="more text for the recipe's language model (one sentence per line), beside the transcripts")
    p.add_argument("--seed-experiment", action="store_true",
                   help="also train the pure context-vector model (attention: none) and plot both by input length")
    p.set_defaults(func=_cmd_recipe)

    p = sub.add_parser("translate", help="translate sentences (arguments, or one per line on stdin)")
    p.add_argument("model", type=Path)
    p.add_argument("sentences", nargs="*")
    p.add_argument("--beam", type=int, default=1)
    p.set_defaults(func=_cmd_translate)

    p = sub.add_parser("transcribe", help="transcribe audio files, folders (recursive) or globs")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--model", type=Path, help="model file (default: the bundled asr_s2s/assets/default.pt)")
    p.add_argument("--format", choices=("txt", "json", "tsv", "srt", "vtt"), default="txt",
                   help="txt (stdout: PATH<TAB>TEXT lines for several inputs), json (stdout: one object per line), "
                        "tsv, srt, vtt")
    p.add_argument("--output-dir", type=Path, help="write <name>.<format> files here instead of stdout")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--batch-size", type=_positive_int, default=16)
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "int8"), default="auto",
                   help="bf16: run the encoder and the decoder's largest product in bfloat16; int8: as bf16, with "
                        "the decoder's large products on int8 weights; auto (default): bf16 on CPUs with native "
                        "bf16 (AVX512-BF16 or AMX), fp32 elsewhere")
    p.add_argument("--no-long-form", action="store_true", help="never split long recordings at silences")
    p.add_argument("--vad", choices=("auto", "silero", "energy"), default="auto",
                   help="how long recordings are split: silero (a trained detector, from the silero-vad package), "
                        "energy (an adaptive energy threshold), auto (default: silero when installed, else energy)")
    _add_decoding_flags(p)
    p.set_defaults(func=_cmd_transcribe)

    p = sub.add_parser("tune", help="tune decoding (CTC weight, LM weight, length bonus, beam) on a dev manifest")
    p.add_argument("model", type=Path)
    p.add_argument("manifest", type=Path, help="a dev manifest (never the test split)")
    p.add_argument("--lm", type=Path, metavar="FILE", help="also tune the weight of this language model")
    p.add_argument("--out", type=Path, help="write the model here with the best setting as its recommended decoding "
                                            "(and the LM inside it when the LM helps)")
    p.set_defaults(func=_cmd_tune)

    p = sub.add_parser("train-lm", help="train an LSTM language model over a recognizer's tokenizer (for --lm)")
    p.add_argument("text", nargs="+", type=Path, help="text files (one sentence per line) or JSON-lines manifests")
    p.add_argument("--tokenizer", type=Path, required=True, metavar="MODEL",
                   help="the recognizer's model file, whose tokenizer the LM uses")
    p.add_argument("--out", type=Path, required=True, help="folder for lm.pt (and its resumable state)")
    p.add_argument("--dev", nargs="+", type=Path, help="held-out text for perplexity (default: 5%% of the text)")
    p.add_argument("--steps", type=_positive_int, default=3000, help="updates (default 3000)")
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.add_argument("--lr", type=_non_negative, default=2e-3)
    p.add_argument("--embed-dim", type=_positive_int, default=128)
    p.add_argument("--hidden", type=_positive_int, default=256)
    p.add_argument("--layers", type=_positive_int, default=2)
    p.add_argument("--dropout", type=_unit_interval, default=0.2)
    p.add_argument("--eval-every", type=_positive_int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=_positive_int, default=1)
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.set_defaults(func=_cmd_train_lm)

    p = sub.add_parser("export", help="export a speech model to TorchScript or ONNX (+ model.json) for deployment")
    p.add_argument("model", type=Path)
    p.add_argument("--format", choices=("torchscript", "onnx", "fp16"), default="onnx",
                   help="fp16: the same model file with half-precision weights (half the size)")
    p.add_argument("--out", type=Path, required=True, help="output folder (encoder, decoder_step, model.json); a file for fp16")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset")
    p.set_defaults(func=_cmd_export)
    p = sub.add_parser("bench", help="training throughput, FLOP rate vs the measured matmul peak, decoding RTF, memory")
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke run on a small subset")
    p.add_argument("--json", type=Path, help="write every measurement here")
    p.add_argument("--repeats", type=int, help="timed epochs / decoding passes (default 3; 2 with --quick)")
    p.add_argument("--corpus", default="an4", choices=["an4", "fsdd"])
    p.add_argument("--data-dir", help="local-data root (default: $ASR_S2S_DATA, else ./data)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--model", help="decode with this model file instead of the benchmark's own weights")
    p.add_argument("--work-dir", help="keep manifests, feature cache and run files here (default: a temp dir)")
    p.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE", help="override the reference config")
    p.set_defaults(func=_cmd_bench)
    return ap


def _user_errors() -> tuple[type[BaseException], ...]:
    """The errors that describe bad input or a missing resource (a file, a corpus, a download) in their message:
    the command prints that message, not a traceback. Anything else is a bug and keeps its traceback."""
    from .audio import AudioError
    from .checkpoint import CheckpointError
    from .corpora.download import DownloadError, UnsafeArchiveError
    from .manifest import ManifestError
    from .train import TrainingError

    return AudioError, CheckpointError, DownloadError, UnsafeArchiveError, ManifestError, TrainingError, FileNotFoundError


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if not getattr(args, "func", None):
        ap.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except _user_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
