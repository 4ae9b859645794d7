"""The ``asr-s2s`` command: one verb per job. Each verb imports its module lazily so ``--help`` is instant."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .usage import (UsageError, device, finite_float, folder, input_file, key_value, model_file, non_negative_float,
                    non_negative_int, one_line, output_dir, output_file, output_path, positive_float, positive_int,
                    split_key_values, text_file, unit_interval)


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
    from .corpora import CORPORA, corpus_options, default_data_dir, prepare_corpus

    if args.corpus not in CORPORA:
        raise UsageError(f"unknown corpus {args.corpus!r}; known: {', '.join(CORPORA)}")
    opts = corpus_options(args.corpus, split_key_values(args.option))  # UsageError for unknown keys, wrong types
    try:
        paths = prepare_corpus(args.corpus, Path(args.data_dir or default_data_dir()), args.out, **opts)
    except ValueError as err:  # the corpus refusing an option's value (e.g. split=bogus, an unknown speaker)
        if isinstance(err, _user_errors()):
            raise
        msg = str(err)
        raise UsageError(msg if msg.startswith(f"{args.corpus}:") else f"prepare {args.corpus}: {msg}") from None
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


def _skips_refused(results: list[dict], where: list[str], args: argparse.Namespace) -> bool:
    """Say on stderr when more than --max-skip-share of a file's lines were skipped; True when that fails the
    command (no --allow-skips). The scores are printed either way: they are what was measured."""
    from .evaluate import skip_problem

    refused = False
    for res, name in zip(results, where):
        problem = skip_problem(res, args.max_skip_share)
        if problem:
            print(f"{'warning' if args.allow_skips else 'error'}: {name}: {problem}", file=sys.stderr)
            refused = refused or not args.allow_skips
    return refused


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import format_result
    from .recipes import evaluate_split

    from .model import load_model

    text = args.manifest.suffix == ".tsv"
    model = load_model(args.model)
    # A model of the wrong kind for the file: no options, evaluate_split says what is wrong.
    options = _decode_options(args, model, text=not model.is_audio) if text != model.is_audio else None
    res = evaluate_split(args.model, args.manifest, args.report, text=text, options=options, model=model)
    print(json.dumps(res) if args.json else "\n".join(format_result(res)))
    return 1 if _skips_refused([res], [str(args.manifest)], args) else 0


def _cmd_recipe(args: argparse.Namespace) -> int:
    from .recipes import run_recipe

    results = run_recipe(args.name, args.data_dir, args.out, quick=args.quick, overrides=args.set, beam=args.beam,
                         seed_experiment=args.seed_experiment, lm_text=args.lm_text, train_repeat=args.train_repeat)
    return 1 if _skips_refused(results, [f"{args.name} {x['split']}" for x in results], args) else 0


def _refuse_wrong_kind(model, path: object, want_audio: bool) -> None:
    if model.is_audio != want_audio:
        kind, verb = ("speech", "transcribe") if model.is_audio else ("text (translation)", "translate")
        raise UsageError(f"{path} is a {kind} model: use `asr-s2s {verb}` for it")


def _cmd_translate(args: argparse.Namespace) -> int:
    from .model import load_model

    model = load_model(args.model)
    _refuse_wrong_kind(model, args.model, want_audio=False)
    options = _decode_options(args, model, text=True)
    sentences = args.sentences or [line.rstrip("\n") for line in sys.stdin]
    for out in model.translate(sentences, options=options):
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
    if not found:  # nothing to do at all: a usage error, not a per-file failure
        return 2
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
        print(f"error: cannot load model {args.model or default_model_path()}: {one_line(err)}", file=sys.stderr)
        return 2
    _refuse_wrong_kind(model, args.model or default_model_path(), want_audio=True)
    from tqdm import tqdm

    names: dict[str, int] = {}
    failed = len(missing)
    bar = tqdm(total=len(found), unit="file", file=sys.stderr, disable=True if len(found) < 2 else None)
    options = _decode_options(args, model, max_len_ratio=1.5)
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

    check = output_file if args.format == "fp16" else output_dir
    try:
        check(str(args.out))
    except argparse.ArgumentTypeError as err:
        raise UsageError(f"argument --out: {err}") from None
    try:
        if args.format == "fp16":  # the same model file with half-precision weights (how the default model ships)
            from .model import load_model

            model = load_model(args.model)
            model.save(args.out, meta={**model.meta, "weights": "fp16"}, half=True)
            out = args.out
        else:
            out = export_model(args.model, args.format, args.out, opset=args.opset)
    except Exception as err:  # unreadable model, text model, missing onnx ...
        print(f"error: cannot export {args.model}: {one_line(err)}", file=sys.stderr)
        return 2
    print(f"exported: {out}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import REFERENCE_CONFIG, main
    from .config import load_config

    try:  # refused now, not after minutes of benchmarking
        load_config(REFERENCE_CONFIG, args.set)
    except ValueError as err:
        raise UsageError(f"--set: {err}") from None
    if args.model:
        from .model import load_model

        _refuse_wrong_kind(load_model(args.model), args.model, want_audio=True)
    return main(args)


def _cmd_train_lm(args: argparse.Namespace) -> int:
    """Train an LSTM language model over a recognizer's tokenizer (for --lm in evaluate / transcribe)."""
    from .checkpoint import load_checkpoint
    from .lm import LMConfig, LMTrainConfig, read_text_lines, train_lm
    from .text import tokenizer_from_state_dict

    payload = load_checkpoint(args.tokenizer)
    if "tokenizer" not in payload or payload.get("format") != "asr-s2s/1":
        raise UsageError(f"{args.tokenizer}: not a model file with a tokenizer (give the recognizer's model.pt)")
    tokenizer = tokenizer_from_state_dict(payload["tokenizer"])
    try:
        texts = read_text_lines(args.text)
        dev = read_text_lines(args.dev) if args.dev else None
        cfg = LMConfig(embed_dim=args.embed_dim, hidden=args.hidden, layers=args.layers, dropout=args.dropout)
        tc = LMTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                           threads=args.threads, eval_every=min(args.eval_every, args.steps))
        path = train_lm(texts, tokenizer, args.out, cfg, tc, dev_texts=dev, resume=args.resume)
    except ValueError as err:
        raise UsageError(str(err)) from None
    print(f"lm: {path}")
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    """Tune the decoding on a dev manifest; --out writes the model with it as its recommended decoding."""
    from .checkpoint import load_checkpoint
    from .manifest import read_manifest
    from .model import load_model
    from .tune import tune_decoding

    model = load_model(args.model)
    _refuse_wrong_kind(model, args.model, want_audio=True)
    lm_path = str(args.lm) if args.lm else None
    if lm_path:
        from .decoding import DecodeOptions

        try:
            model.language_model(DecodeOptions(lm=lm_path, lm_weight=1.0))  # refuse a bad LM before any work
        except ValueError as err:
            raise UsageError(str(err)) from None
    if getattr(model.seq2seq, "ctc", None) is None and not lm_path:
        print(f"note: {args.model} has no CTC head and no LM is given: only the beam and length options are tuned",
              file=sys.stderr)
    entries, report = read_manifest(args.manifest, on_error="skip")
    entries = [e.to_dict() if hasattr(e, "to_dict") else e for e in entries]
    if not entries:
        from .evaluate import nothing_to_score

        raise nothing_to_score(report)
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


def _decode_options(args: argparse.Namespace, model, text: bool = False, **defaults):
    """The DecodeOptions a command's flags ask for: the model's recommended decoding (plain greedy with
    --decoding plain, or when a flag describes the search: see decoding.choose_options), then every flag that was
    given. The LM and vocabulary files are read here, so that a bad one is a usage error before any work.

    ``text``: a translation model, which decodes in fp32 with the attention decoder alone: --precision is not
    applied (the accelerated bf16/int8 paths are measured on speech only) and the speech-only flags (CTC weight,
    LM, vocabulary), where the command has them, are refused by name."""
    from .decoding import DecodeOptions, choose_options, read_vocabulary, vocabulary_constraint

    flag = lambda name: getattr(args, name, None)  # noqa: E731 - `translate` has only the search flags
    if text:
        given = [f"--{n.replace('_', '-')}" for n in ("ctc_weight", "lm", "lm_weight", "vocabulary", "vocabulary_mode")
                 if flag(n) is not None]
        if given:
            raise UsageError(f"{', '.join(given)}: for speech models only; a text model takes --beam, --length-norm, "
                             "--alpha and --length-bonus")
    base = model.recommended_decoding if args.decoding == "recommended" else DecodeOptions()
    try:
        vocabulary = read_vocabulary(args.vocabulary) if flag("vocabulary") else None
        if vocabulary is not None:  # every entry must be spellable by this model: say which line is not
            vocabulary_constraint(model.tokenizer, vocabulary, args.vocabulary_mode or base.vocabulary_mode,
                                  source=str(args.vocabulary))
        lm = flag("lm")
        options = choose_options(base.replace(**defaults), **defaults,
            beam=args.beam, ctc_weight=flag("ctc_weight"), lm=str(lm) if lm else None,
            lm_weight=flag("lm_weight") if flag("lm_weight") is not None or not lm else DEFAULT_LM_WEIGHT,
            length_bonus=args.length_bonus, length_norm=args.length_norm, alpha=args.alpha, vocabulary=vocabulary,
            vocabulary_mode=flag("vocabulary_mode"), precision=None if text else flag("precision"))
        if options.ctc_weight > 0 and getattr(model.seq2seq, "ctc", None) is None:
            raise ValueError("--ctc-weight needs a model trained with a CTC head; this one has none")
        model.language_model(options)
    except (ValueError, OSError) as err:
        raise UsageError(one_line(err)) from None
    return options


# An --lm without --lm-weight is meant to be used: a common starting weight for shallow fusion (tune it on dev).
DEFAULT_LM_WEIGHT = 0.3


def _add_decoding_flags(p: argparse.ArgumentParser, text: bool = False) -> None:
    """The decoding flags; ``text``: only those of a translation model's search (beam and length options)."""
    speech = "" if text else "--ctc-weight, --lm, --lm-weight, "
    g = p.add_argument_group(f"decoding (default: the model's recommended decoding; giving any of --beam, {speech}"
                             "--length-bonus, --length-norm, --alpha decodes with those and plain defaults instead)")
    g.add_argument("--decoding", choices=("recommended", "plain"), default="recommended",
                   help="the decoding recorded in the model file (default), or plain greedy attention decoding")
    g.add_argument("--beam", type=positive_int, help=f"hypotheses kept per {'sentence' if text else 'utterance'} "
                                                     "(1: greedy)")
    g.add_argument("--length-bonus", type=finite_float, metavar="G", help="added to a hypothesis's score per token")
    g.add_argument("--length-norm", choices=("none", "length", "gnmt"),
                   help="normalisation of finished hypotheses' scores (beam > 1): none, length (score / n^alpha) "
                        "or gnmt (score / ((5 + n) / 6)^alpha)")
    g.add_argument("--alpha", type=non_negative_float, metavar="A",
                   help="exponent of --length-norm (default 1; GNMT suggests 0.6-1.0)")
    if text:
        return
    g.add_argument("--ctc-weight", type=unit_interval, metavar="W",
                   help="weight of the CTC head's prefix score (0: attention only, 1: CTC only)")
    g.add_argument("--lm", type=model_file, metavar="FILE",
                   help=f"language model file from `asr-s2s train-lm` (weight {DEFAULT_LM_WEIGHT} unless --lm-weight)")
    g.add_argument("--lm-weight", type=non_negative_float, metavar="W", help="weight of the language model")
    g.add_argument("--vocabulary", type=text_file, metavar="FILE",
                   help="only output these phrases (one per line; with --vocabulary-mode words, any sequence of "
                        "these words)")
    g.add_argument("--vocabulary-mode", choices=("phrases", "words"))


class ParseError(Exception):
    """argparse's complaint, raised instead of exiting so that ``main`` returns 2 in-process."""

    def __init__(self, parser: argparse.ArgumentParser, message: str):
        super().__init__(message)
        self.parser = parser


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ParseError(self, message)


def _add_skip_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-skips", action="store_true",
                   help="exit 0 even when more than --max-skip-share of the lines were skipped (they are still reported)")
    p.add_argument("--max-skip-share", type=unit_interval, default=0.0, metavar="SHARE",
                   help="share of skipped lines (0-1) tolerated without --allow-skips (default 0: any skip fails)")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="asr-s2s", description="Sequence-to-sequence speech recognition and translation.")
    ap.add_argument("--version", action="version", version=f"%(prog)s {__import__('asr_s2s').__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("features", help="inspect audio files: duration, rate, log-mel shape")
    p.add_argument("paths", nargs="+", type=input_file)
    p.add_argument("--n-mels", type=positive_int, default=80)
    p.set_defaults(func=_cmd_features)

    p = sub.add_parser("prepare", help="find or download a corpus and write its manifests")
    p.add_argument("corpus")
    p.add_argument("--data-dir", type=folder, help="local-data root (default: $ASR_S2S_DATA, else ./data)")
    p.add_argument("--out", type=output_dir, required=True, help="folder for {train,dev,test} manifests")
    p.add_argument("--option", action="append", default=[], type=key_value, metavar="KEY=VALUE",
                   help="corpus option, e.g. split=speaker")
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("train", help="train a model from a YAML config")
    p.add_argument("config", type=input_file)
    p.add_argument("--out", type=output_dir, required=True, help="experiment directory")
    p.add_argument("--set", action="extend", nargs="+", default=[], type=key_value, metavar="KEY=VALUE",
                   help="override config values, e.g. --set optim.lr=3e-4 epochs=20")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="WER/CER of a model on a manifest (BLEU/chrF on a .tsv for text models)")
    p.add_argument("model", type=model_file)
    p.add_argument("manifest", type=input_file)
    p.add_argument("--report", type=output_dir, help="write per-utterance TSV, alignments and attention plots here")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "int8"), default="fp32",
                   help="speech models (text models decode in fp32): fp32 (default, the same scores on every machine), bf16, int8, or auto "
                        "(what `transcribe` uses by default: bf16 where the CPU has native bf16)")
    _add_decoding_flags(p)
    _add_skip_options(p)
    p.set_defaults(func=_cmd_evaluate)

    from .recipes import RECIPES  # a plain table: importing it costs nothing

    p = sub.add_parser("recipe", help="prepare, train and evaluate on a corpus in one command")
    p.add_argument("name", choices=sorted(RECIPES), metavar="NAME", help=f"one of: {', '.join(sorted(RECIPES))}")
    p.add_argument("--data-dir", type=folder, help="local-data root (default: $ASR_S2S_DATA, else ./data)")
    p.add_argument("--out", type=output_dir, help="experiment directory (default: exp/NAME)")
    p.add_argument("--quick", action="store_true", help="a minute-long smoke run of the same stages")
    p.add_argument("--set", action="extend", nargs="+", default=[], type=key_value, metavar="KEY=VALUE",
                   help="override config values")
    p.add_argument("--beam", type=positive_int,
                   help="evaluate with this beam (default: the decoding tuned on dev: speech models with a CTC "
                        "head and text models; else 1)")
    p.add_argument("--lm-text", nargs="+", type=text_file, default=[], metavar="FILE",
                   help="more text for the recipe's language model (one sentence per line), beside the transcripts")
    p.add_argument("--train-repeat", action="extend", nargs="+", default=[], type=key_value, metavar="CORPUS=K",
                   help="recipes that join corpora: put CORPUS's training manifest K times into the joint train set "
                        "(copies under rep2-, rep3- ids); applies when the manifests are prepared, i.e. to a new --out")
    p.add_argument("--seed-experiment", action="store_true",
                   help="also train the pure context-vector model (attention: none) and plot both by input length")
    _add_skip_options(p)
    p.set_defaults(func=_cmd_recipe)

    p = sub.add_parser("translate", help="translate sentences (arguments, or one per line on stdin)")
    p.add_argument("model", type=model_file)
    p.add_argument("sentences", nargs="*")
    _add_decoding_flags(p, text=True)
    p.set_defaults(func=_cmd_translate)

    p = sub.add_parser("transcribe", help="transcribe audio files, folders (recursive) or globs")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--model", type=model_file, help="model file (default: the bundled asr_s2s/assets/default.pt)")
    p.add_argument("--format", choices=("txt", "json", "tsv", "srt", "vtt"), default="txt",
                   help="txt (stdout: PATH<TAB>TEXT lines for several inputs), json (stdout: one object per line), "
                        "tsv, srt, vtt")
    p.add_argument("--output-dir", type=output_dir, help="write <name>.<format> files here instead of stdout")
    p.add_argument("--device", type=device, default="cpu", help="cpu or cuda")
    p.add_argument("--batch-size", type=positive_int, default=16)
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
    p.add_argument("model", type=model_file)
    p.add_argument("manifest", type=input_file, help="a dev manifest (never the test split)")
    p.add_argument("--lm", type=model_file, metavar="FILE", help="also tune the weight of this language model")
    p.add_argument("--out", type=output_file, help="write the model here with the best setting as its recommended decoding "
                                            "(and the LM inside it when the LM helps)")
    p.set_defaults(func=_cmd_tune)

    p = sub.add_parser("train-lm", help="train an LSTM language model over a recognizer's tokenizer (for --lm)")
    p.add_argument("text", nargs="+", type=text_file, help="text files (one sentence per line) or JSON-lines manifests")
    p.add_argument("--tokenizer", type=model_file, required=True, metavar="MODEL",
                   help="the recognizer's model file, whose tokenizer the LM uses")
    p.add_argument("--out", type=output_dir, required=True, help="folder for lm.pt (and its resumable state)")
    p.add_argument("--dev", nargs="+", type=text_file, help="held-out text for perplexity (default: 5%% of the text)")
    p.add_argument("--steps", type=positive_int, default=3000, help="updates (default 3000)")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--lr", type=positive_float, default=2e-3)
    p.add_argument("--embed-dim", type=positive_int, default=128)
    p.add_argument("--hidden", type=positive_int, default=256)
    p.add_argument("--layers", type=positive_int, default=2)
    p.add_argument("--dropout", type=unit_interval, default=0.2, help="in [0, 1)")
    p.add_argument("--eval-every", type=positive_int, default=500)
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.set_defaults(func=_cmd_train_lm)

    p = sub.add_parser("export", help="export a speech model to TorchScript or ONNX (+ model.json) for deployment")
    p.add_argument("model", type=model_file)
    p.add_argument("--format", choices=("torchscript", "onnx", "fp16"), default="onnx",
                   help="fp16: the same model file with half-precision weights (half the size)")
    p.add_argument("--out", type=output_path, required=True, help="output folder (encoder, decoder_step, model.json); a file for fp16")
    p.add_argument("--opset", type=positive_int, default=17, help="ONNX opset")
    p.set_defaults(func=_cmd_export)
    p = sub.add_parser("bench", help="training throughput, FLOP rate vs the measured matmul peak, decoding RTF, memory")
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke run on a small subset")
    p.add_argument("--json", type=output_file, help="write every measurement here")
    p.add_argument("--repeats", type=positive_int, help="timed epochs / decoding passes (default 3; 2 with --quick)")
    p.add_argument("--corpus", default="an4", choices=["an4", "fsdd"])
    p.add_argument("--data-dir", type=folder, help="local-data root (default: $ASR_S2S_DATA, else ./data)")
    p.add_argument("--threads", type=positive_int, default=2, help="torch threads (default 2)")
    p.add_argument("--model", type=model_file, help="decode with this model file instead of the benchmark's own weights")
    p.add_argument("--work-dir", type=output_dir, help="keep manifests, feature cache and run files here (default: a temp dir)")
    p.add_argument("--set", action="extend", nargs="+", default=[], type=key_value, metavar="KEY=VALUE",
                   help="override the reference config")
    p.set_defaults(func=_cmd_bench)
    return ap


def _user_errors() -> tuple[type[BaseException], ...]:
    """The errors that describe bad usage, bad input or a missing resource (a file, a corpus, a download) in their
    message: the command prints that message, not a traceback. Anything else is a bug and keeps its traceback."""
    from .audio import AudioError
    from .checkpoint import CheckpointError
    from .corpora.download import DownloadError, UnsafeArchiveError
    from .manifest import ManifestError
    from .train import TrainingError

    # File-system refusals name their path ("[Errno 20] Not a directory: 'data/fsdd'"): the environment, not a bug.
    return (UsageError, AudioError, CheckpointError, DownloadError, UnsafeArchiveError, ManifestError, TrainingError,
            FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError, FileExistsError)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status. Usage errors (the parser's and the commands' own) end as one
    ``error:`` line on stderr and status 2, also when called in-process: nothing raises SystemExit but
    ``--help``/``--version`` (status 0, as argparse does)."""
    ap = build_parser()
    try:
        args = ap.parse_args(argv)
    except ParseError as err:
        err.parser.print_usage(sys.stderr)
        print(f"{err.parser.prog}: error: {one_line(err)}", file=sys.stderr)
        return 2
    if not getattr(args, "func", None):
        ap.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except _user_errors() as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
