"""Bad command lines, built from the parser's own options, and a runner that classifies what ``asr-s2s`` does.

Shared by ``tests/test_cli_usage.py`` (named cases, every option x fixed bad values, and a hypothesis sweep
over the same options) and ``bench/reliability_report.py`` (the summary table). A case passes when the
command, run in-process through ``asr_s2s.cli.main``:

- returns the expected status (2: bad usage; 1: a per-file failure of ``features``/``transcribe``, whose
  audio inputs are data, not usage),
- prints exactly one ``error:`` line on stderr (for status 2 it is the last line) naming the argument,
  its value or the file at fault,
- shows no traceback and lets no exception out of ``main``,
- has not created the outputs it was asked to write (checked before any work starts).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from bad_inputs import Result

from asr_s2s import cli, usage

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "asr_s2s" / "assets" / "default.pt"
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0  # root reads and writes through chmod 000


# ------------------------------------------------------------------------------------------- workspace
@dataclass
class Workspace:
    """Files the command lines point at: good ones for the baseline arguments, wrong ones for the cases."""

    root: Path
    wav: Path
    manifest: Path  # a valid one-line manifest
    config: Path  # a valid tiny training config
    text_file: Path  # plain text: not a model, not audio, not a manifest
    folder: Path  # an existing folder with no audio
    blocker: Path  # a regular file, used where a folder is needed (and as a parent folder)
    text_model: Path  # a (untrained) translation model
    tsv: Path  # source<TAB>target pairs
    unreadable: Path | None  # chmod 000 (None when running as root)
    outputs: list[Path] = field(default_factory=list)  # what the baseline command lines would write


def make_text_model(path: Path) -> Path:
    """A real, untrained text-to-text model file (the kind `translate` takes and `transcribe` must refuse)."""
    from asr_s2s.model import ASRModel
    from asr_s2s.seq2seq import DecoderConfig, EncoderConfig, ModelConfig
    from asr_s2s.text import CharTokenizer

    src, tgt = CharTokenizer.build(["hello world"]), CharTokenizer.build(["bonjour le monde"])
    cfg = ModelConfig(input="text", vocab_size=tgt.vocab_size, src_vocab_size=src.vocab_size,
                      encoder=EncoderConfig(cell="gru", input_dim=8, hidden=8, layers=1, bidirectional=True,
                                            subsampling="none"),
                      decoder=DecoderConfig(cell="gru", embed_dim=8, hidden=8, layers=1, attention="dot"))
    ASRModel(cfg, tgt, None, src_tokenizer=src).save(path)
    return path


def make_workspace(d: Path, wav: Path) -> Workspace:
    d.mkdir(parents=True, exist_ok=True)
    import soundfile as sf

    line = {"audio_filepath": str(wav), "duration": sf.info(str(wav)).duration, "text": "zero", "id": "w"}
    manifest = d / "good.jsonl"
    manifest.write_text(json.dumps(line) + "\n")
    config = d / "tiny.yaml"
    config.write_text(
        f"data: {{train: {manifest}, tokenizer: char, max_frames: 1000}}\nfeatures: {{sample_rate: 8000, n_mels: 20}}\n"
        "model: {encoder: {input_dim: 20, hidden: 8, layers: 1, conv_channels: 4}, decoder: {hidden: 8, embed_dim: 8}}\n"
        "max_steps: 1\nepochs: 1\nthreads: 1\ndevice: cpu\n")
    text_file = d / "notes.txt"
    text_file.write_text("this is not a model, a manifest or audio\n")
    folder = d / "empty_folder"
    folder.mkdir(exist_ok=True)
    blocker = d / "a_file"
    blocker.write_text("a regular file\n")
    tsv = d / "pairs.tsv"
    tsv.write_text("hello\tbonjour\n")
    unreadable = None
    if not IS_ROOT:
        unreadable = d / "unreadable.bin"
        unreadable.write_text("secret")
        unreadable.chmod(0)
    ws = Workspace(d, wav, manifest, config, text_file, folder, blocker, make_text_model(d / "text_model.pt"), tsv,
                   unreadable)
    return ws


def baseline(ws: Workspace, data_root: Path) -> dict[str, dict[str, list[str]]]:
    """Per verb, a command line that is valid: one argument at a time is replaced by a bad value. Keyed by the
    parser's ``dest`` so that a case replaces exactly one argument; positionals first, in order."""
    out = ws.root / "never"  # no refused command may create anything under it
    ws.outputs = [out]
    model = str(DEFAULT_MODEL)
    return {
        "features": {"paths": [str(ws.wav)]},
        "prepare": {"corpus": ["fsdd"], "out": ["--out", str(out / "prep")], "data_dir": ["--data-dir", str(data_root)],
                    "option": ["--option", "download=false"]},
        "train": {"config": [str(ws.config)], "out": ["--out", str(out / "exp")], "set": ["--set", "max_steps=1"]},
        "evaluate": {"model": [model], "manifest": [str(ws.manifest)], "report": ["--report", str(out / "report")]},
        "recipe": {"name": ["fsdd"], "out": ["--out", str(out / "recipe")], "data_dir": ["--data-dir", str(data_root)],
                   "quick": ["--quick"]},
        "translate": {"model": [str(ws.text_model)], "sentences": ["hello"]},
        "transcribe": {"paths": [str(ws.wav)], "model": ["--model", model],
                       "output_dir": ["--output-dir", str(out / "transcripts")]},
        "export": {"model": [model], "out": ["--out", str(out / "export")]},
        "tune": {"model": [model], "manifest": [str(ws.manifest)], "out": ["--out", str(out / "tuned.pt")]},
        "train-lm": {"text": [str(ws.text_file)], "tokenizer": ["--tokenizer", model], "out": ["--out", str(out / "lm")]},
        "bench": {"quick": ["--quick"], "data_dir": ["--data-dir", str(data_root)], "work_dir": ["--work-dir", str(out / "bench")],
                  "json": ["--json", str(out / "bench.json")]},
    }


# ---------------------------------------------------------------------------------------------- options
FREE_TEXT = {("translate", "sentences")}  # any text is a valid sentence
DATA_INPUTS = {("features", "paths"), ("transcribe", "paths")}  # audio: a bad file is a per-file failure (status 1)


def verbs() -> dict[str, argparse.ArgumentParser]:
    ap = cli.build_parser()
    sub = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def kind_of(verb: str, action: argparse.Action) -> str | None:
    """How the sweep attacks an argument; None: a flag, or free text. Raises for an argument with no checked
    type (a plain ``type=int`` or a bare string): every value-taking option must say what it accepts."""
    if action.nargs == 0 or (verb, action.dest) in FREE_TEXT:
        return None
    kinds = {usage.positive_int: "positive_int", usage.non_negative_int: "non_negative_int", usage.unit_interval: "unit",
             usage.positive_float: "positive_float", usage.key_value: "key_value", usage.input_file: "input_file",
             usage.non_negative_float: "non_negative_float", usage.finite_float: "float", usage.text_file: "text_file",
             usage.model_file: "model_file", usage.output_dir: "output_dir", usage.output_file: "output_file",
             usage.output_path: "output_path",
             usage.folder: "folder", usage.device: "device"}
    if action.type in kinds:
        return kinds[action.type]
    if action.choices is not None:
        return "choice"
    if (verb, action.dest) == ("prepare", "corpus"):
        return "corpus"
    if (verb, action.dest) == ("transcribe", "paths"):
        return "audio_spec"
    raise AssertionError(f"asr-s2s {verb} {action.option_strings or action.dest}: no checked type (see asr_s2s/usage.py)")


def targets() -> list[tuple[str, argparse.Action, str]]:
    """Every (verb, argument, kind) the sweep covers."""
    out = []
    for verb, parser in verbs().items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            kind = kind_of(verb, action)
            if kind:
                out.append((verb, action, kind))
    return out


def fixed_bad_values(kind: str, action: argparse.Action, ws: Workspace) -> list[tuple[str, int]]:
    """Deterministic bad values for one kind of argument: (value, expected exit status)."""
    missing = str(ws.root / "does" / "not" / "exist.bin")
    wrong_file = str(DEFAULT_MODEL) if action.dest in ("manifest", "config") else str(ws.text_file)
    data = action.dest == "paths"  # features/transcribe audio inputs
    vals = {
        "positive_int": ["0", "-3", "1.5", "abc", "", "1e3"],
        "non_negative_int": ["-1", "x", "0.5"],
        "unit": ["-0.1", "1.5", "nan", "inf", "half", ""],
        "positive_float": ["0", "-1", "nan", "x"],
        "non_negative_float": ["-1", "nan", "x", "inf"],
        "float": ["nan", "x", "inf", ""],
        "text_file": [missing, str(ws.folder)],
        "key_value": ["novalue", "=1", "", " =x"],
        "choice": ["", "nosuch", "ONNX"],
        "corpus": ["nosuch", ""],
        "device": ["gpu", "cuda:x", ""],
        "folder": [str(ws.blocker), str(ws.blocker / "sub")],
        "output_dir": [str(ws.blocker), str(ws.blocker / "sub")],
        "output_file": [str(ws.folder), str(ws.blocker / "x.json")],
        "output_path": [str(ws.blocker / "x"), str(ws.blocker / "x" / "y")],
        "input_file": [missing, str(ws.folder), wrong_file],
        "model_file": [missing, str(ws.folder), str(ws.text_file)],
        "audio_spec": [missing, str(ws.folder), str(ws.text_file)],
    }[kind]
    if kind in ("input_file", "model_file", "text_file", "output_dir", "output_file", "output_path", "folder"):
        vals.append(str(ws.root / "nul\x00byte"))
    if kind in ("input_file", "model_file", "text_file") and ws.unreadable is not None:
        vals.append(str(ws.unreadable))
    status = {v: 1 if data and v == str(ws.text_file) else 2 for v in vals}
    return [(v, status[v]) for v in vals]


def command_line(base: dict[str, dict[str, list[str]]], verb: str, action: argparse.Action | None = None,
                 value: str = "") -> list[str]:
    """The baseline of ``verb`` with ``action``'s argument replaced by ``value`` (added when it had none)."""
    args = dict(base[verb])
    if action is not None:
        args[action.dest] = [action.option_strings[0], value] if action.option_strings else [value]
    positionals = [a.dest for a in verbs()[verb]._actions if not a.option_strings]
    argv = [verb]
    for dest in positionals:
        argv += args.pop(dest, [])
    for rest in args.values():
        argv += rest
    return argv


# ------------------------------------------------------------------------------------------------ running
@dataclass
class Outcome:
    status: int | None
    stdout: str
    stderr: str
    escaped: BaseException | None = None


def run_cli(argv: list[str]) -> Outcome:
    """``asr_s2s.cli.main(argv)`` in-process, capturing stdout/stderr and anything that escapes it."""
    out, err = io.StringIO(), io.StringIO()
    escaped, status = None, None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = cli.main(argv)
        except BaseException as exc:  # noqa: BLE001 - a SystemExit or an exception here is what we look for
            escaped = exc
            err.write("".join(traceback.format_exception(exc)))
    return Outcome(status, out.getvalue(), err.getvalue(), escaped)


def judge(name: str, entry: str, argv: list[str], outcome: Outcome, expect_status: int, tokens: list[str],
          outputs: list[Path] = ()) -> Result:
    """Classify one run: ``error`` when it meets every rule in the module doc, ``crash`` (with the reason) else."""
    lines = [x for x in outcome.stderr.splitlines() if x.strip()]
    errors = [x for x in lines if "error:" in x]
    shown = " ".join(repr(a) if not a or " " in a else a for a in argv)
    problems = []
    if outcome.escaped is not None:
        problems.append(f"{type(outcome.escaped).__name__} escaped main")
    if "Traceback" in outcome.stderr:
        problems.append("traceback on stderr")
    if outcome.status != expect_status:
        problems.append(f"exit status {outcome.status}, expected {expect_status}")
    if len(errors) != 1:
        problems.append(f"{len(errors)} error lines")
    elif expect_status == 2 and lines[-1] != errors[0]:
        problems.append("the error is not the last line")
    if errors and not any(t and t in errors[0] for t in tokens):
        problems.append(f"the error names none of {tokens}")
    made = [str(p) for p in outputs if p.exists()]
    if made:
        problems.append(f"created {made} before refusing")
    if problems:
        return Result(name, entry, "error", "crash", f"asr-s2s {shown}: {'; '.join(problems)}\n{outcome.stderr[-3000:]}")
    return Result(name, entry, "error", "error", errors[0])


def tokens_for(action: argparse.Action, value: str) -> list[str]:
    """What the error line may name to say which argument is at fault."""
    names = list(action.option_strings) + [f"argument {action.metavar or action.dest}"]
    if not action.option_strings:  # a value starting with "-" reads as an option: "arguments are required: NAME"
        names += [action.dest] + ([action.metavar] if action.metavar else [])
    return names + ([value] if len(value.strip()) >= 4 else [])


def run_option_case(base: dict, ws: Workspace, verb: str, action: argparse.Action, value: str, status: int) -> Result:
    argv = command_line(base, verb, action, value)
    name = f"{verb} {action.option_strings[0] if action.option_strings else action.dest}={value!r}"
    return judge(name, f"cli {verb}", argv, run_cli(argv), status, tokens_for(action, value), ws.outputs)


# --------------------------------------------------------------------------------------------- named cases
@dataclass
class NamedCase:
    name: str
    argv: list[str]
    tokens: list[str]  # the error line names one of these
    status: int = 2


def named_cases(ws: Workspace, data_root: Path) -> list[NamedCase]:
    """The issue's cases and their neighbours: each names the command's job, not just a parser rule."""
    never = ws.root / "never"
    model, kor = str(DEFAULT_MODEL), str(data_root / "tatoeba_kor_eng" / "kor.txt")
    empty = ws.root / "empty.jsonl"
    empty.write_text("")
    blank = ws.root / "blank_lines.jsonl"
    blank.write_text("\n\n  \n")
    all_bad = ws.root / "all_bad.jsonl"
    all_bad.write_text(json.dumps({"audio_filepath": str(ws.root / "gone.wav"), "duration": 1.0, "text": "one"}) + "\n"
                       + json.dumps({"audio_filepath": str(ws.wav), "duration": -1, "text": "one"}) + "\n")
    bad_audio = ws.root / "bad_audio.jsonl"
    bad_audio.write_text(json.dumps({"audio_filepath": str(ws.text_file), "duration": 1.0, "text": "one"}) + "\n")
    cases = [
        NamedCase("evaluate: a text file, not a manifest", ["evaluate", model, kor], [f"{kor}: no valid utterance", "is this a manifest?"]),
        NamedCase("evaluate: an empty manifest", ["evaluate", model, str(empty)], [f"{empty}: no valid utterance"]),
        NamedCase("evaluate: only blank lines", ["evaluate", model, str(blank)], [f"{blank}: no valid utterance"]),
        NamedCase("evaluate: every line invalid", ["evaluate", model, str(all_bad), "--json"],
                  [f"{all_bad}: no valid utterance to score: all 2 lines were skipped (bad_duration: 1, missing_audio: 1)"]),
        NamedCase("evaluate: no audio decodable", ["evaluate", model, str(bad_audio)], [f"{bad_audio}: no utterance could be scored"]),
        NamedCase("evaluate: a speech model on sentence pairs", ["evaluate", model, str(ws.tsv)], [f"{model} is a speech model"]),
        NamedCase("evaluate: a text model on an audio manifest", ["evaluate", str(ws.text_model), str(ws.manifest)],
                  [f"{ws.text_model} is a text model"]),
        NamedCase("evaluate: the model file is not a model", ["evaluate", str(ws.text_file), str(ws.manifest)], [str(ws.text_file)]),
        NamedCase("prepare: unknown corpus", ["prepare", "nosuch", "--out", str(never / "p")], ["unknown corpus 'nosuch'"]),
        NamedCase("prepare: unknown --option key", ["prepare", "fsdd", "--option", "nokey=1", "--out", str(never / "p")],
                  ["unknown option 'nokey'"]),
        NamedCase("prepare: --option without a value", ["prepare", "fsdd", "--option", "split", "--out", str(never / "p")],
                  ["'split' is not KEY=VALUE"]),
        NamedCase("prepare: --option value the corpus refuses",
                  ["prepare", "fsdd", "--option", "split=bogus", "--data-dir", str(data_root), "--out", str(never / "p")],
                  ["split must be 'official' or 'speaker'"]),
        NamedCase("prepare: --option of the wrong type", ["prepare", "fsdd", "--option", "force=maybe", "--out", str(never / "p")],
                  ["force='maybe'"]),
        NamedCase("prepare: --option fraction out of range", ["prepare", "an4", "--option", "dev_fraction=2", "--out", str(never / "p")],
                  ["dev_fraction='2'"]),
        NamedCase("translate: a speech model", ["translate", model, "hello"], [f"{model} is a speech model"]),
        NamedCase("translate: --beam 0", ["translate", "--beam", "0", str(ws.text_model), "hello"], ["--beam: 0 is out of range"]),
        NamedCase("translate: --alpha -1", ["translate", "--alpha", "-1", str(ws.text_model), "hello"], ["--alpha"]),
        NamedCase("translate: --length-norm unknown", ["translate", "--length-norm", "log", str(ws.text_model), "hello"],
                  ["--length-norm"]),
        NamedCase("transcribe: --alpha nan", ["transcribe", "--alpha", "nan", str(ws.wav)], ["--alpha"]),
        NamedCase("evaluate: --ctc-weight for a text model", ["evaluate", "--ctc-weight", "0.3", str(ws.text_model), str(ws.tsv)],
                  ["--ctc-weight: for speech models only"]),
        NamedCase("evaluate: --vocabulary for a text model", ["evaluate", "--vocabulary", str(ws.text_file), str(ws.text_model),
                                                              str(ws.tsv)], ["--vocabulary: for speech models only"]),
        NamedCase("transcribe: a text model", ["transcribe", "--model", str(ws.text_model), str(ws.wav)], [f"{ws.text_model} is a text"]),
        NamedCase("transcribe: --beam 0", ["transcribe", "--beam", "0", str(ws.wav)], ["--beam: 0 is out of range"]),
        NamedCase("transcribe: --beam -3", ["transcribe", "--beam", "-3", str(ws.wav)], ["--beam: -3 is out of range"]),
        NamedCase("transcribe: nothing to transcribe", ["transcribe", str(ws.folder)], [f"{ws.folder}: no audio files"]),
        NamedCase("train: unknown --set key", ["train", str(ws.config), "--out", str(never / "t"), "--set", "optim.lrr=1"],
                  ["unknown config keys"]),
        NamedCase("train: --set beam out of range", ["train", str(ws.config), "--out", str(never / "t"), "--set", "eval_beam=0"],
                  ["config eval_beam must be an integer >= 1, got 0"]),
        NamedCase("train: a CTC dev score without a CTC head", ["train", str(ws.config), "--out", str(never / "t"), "--set",
                                                                "model.ctc_weight=0", "eval_ctc_weight=0.5"],
                  ["config eval_ctc_weight 0.5 needs a CTC head"]),
        NamedCase("train: --set size out of range", ["train", str(ws.config), "--out", str(never / "t"), "--set",
                                                     "model.encoder.hidden=-8"], ["config model.encoder.hidden must be"]),
        NamedCase("train: --set weight out of range", ["train", str(ws.config), "--out", str(never / "t"), "--set",
                                                       "teacher_forcing=1.5"], ["config teacher_forcing must be a number in [0, 1]"]),
        NamedCase("train: --set of the wrong type", ["train", str(ws.config), "--out", str(never / "t"), "--set", "epochs=many"],
                  ["config epochs must be an integer"]),
        NamedCase("recipe: --set out of range", ["recipe", "fsdd", "--quick", "--out", str(never / "r"), "--set", "optim.lr=-1"],
                  ["config optim.lr must be a number > 0"]),
        NamedCase("bench: --set out of range", ["bench", "--quick", "--set", "data.max_frames=0"], ["config data.max_frames must be"]),
        NamedCase("train: --set a switch to a word", ["train", str(ws.config), "--out", str(never / "t"), "--set",
                                                       "features.level_norm=maybe"], ["config features.level_norm must be true or false"]),
        NamedCase("train: --set not KEY=VALUE", ["train", str(ws.config), "--out", str(never / "t"), "--set", "epochs"],
                  ["'epochs' is not KEY=VALUE"]),
        NamedCase("train: --out below a file", ["train", str(ws.config), "--out", str(ws.blocker / "exp")],
                  [f"{ws.blocker / 'exp'}: output directory is not writable"]),
        NamedCase("recipe: unknown recipe", ["recipe", "nosuch", "--out", str(never / "r")], ["invalid choice: 'nosuch'"]),
        NamedCase("recipe: unknown --set key", ["recipe", "fsdd", "--quick", "--out", str(never / "r"), "--set", "nokey=1"],
                  ["unknown config keys"]),
        NamedCase("recipe: --train-repeat on a one-corpus recipe", ["recipe", "fsdd", "--quick", "--out", str(never / "r"),
                                                                  "--train-repeat", "fsdd=2"],
                  ["--train-repeat needs a recipe that joins corpora"]),
        NamedCase("recipe: --train-repeat of a corpus the recipe lacks", ["recipe", "default", "--quick", "--out",
                                                                         str(never / "r"), "--train-repeat", "librispeech=2"],
                  ["'librispeech' is not one of its corpora (an4, fsdd, wakeword, alphanumeric)"]),
        NamedCase("recipe: --train-repeat count below one", ["recipe", "default", "--quick", "--out", str(never / "r"),
                                                            "--train-repeat", "an4=0"], ["the count must be a whole number >= 1"]),
        NamedCase("recipe: --train-repeat count not a number", ["recipe", "default", "--quick", "--out", str(never / "r"),
                                                               "--train-repeat", "an4=2.5"], ["the count must be a whole number >= 1"]),
        NamedCase("recipe: --train-repeat count in non-ASCII digits", ["recipe", "default", "--quick", "--out", str(never / "r"),
                                                                      "--train-repeat", "an4=\u00b2"],
                  ["the count must be a whole number >= 1"]),
        NamedCase("export: fp16 to a folder", ["export", model, "--format", "fp16", "--out", str(ws.folder)],
                  [f"{ws.folder}: output file is a folder"]),
        NamedCase("export: a folder export below a file", ["export", model, "--out", str(ws.blocker / "x")],
                  [f"{ws.blocker / 'x'}: cannot be written"]),
        NamedCase("bench: unknown --set key", ["bench", "--quick", "--set", "nokey=1"], ["unknown config keys"]),
        NamedCase("no command, unknown command", ["frobnicate"], ["invalid choice: 'frobnicate'"]),
    ]
    if not Path(kor).exists():
        cases = cases[1:]
    return cases


def run_named_case(case: NamedCase, ws: Workspace) -> Result:
    entry = f"cli {case.argv[0]}" if case.argv[0] in verbs() else "cli"
    return judge(case.name, entry, case.argv, run_cli(case.argv), case.status, case.tokens, ws.outputs)


# ------------------------------------------------------------------------------------------ folder lock
def hold_lock(folder: str, conn) -> None:
    """A second process: take ``folder``'s lock, send its PID, then wait (to be killed, or told to let go)."""
    from asr_s2s import lock

    lock.acquire(folder)
    conn.send(os.getpid())
    conn.recv()


def start_holder(folder: Path):
    """Start a process (spawn: nothing inherited) holding ``folder``; returns (process, pipe) once the lock is
    taken. The caller keeps the pipe: when it is closed the holder's wait ends and it lets go."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=hold_lock, args=(str(folder), child), daemon=True)
    proc.start()
    if not parent.poll(120):  # a blocking wait on the pipe; start-up takes seconds
        proc.kill()
        raise RuntimeError("the lock-holding process did not start")
    assert parent.recv() == proc.pid
    return proc, parent


def run_lock_cases(d: Path, config: Path, data_root: Path) -> list[Result]:
    """A folder held by another process: `train`, `train --resume` and `recipe` on it refuse at once, naming
    the folder and the holder's PID; once the holder is killed (SIGKILL) the folder can be taken again."""
    from asr_s2s import lock

    folder = d / "held_exp"
    proc, _pipe = start_holder(folder)
    results = []
    try:
        want = [f"{folder}: the experiment folder is in use by pid {proc.pid}"]
        for argv in (["train", str(config), "--out", str(folder)], ["train", str(config), "--out", str(folder), "--resume"],
                     ["recipe", "fsdd", "--quick", "--out", str(folder), "--data-dir", str(data_root)]):
            name = f"held folder: {argv[0]}" + (" --resume" if "--resume" in argv else "")
            results.append(judge(name, f"cli {argv[0]}", argv, run_cli(argv), 2, want))
    finally:
        proc.kill()
        proc.join()
    try:
        with lock.folder_lock(folder):
            pass
        results.append(Result("held folder: after kill -9", "lock", "ok", "ok", "the OS released the lock"))
    except lock.FolderLockedError as exc:
        results.append(Result("held folder: after kill -9", "lock", "ok", "crash", f"still locked: {exc}"))
    return results
