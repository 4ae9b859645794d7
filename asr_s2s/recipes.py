"""One-command recipes: find or download the corpus, prepare manifests, train, evaluate, report.

    asr-s2s recipe NAME [--data-dir DIR] [--out EXPDIR] [--quick] [--set key=value ...]

Each stage is skipped when its outputs already exist (prepared manifests, a finished model), so
re-running a recipe resumes it. The contract scripts rely on: the model is ``EXPDIR/model.pt``,
the manifests are ``EXPDIR/data/{train,dev,test}.jsonl`` (``.tsv`` pairs for text recipes), and
the run ends by printing one JSON line per evaluated split with the fields of
``asr-s2s evaluate --json`` plus ``"split"``.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Sequence

from .atomic import atomic_open
from .back_translation import BackTranslation

CONFIG_DIR = Path(__file__).resolve().parent / "recipe_configs"


@dataclass
class Recipe:
    corpus: str  # one corpus, or several joined with "+" (their manifests are concatenated)
    config: str  # file name in recipe_configs/
    prepare: dict = field(default_factory=dict)
    # --set overrides for --quick: a count of updates (epochs or max_steps) small enough for a minute, never a
    # time budget, so that the smoke run does the same work on every machine.
    quick: list[str] = field(default_factory=list)
    quick_prepare: dict = field(default_factory=dict)  # prepare options that --quick adds (a smaller corpus)
    text: bool = False  # translation recipe (TSV pairs, BLEU/chrF)
    description: str = ""
    # False: greedy attention decoding, no LM and no tuning stage even with a CTC head (the head only helps training).
    tune_decoding: bool = True
    # The --seed-experiment: "pair" (speech: the recipe's model and its context-vector twin, WER by duration),
    # "grid" (asr_s2s.length_experiment: 3 cells x 2 decoders x 2 length settings, matched in parameters) or
    # "text" (asr_s2s.text_length_experiment: the two decoders matched in parameters, multi-reference BLEU and
    # chrF by source length with bootstrap intervals).
    seed_experiment: str = "pair"
    # Text recipes: more training pairs back-translated from target-language text (asr_s2s.back_translation).
    back_translation: Optional[BackTranslation] = None
    # Joined corpora: how many times a corpus's training manifest enters the joint train set (default 1). The copies
    # carry Kaldi-style id prefixes ("rep2-<id>") and each draws its own augmentation, so a corpus that is a small
    # share of the updates (AN4's sentences beside thousands of one-word clips) gets more of them.
    train_repeat: dict = field(default_factory=dict)


_QUICK_DIGITS = {"train_per_length": 8, "dev_per_length": 2, "test_per_length": 3}  # 128 / 32 / 48 strings

# The bundled recipe's mix (and its held-out-speaker twin's): three copies of AN4 and of FSDD. AN4's sentences were
# 83 of 265 updates an epoch beside thousands of one-word clips, and FSDD's short digits lose ground when AN4 alone
# is repeated (recipes/default/README.md).
_DEFAULT_MIX_REPEATS = {"an4": 3, "fsdd": 3}

RECIPES: dict[str, Recipe] = {
    "fsdd": Recipe("fsdd", "fsdd.yaml", {"split": "official"},
                   quick=["epochs=2", "data.max_dev=40", "model.encoder.hidden=64", "model.decoder.hidden=64"],
                   description="Free Spoken Digit Dataset, official split (recordings 0-4 of each speaker are test)"),
    "fsdd_speaker": Recipe("fsdd", "fsdd_speaker.yaml", {"split": "speaker"},
                           quick=["epochs=2", "data.max_dev=40"],
                           description="FSDD with held-out speakers"),
    "digit_strings": Recipe("digit_strings", "digit_strings.yaml", {"split": "official"},
                            quick=["max_steps=30", "data.max_dev=20"], quick_prepare=_QUICK_DIGITS,
                            tune_decoding=False, seed_experiment="grid",
                            description="FSDD recordings joined into spoken strings of 1-16 digits (the seed experiment)"),
    "digit_strings_speaker": Recipe("digit_strings", "digit_strings.yaml", {"split": "speaker"},
                                    quick=["max_steps=30", "data.max_dev=20"], quick_prepare=_QUICK_DIGITS,
                                    tune_decoding=False,
                                    seed_experiment="grid", description="digit strings with held-out speakers"),
    "an4": Recipe("an4", "an4.yaml", {}, quick=["epochs=1", "data.max_dev=20"],
                  description="CMU AN4 (alphanumeric census utterances), speaker-disjoint dev"),
    "an4_reference": Recipe("an4", "an4_reference.yaml", {}, quick=["epochs=1", "max_steps=5", "data.max_dev=10"],
                            description="AN4 with the reference model matched to the SpeechBrain peer"),
    "librispeech": Recipe("librispeech", "librispeech.yaml", {"preset": "clean-100"},
                          quick=["epochs=1", "max_steps=20"], description="LibriSpeech train-clean-100 (one GPU)"),
    "mini_librispeech": Recipe("librispeech", "librispeech.yaml", {"preset": "mini"}, quick=["epochs=1", "max_steps=20"],
                               description="mini LibriSpeech (train-clean-5 / dev-clean-2)"),
    "commonvoice": Recipe("commonvoice", "commonvoice.yaml", {}, quick=["epochs=1", "max_steps=20"],
                          description="Common Voice from an extracted release"),
    "default": Recipe("an4+fsdd+wakeword+alphanumeric", "default.yaml", {}, quick=["epochs=1", "data.max_dev=40"],
                      train_repeat=_DEFAULT_MIX_REPEATS,
                      description="the bundled default recognizer: AN4 + FSDD + wake words + alphanumeric prompts "
                                  "(letters, digits, numbers, addresses, command and wake words)"),
    "default_fsdd_speaker": Recipe("an4+fsdd+wakeword+alphanumeric", "default.yaml", {"fsdd": {"split": "speaker"}},
                                   quick=["epochs=1", "data.max_dev=40"], train_repeat=_DEFAULT_MIX_REPEATS,
                                   description="the default recipe without FSDD's held-out speakers (fsdd/test: theo, "
                                               "never heard): how the bundled recipe does on a new voice"),
    "tatoeba_kor_eng": Recipe("tatoeba", "tatoeba_kor_eng.yaml", {"direction": "kor-eng"}, text=True, seed_experiment="text",
                              quick=["epochs=1", "data.max_dev=50"],
                              description="Korean -> English translation (Tatoeba)"),
    "tatoeba_kor_eng_bt": Recipe("tatoeba", "tatoeba_kor_eng_bt.yaml", {"direction": "kor-eng"}, text=True,
                                 seed_experiment="text", quick=["epochs=1", "max_steps=20", "data.max_dev=50"],
                                 back_translation=BackTranslation("tatoeba", {"direction": "eng-fra"}, side=0,
                                                                  reverse_config="tatoeba_kor_eng.yaml"),
                                 description="Korean -> English with the English side of Tatoeba English -> French "
                                             "back-translated into more training pairs"),
    "tatoeba_eng_fra": Recipe("tatoeba", "tatoeba_eng_fra.yaml", {"direction": "eng-fra"}, text=True, seed_experiment="text",
                              quick=["epochs=1", "max_steps=60", "data.max_dev=50", "data.src_vocab_size=300", "data.vocab_size=300"],
                              description="English -> French translation (Tatoeba)"),
}


def run_recipe(name: str, data_dir: Optional[Path] = None, out: Optional[Path] = None, quick: bool = False,
               overrides: list[str] = (), beam: int | None = None, seed_experiment: bool = False,
               lm_text: Sequence[Path] = (), train_repeat: Sequence[str] = ()) -> list[dict]:
    """Run every stage of recipe ``name``; returns (and prints) one result dict per evaluated split.

    ``train_repeat``: ``CORPUS=K`` items that override the recipe's ``train_repeat`` (joined corpora only)."""
    from .config import load_config
    from .corpora import default_data_dir
    from .lock import acquire, release
    from .usage import UsageError

    if name not in RECIPES:
        raise UsageError(f"unknown recipe {name!r}; available: {', '.join(sorted(RECIPES))}")
    r = RECIPES[name]
    try:  # bad --set values are refused before the (possibly long) preparation, not after it
        load_config(CONFIG_DIR / r.config, (r.quick if quick else []) + list(overrides))
    except ValueError as exc:
        raise UsageError(f"recipe {name}: {exc}") from None
    if train_repeat:
        r = replace(r, train_repeat={**r.train_repeat, **_repeat_counts(name, r, train_repeat)})
    data_dir = Path(data_dir or default_data_dir())
    out = Path(out or Path("exp") / (name + ("_quick" if quick else "")))
    # Every stage writes into `out` (manifests, training, reports): the folder is this run's until it ends.
    try:
        acquire(out)  # FolderLockedError (a UsageError) when another run holds it
    except OSError as exc:
        raise UsageError(f"{out}: output directory is not writable ({exc.strerror or exc})") from None
    try:
        return _run_stages(name, r, data_dir, out, quick, list(overrides), beam, seed_experiment, lm_text)
    finally:
        release(out)


def _repeat_counts(name: str, r: Recipe, items: Sequence[str]) -> dict[str, int]:
    """``["an4=3"]`` -> ``{"an4": 3}``, refusing corpora the recipe does not join and counts below 1."""
    from .usage import UsageError, split_key_values

    corpora = r.corpus.split("+")
    if len(corpora) == 1:
        raise UsageError(f"recipe {name}: --train-repeat needs a recipe that joins corpora; {name} has one ({r.corpus})")
    counts = {}
    for corpus, value in split_key_values(list(items)).items():
        if corpus not in corpora:
            raise UsageError(f"recipe {name}: --train-repeat {corpus}={value}: {corpus!r} is not one of its corpora "
                             f"({', '.join(corpora)})")
        if not (value.strip().isascii() and value.strip().isdigit()) or int(value) < 1:
            raise UsageError(f"recipe {name}: --train-repeat {corpus}={value}: the count must be a whole number >= 1")
        counts[corpus] = int(value)
    return counts


def _run_stages(name: str, r: Recipe, data_dir: Path, out: Path, quick: bool, overrides: list[str], beam: int | None,
                seed_experiment: bool, lm_text: Sequence[Path] = ()) -> list[dict]:
    from .config import load_config

    ext = ".tsv" if r.text else ".jsonl"
    man_dir = out / "data"
    splits = {s: man_dir / f"{s}{ext}" for s in ("train", "dev", "test")}

    # Stage 1: prepare (skipped when the manifests exist).
    if not (splits["train"].exists() and splits["dev"].exists()):
        print(f"[{name}] preparing {r.corpus} from {data_dir} -> {man_dir}", flush=True)
        prepare_all(r, data_dir, man_dir, ext, quick=quick)
    else:
        print(f"[{name}] manifests exist in {man_dir}: skipping preparation", flush=True)

    # Stage 1b (back-translation recipes): a reverse model, target-language text translated by it, the forward
    # model's training pairs.
    train_path = splits["train"]
    if r.back_translation is not None:
        train_path = _back_translation_stage(name, r, splits, out, data_dir, quick, overrides)

    # Stage 2: train (skipped when a finished model exists; an interrupted run is resumed).
    sets = [f"data.train={Path(train_path).resolve()}", f"data.dev={splits['dev'].resolve()}"]
    cfg = load_config(CONFIG_DIR / r.config, sets + (r.quick if quick else []) + list(overrides))
    model_path = out / "model.pt"
    if seed_experiment and r.seed_experiment == "grid":
        # The twelve trainings first; the recipe's own model is the grid's in-distribution LSTM with attention
        # (trained on the same manifest, the same config and updates), so it is not trained twice.
        from .length_experiment import grid_model, run_length_experiment

        print(f"[{name}] seed experiment -> {out / 'seed_experiment'}", flush=True)
        run_length_experiment(name, cfg, out, splits, log=lambda line: print(line, flush=True))
        if not model_path.exists():
            shutil.copyfile(grid_model(cfg, out), model_path)
    elif seed_experiment and r.seed_experiment == "text":
        # Likewise: the recipe's model is the experiment's attention run (no dev selection: its final weights).
        from .text_length_experiment import attention_model, run_text_length_experiment

        print(f"[{name}] seed experiment -> {out / 'seed_experiment'}", flush=True)
        run_text_length_experiment(name, cfg, out, splits, log=lambda line: print(line, flush=True))
        if not model_path.exists():
            shutil.copyfile(attention_model(cfg, out), model_path)
    _train_stage(name, cfg, out, model_path)
    cut_short = _cut_short(model_path)
    if cut_short:
        print(f"[{name}] WARNING: training was cut short by max_minutes before its planned updates: the results below "
              f"are not the recipe's (they carry \"cut_short\": true)", file=sys.stderr, flush=True)

    # Stages 3-4 (speech models with a CTC head): a language model on the training transcripts (plus any
    # --lm-text), then the decoding tuned on dev and recorded in model.pt.
    options = None
    if not r.text and not cut_short and r.tune_decoding:
        options = decoding_stages(name, out, model_path, splits, quick=quick, lm_text=lm_text)
    # Text recipes: beam x length normalisation tuned on dev (out/tuning.md, recorded in model.pt). Unlike the
    # speech stages this runs on a cut-short model too: it costs a minute, and its results carry the flag anyway.
    if r.text and r.tune_decoding:
        options = text_decoding_stage(name, out, model_path, splits, max_pairs=cfg.data.max_dev)
    if options is not None and beam is not None:
        options = options.replace(beam=beam)

    # Stage 5: evaluate every split present (dev always; test when the corpus has it), and each
    # corpus's own splits when several were joined.
    results = []
    evals = [(split, splits[split]) for split in ("dev", "test")]
    if "+" in r.corpus:
        evals += [(f"{c}/{split}", man_dir / c / f"{split}{ext}") for c in r.corpus.split("+") for split in ("dev", "test")]
    for split, path in evals:
        if path.exists():
            res = evaluate_split(model_path, path, out / "reports" / split.replace("/", "_"), text=r.text,
                                 beam=beam or 1, options=options)
            if options is not None:
                res["decoding"] = {k: v for k, v in options.to_dict().items() if k not in ("vocabulary", "lm")}
            results.append({"split": split, **res, **({"cut_short": True} if cut_short else {})})
    (out / "results.jsonl").write_text("".join(json.dumps(x) + "\n" for x in results))
    if seed_experiment and r.seed_experiment == "pair":
        seed_experiment_stage(name, cfg, out, splits)
    print(f"[{name}] model: {model_path}\n[{name}] reports: {out / 'reports'}\n[{name}] results: {out / 'results.jsonl'}", flush=True)
    for x in results:
        print(json.dumps(x), flush=True)
    return results


# The recipes' language model: small, since their transcripts are few (AN4: 857 lines) and a larger LM overfits
# them (dev perplexity of the default recipe's text rose after ~500 updates with 2 x 256 units).
RECIPE_LM = {"embed_dim": 64, "hidden": 128, "layers": 1, "dropout": 0.3}
RECIPE_LM_STEPS = 1000


def decoding_stages(name: str, out: Path, model_path: Path, splits: dict, quick: bool = False,
                    lm_text: Sequence[Path] = ()):
    """Train the LM (out/lm/lm.pt) and tune the decoding on dev (out/tuning.md) for a model with a CTC head; the
    tuned model.pt carries both. Each stage is skipped when its output exists. -> the DecodeOptions to evaluate
    with (None: greedy, for models without a CTC head)."""
    from .checkpoint import load_checkpoint
    from .lm import LMConfig, LMTrainConfig, read_text_lines, train_lm
    from .manifest import read_manifest
    from .model import load_model
    from .tune import tune_decoding

    model = load_model(model_path)
    if getattr(model.seq2seq, "ctc", None) is None:
        return None
    if getattr(model, "_recommended", None):
        print(f"[{name}] {model_path} carries its tuned decoding: skipping the LM and tuning", flush=True)
        return model.recommended_decoding
    lm_dir = out / "lm"
    if not (lm_dir / "lm.pt").exists():
        print(f"[{name}] training the language model -> {lm_dir}", flush=True)
        texts = read_text_lines([splits["train"], *lm_text])
        steps = 50 if quick else RECIPE_LM_STEPS
        train_lm(texts, model.tokenizer, lm_dir, LMConfig(**RECIPE_LM), LMTrainConfig(steps=steps, eval_every=steps // 2),
                 resume=(lm_dir / "lm_state.pt").exists(), log=lambda line: print(f"[{name}] lm: {line}", flush=True))
    entries, _ = read_manifest(splits["dev"], on_error="skip")
    entries = [e.to_dict() for e in entries]
    print(f"[{name}] tuning the decoding on dev ({len(entries)} utterances)", flush=True)
    res = tune_decoding(model, entries, lm=str(lm_dir / "lm.pt"), log=lambda line: print(f"[{name}] {line}", flush=True))
    (out / "tuning.md").write_text(f"# Decoding tuned on {splits['dev']}\n\n{res.table()}\nbest: "
                                   f"{json.dumps(res.best.to_dict())}\n", encoding="utf-8")
    best = res.best
    if best.lm_weight > 0:
        model.attach_lm(load_checkpoint(lm_dir / "lm.pt"))
    best = type(best).from_dict({**best.to_dict(), "lm": None})
    model.set_recommended_decoding(best)
    model.save(model_path, meta=model.meta)
    print(f"[{name}] recommended decoding (dev WER {100 * res.wer:.2f}%): {json.dumps(best.to_dict())}", flush=True)
    return best


def text_decoding_stage(name: str, out: Path, model_path: Path, splits: dict, max_pairs: int | None = None):
    """Tune a translation model's decoding (beam x length normalisation, asr_s2s.tune.tune_translation) on the
    first `max_pairs` dev pairs (all when None: the recipes pass data.max_dev, the dev subset training scores),
    write out/tuning.md and record the best in model.pt. Skipped when model.pt carries a recommended decoding.
    -> the DecodeOptions to evaluate with."""
    from .manifest import read_tsv_pairs
    from .model import load_model
    from .tune import tune_translation

    model = load_model(model_path)
    if getattr(model, "_recommended", None):
        print(f"[{name}] {model_path} carries its tuned decoding: skipping tuning", flush=True)
        return model.recommended_decoding
    pairs, _ = read_tsv_pairs(splits["dev"], on_error="skip")
    pairs = pairs[:max_pairs] if max_pairs else pairs
    if not pairs:  # nothing to tune on: greedy, and the evaluation stage says what is wrong with the file
        return None
    print(f"[{name}] tuning the decoding on dev ({len(pairs)} sentence pairs)", flush=True)
    res = tune_translation(model, pairs, log=lambda line: print(f"[{name}] {line}", flush=True))
    (out / "tuning.md").write_text(f"# Decoding tuned on the first {len(pairs)} pairs of {splits['dev']}\n\n"
                                   f"{res.table()}\nbest: {json.dumps(res.best.to_dict())}\n", encoding="utf-8")
    model.set_recommended_decoding(res.best)
    model.save(model_path, meta=model.meta)
    print(f"[{name}] recommended decoding (dev BLEU {res.bleu:.2f}, chrF {res.chrf:.2f}): "
          f"{json.dumps(res.best.to_dict())}", flush=True)
    return res.best


def prepare_all(r: Recipe, data_dir: Path, man_dir: Path, ext: str, quick: bool = False) -> None:
    """Prepare the recipe's corpus (or corpora, concatenated into one set of manifests)."""
    from .corpora import prepare_corpus

    corpora = r.corpus.split("+")
    if len(corpora) == 1:
        prepare_corpus(r.corpus, data_dir, man_dir, **{**r.prepare, **(r.quick_prepare if quick else {})})
        return
    for split in ("train", "dev", "test"):
        parts = []
        for c in corpora:
            paths = prepare_corpus(c, data_dir, man_dir / c, **r.prepare.get(c, {}))
            if split in paths and Path(paths[split]).exists():
                text = Path(paths[split]).read_text(encoding="utf-8")
                parts.append(text)
                if split == "train":
                    parts += [_prefixed_ids(text, f"rep{k}-") for k in range(2, r.train_repeat.get(c, 1) + 1)]
        if parts:
            with atomic_open(man_dir / f"{split}{ext}", "w") as f:
                f.write("".join(p if p.endswith("\n") else p + "\n" for p in parts))


def _prefixed_ids(manifest_text: str, prefix: str) -> str:
    """A prepared JSON-lines manifest's entries with ``prefix`` before each id (every corpus module writes ids)."""
    lines = []
    for line in manifest_text.splitlines():
        if line.strip():
            entry = json.loads(line)
            entry["id"] = prefix + entry["id"]
            lines.append(json.dumps(entry, ensure_ascii=False) + "\n")
    return "".join(lines)


# --set keys that describe the machine rather than the model: they apply to a back-translation recipe's reverse
# model as well as to its forward one.
_MACHINE_KEYS = ("threads", "device", "amp")


def _back_translation_stage(name: str, r: Recipe, splits: dict, out: Path, data_dir: Path, quick: bool,
                            overrides: list[str]) -> Path:
    from .back_translation import back_translation_stage
    from .config import load_config

    def train_reverse(train_tsv: Path, dev_tsv: Optional[Path], run_dir: Path) -> Path:
        sets = [f"data.train={train_tsv.resolve()}"] + ([f"data.dev={dev_tsv.resolve()}"] if dev_tsv else [])
        machine = [o for o in overrides if o.split("=", 1)[0].strip() in _MACHINE_KEYS]
        cfg = load_config(CONFIG_DIR / r.back_translation.reverse_config, sets + (r.quick if quick else []) + machine)
        _train_stage(f"{name}: reverse model", cfg, run_dir, run_dir / "model.pt")
        return run_dir / "model.pt"

    return back_translation_stage(name, r.back_translation, splits, out, data_dir, train_reverse, quick=quick,
                                  log=lambda line: print(line, flush=True))


def _train_stage(name: str, cfg, out: Path, model_path: Path) -> None:
    from .train import train

    last = out / "checkpoints" / "last.pt"
    if model_path.exists() and _finished(last):
        print(f"[{name}] {model_path} exists: skipping training", flush=True)
        return
    print(f"[{name}] training -> {out}", flush=True)
    train(cfg, out, resume=last.exists())


def _cut_short(model_path: Path) -> bool:
    """Whether the model's training run was stopped by the max_minutes cap (train.mark_cut_short)."""
    from .checkpoint import load_checkpoint

    return bool(load_checkpoint(model_path).get("meta", {}).get("cut_short"))


def _finished(last: Path) -> bool:
    if not last.exists():
        return True  # a model without training state (e.g. copied in): treat as final
    from .checkpoint import load_checkpoint

    return bool(load_checkpoint(last)["state"].get("done"))


def evaluate_split(model_path: Path, manifest: Path, report_dir: Path | None, text: bool = False,
                   beam: int | None = None, precision: str = "fp32", options=None, model=None) -> dict:
    """Score one split with the model in `model_path` (or `model`, already loaded from it); the dict is what
    ``asr-s2s evaluate --json`` prints. ``options`` (a DecodeOptions) replaces ``beam`` and ``precision``.
    Speech models: without options, ``beam`` (default 1) and ``precision`` (see evaluate_entries). Text models:
    without options, the model's recommended decoding, or plain defaults with ``beam`` when it is given (see
    ASRModel.translate).

    Only what was measured is reported: a file with no valid line raises EvaluationError (naming the file and
    the likely mistake), every skipped line is counted per cause (``skipped``, ``skipped_by_cause``,
    ``manifest_lines``), and a score over nothing is None. A model of the wrong kind (a speech model for a
    TSV of pairs, a text model for an audio manifest) is a UsageError."""
    from .evaluate import count_skips, nothing_to_score
    from .model import load_model
    from .usage import UsageError

    model = model if model is not None else load_model(model_path)
    if text == model.is_audio:
        raise UsageError(f"{model_path} is a {'speech' if model.is_audio else 'text'} model but {manifest} is "
                         f"{'a TSV of sentence pairs' if text else 'an audio manifest'}: give a "
                         f"{'text (translation)' if text else 'speech'} model")
    if text:
        from .evaluate import evaluate_pairs
        from .manifest import read_tsv_pairs

        pairs, report = read_tsv_pairs(manifest, on_error="skip")
        if not pairs:
            raise nothing_to_score(report, text=True)
        res = evaluate_pairs(model, pairs, beam=None if options is not None else beam, options=options)
        if report_dir is not None:
            report_dir.mkdir(parents=True, exist_ok=True)
            with open(report_dir / "translations.tsv", "w", encoding="utf-8") as f:
                for (s, t), h in zip(pairs, res["hypotheses"]):
                    f.write(f"{s}\t{t}\t{h}\n")
        res.pop("hypotheses")
        return count_skips(res, report)
    from .evaluate import EvaluationError, evaluate_entries, write_report
    from .manifest import read_manifest

    entries, report = read_manifest(manifest, on_error="skip")
    if not entries:
        raise nothing_to_score(report)
    result = evaluate_entries(model, [e.to_dict() if hasattr(e, "to_dict") else e for e in entries], beam=beam or 1,
                              keep_attention=4 if report_dir else 0, precision=precision, options=options)
    if not result.num_utterances:
        causes = ", ".join(f"{c}: {n}" for c, n in sorted(result.skipped_by_cause.items()))
        raise EvaluationError(f"{manifest}: no utterance could be scored: all {len(entries)} valid lines failed "
                              f"at decoding ({causes}; each is named above)")
    summary = count_skips(result.summary(), report)
    if report_dir is not None:
        write_report(result, report_dir, summary=summary)
    return summary


def seed_experiment_stage(name: str, cfg, out: Path, splits: dict) -> Path:
    """The seed experiment of speech recipes ("pair"): the pure context-vector model (attention none) trained
    beside the attention model on the same data, WER by utterance duration. Writes seed_experiment.{json,png}.
    (Text recipes run asr_s2s.text_length_experiment instead.)"""
    import copy

    from .train import train

    base = out / "no_attention"
    cfg2 = copy.deepcopy(cfg)
    cfg2.model.decoder.attention = "none"
    if not (base / "model.pt").exists() or not _finished(base / "checkpoints" / "last.pt"):
        train(cfg2, base, resume=(base / "checkpoints" / "last.pt").exists())
    split = splits["test"] if splits["test"].exists() else splits["dev"]
    curves = {}
    for label, mp in (("attention: " + cfg.model.decoder.attention, out / "model.pt"), ("attention: none", base / "model.pt")):
        curves[label] = score_by_length(mp, split)
    (out / "seed_experiment.json").write_text(json.dumps(curves, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, bins in curves.items():
        ax.plot([(b["min"] + b["max"]) / 2 for b in bins], [b["wer"] for b in bins], "o-", label=label)
    ax.set_xlabel("utterance duration (s)")
    ax.set_ylabel("WER")
    ax.set_title(f"{name}: one context vector vs attention, by input length")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "seed_experiment.png", dpi=90)
    plt.close(fig)
    return out / "seed_experiment.png"


def score_by_length(model_path: Path, manifest: Path, bins: int = 5) -> list[dict]:
    """WER of a speech model on ``manifest`` in ``bins`` bins of utterance duration."""
    from .evaluate import evaluate_entries, wer_by_length
    from .manifest import read_manifest
    from .model import load_model

    model = load_model(model_path)
    entries, _ = read_manifest(manifest, on_error="skip")
    res = evaluate_entries(model, [e.to_dict() if hasattr(e, "to_dict") else e for e in entries])
    return wer_by_length(res.utterances, bins=bins)
