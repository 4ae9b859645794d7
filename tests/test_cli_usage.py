"""Every verb refuses bad usage in one clear line (exit 2, no traceback), and evaluation reports only what
it measured. The cases live in ``tests/bad_usage.py``; ``bench/reliability_report.py`` runs the same ones.

- named cases: the issue's command lines (a text file or an empty manifest given to ``evaluate``, an
  unknown corpus, a malformed ``--option``, ``--beam 0``, a model of the wrong kind...);
- every value-taking option of every verb, with fixed bad values of its kind;
- a hypothesis sweep over the same options with generated values (wrong types, out-of-range numbers,
  missing paths, folders where files belong...);
- evaluation with some lines skipped: counted per cause, and a failure unless ``--allow-skips``;
- an internal bug is not dressed up as a usage error: its exception (and traceback) gets out.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bad_usage as U
from asr_s2s import cli
from conftest import data_root


@pytest.fixture(scope="module")
def ws(tmp_path_factory, fsdd_files: list[Path]) -> U.Workspace:
    return U.make_workspace(tmp_path_factory.mktemp("usage"), fsdd_files[0])


@pytest.fixture(scope="module")
def base(ws: U.Workspace) -> dict:
    return U.baseline(ws, data_root())


TARGETS = U.targets()


def _explain(r) -> str:
    return f"{r.case}: {r.detail}"


def test_every_value_option_has_a_checked_type() -> None:
    """New flags must use the checked types of asr_s2s/usage.py (kind_of raises for a plain int or str)."""
    verbs = {v for v, _, _ in TARGETS}
    assert verbs == set(U.verbs())
    assert ("transcribe", "--beam") in {(v, a.option_strings[0]) for v, a, _ in TARGETS if a.option_strings}


def test_baselines_parse(ws: U.Workspace, base: dict) -> None:
    """The sweep's baseline command lines are valid, so that each case's only fault is the value it puts in."""
    parser = cli.build_parser()
    for verb in base:
        assert parser.parse_args(U.command_line(base, verb)).command == verb


def test_types_accept_what_they_should(tmp_path: Path) -> None:
    from asr_s2s import usage

    assert usage.positive_int("1") == 1 and usage.positive_int("+7") == 7 and usage.non_negative_int("0") == 0
    assert usage.unit_interval("0") == 0.0 and usage.unit_interval("1") == 1.0 and usage.unit_interval("0.25") == 0.25
    assert usage.positive_float("1e-3") == 1e-3 and usage.int_range(7, 21)("17") == 17
    assert usage.key_value("optim.lr=3e-4") == "optim.lr=3e-4" and usage.key_value("data.dev=") == "data.dev="
    assert usage.split_key_values(["a=1", " b =x=y"]) == {"a": "1", "b": "x=y"}
    assert usage.device("cuda:1") == "cuda:1"
    assert usage.output_dir(str(tmp_path / "new" / "deeper")) == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # checked, not created
    assert usage.output_dir(str(tmp_path)) == tmp_path
    assert usage.output_file(str(tmp_path / "new" / "x.json")) == tmp_path / "new" / "x.json"
    assert usage.output_path(str(tmp_path / "a" / "b")) == tmp_path / "a" / "b"
    assert usage.folder(str(tmp_path / "data")) == tmp_path / "data"
    f = tmp_path / "f.txt"
    f.write_text("x")
    assert usage.input_file(str(f)) == f and usage.model_file("default") == Path("default")
    with pytest.raises(Exception, match="out of range"):
        usage.int_range(7, 21)("6")


def test_named_cases(ws: U.Workspace) -> None:
    results = [U.run_named_case(c, ws) for c in U.named_cases(ws, data_root())]
    bad = [r for r in results if not r.passed]
    assert len(results) >= 33 and not bad, "\n\n".join(_explain(r) for r in bad)


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: f"{t[0]}:{t[1].option_strings[0] if t[1].option_strings else t[1].dest}")
def test_fixed_bad_values(target, ws: U.Workspace, base: dict) -> None:
    verb, action, kind = target
    for value, status in U.fixed_bad_values(kind, action, ws):
        r = U.run_option_case(base, ws, verb, action, value, status)
        assert r.passed, _explain(r)


def _not_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return True
    return False


def _not_finite(text: str) -> bool:
    try:
        return not math.isfinite(float(text))
    except ValueError:
        return True


def _not_unit(text: str) -> bool:
    try:
        return not 0.0 <= float(text) <= 1.0
    except ValueError:
        return True


def bad_value(kind: str, action, ws: U.Workspace) -> st.SearchStrategy[str]:
    """Generated bad values for one kind of argument."""
    name = st.text("abcdefghijklmnopqrstuvwxyz0123456789_.", min_size=1, max_size=12)
    junk = st.text(max_size=20)
    if kind == "positive_int":
        return st.one_of(st.integers(max_value=0).map(str), junk.filter(_not_int),
                         st.floats(allow_nan=True).map(repr).filter(_not_int))
    if kind == "non_negative_int":
        return st.one_of(st.integers(max_value=-1).map(str), junk.filter(_not_int))
    if kind == "unit":
        return st.one_of(st.floats().filter(lambda x: math.isnan(x) or not 0 <= x <= 1).map(repr), junk.filter(_not_unit))
    if kind == "non_negative_float":
        return st.one_of(st.floats(max_value=-1e-9).map(repr), junk.filter(_not_finite))
    if kind == "float":
        return junk.filter(_not_finite)
    if kind == "positive_float":
        return st.one_of(st.floats(max_value=0).map(repr), junk.filter(lambda t: _not_unit(t) and _not_int(t)))
    if kind == "key_value":
        return junk.filter(lambda t: "=" not in t or not t.partition("=")[0].strip())
    if kind in ("choice", "corpus", "device"):
        choices = set(action.choices or []) | {"fsdd", "an4", "librispeech", "commonvoice", "tatoeba", "cpu", "mps"}
        return junk.filter(lambda t: t not in choices and not (kind == "device" and t.startswith("cuda")))
    # Paths: generated missing names (never a glob: a file may match one) or names below a regular file, and the
    # fixed wrong kinds (a folder for a file, a text file for a model, a model for a manifest, unreadable...).
    fixed = st.sampled_from([v for v, _ in U.fixed_bad_values(kind, action, ws)])
    if kind in ("input_file", "model_file", "text_file", "audio_spec"):
        return st.one_of(name.filter(lambda t: t != "default").map(lambda t: str(ws.root / "missing" / t)), fixed)
    if kind in ("output_dir", "folder", "output_path"):
        return st.one_of(name.map(lambda t: str(ws.blocker / t)), fixed)
    if kind == "output_file":
        return st.one_of(name.map(lambda t: str(ws.blocker / t / "out.json")), fixed)
    raise AssertionError(kind)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.filter_too_much], database=None)
@pytest.mark.parametrize("target", TARGETS, ids=lambda t: f"{t[0]}:{t[1].option_strings[0] if t[1].option_strings else t[1].dest}")
@given(data=st.data())
def test_generated_bad_values(target, data, ws: U.Workspace, base: dict) -> None:
    verb, action, kind = target
    value = data.draw(bad_value(kind, action, ws), label=action.dest)
    data_file = (verb, action.dest) in U.DATA_INPUTS and value == str(ws.text_file)  # a per-file audio failure
    r = U.run_option_case(base, ws, verb, action, value, 1 if data_file else 2)
    assert r.passed, _explain(r)


# ------------------------------------------------------------------------------------------ evaluation
@pytest.fixture(scope="module")
def partly_bad(ws: U.Workspace, fsdd_files: list[Path]) -> Path:
    """Three good utterances, a line that is not JSON, a missing file and a file that is not audio."""
    import soundfile as sf

    words = "zero one two three four five six seven eight nine".split()
    lines = [json.dumps({"audio_filepath": str(f), "duration": sf.info(str(f)).duration, "text": words[int(f.name[0])]})
             for f in fsdd_files[:3]]
    lines += ["not json", json.dumps({"audio_filepath": str(ws.root / "gone.wav"), "duration": 1.0, "text": "one"}),
              json.dumps({"audio_filepath": str(ws.text_file), "duration": 1.0, "text": "one"})]
    p = ws.root / "partly_bad.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_evaluate_counts_skips_by_cause_and_fails_without_allow_skips(partly_bad: Path) -> None:
    out = U.run_cli(["evaluate", str(U.DEFAULT_MODEL), str(partly_bad), "--json"])
    assert out.status == 1 and out.escaped is None, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])  # stdout is the JSON object alone
    assert res["num_utterances"] == 3 and res["manifest_lines"] == 6 and res["skipped"] == 3
    assert res["skipped_by_cause"] == {"invalid_json": 1, "missing_audio": 1, "unreadable_audio": 1}
    assert 0.0 <= res["wer"] <= 1.0 and res["rtf"] > 0
    err = [x for x in out.stderr.splitlines() if "error:" in x]
    assert len(err) == 1 and f"{partly_bad}: 3 of 6 lines skipped" in err[0] and "--allow-skips" in err[0]

    ok = U.run_cli(["evaluate", str(U.DEFAULT_MODEL), str(partly_bad), "--json", "--allow-skips"])
    assert ok.status == 0 and "warning:" in ok.stderr and "error:" not in ok.stderr
    assert json.loads(ok.stdout.strip().splitlines()[-1])["skipped_by_cause"] == res["skipped_by_cause"]
    # A tolerated share: half the lines skipped passes a limit of 0.5, not one of 0.4.
    assert U.run_cli(["evaluate", str(U.DEFAULT_MODEL), str(partly_bad), "--max-skip-share", "0.5"]).status == 0
    text = U.run_cli(["evaluate", str(U.DEFAULT_MODEL), str(partly_bad), "--max-skip-share", "0.4"])
    assert text.status == 1
    assert "skipped_by_cause: invalid_json 1, missing_audio 1, unreadable_audio 1" in text.stdout


def test_scores_over_nothing_are_not_numbers() -> None:
    from asr_s2s.evaluate import format_result, score

    s = score([""], ["some words"])
    assert s["wer"] is None and s["cer"] is None and s["reference_words"] == 0
    assert "n/a" in "\n".join(format_result({"wer": None, "rtf": None}))


def test_evaluate_split_refuses_an_empty_tsv(ws: U.Workspace) -> None:
    from asr_s2s.evaluate import EvaluationError
    from asr_s2s.recipes import evaluate_split

    not_pairs = ws.root / "not_pairs.tsv"
    not_pairs.write_text("just one column\nand another\n")
    with pytest.raises(EvaluationError, match=rf"{not_pairs}: no valid sentence pair to score: line 1 is not a source<TAB>target"):
        evaluate_split(ws.text_model, not_pairs, None, text=True)
    res = evaluate_split(ws.text_model, ws.tsv, None, text=True)
    assert res["num_sentences"] == 1 and res["skipped"] == 0 and res["manifest_lines"] == 1


# ------------------------------------------------------------------------------------ bugs stay bugs
def test_an_internal_bug_keeps_its_traceback(monkeypatch, ws: U.Workspace) -> None:
    """A command that fails with an exception that is not a usage error: main lets it out (with its
    traceback), instead of a one-line 'error:' that would hide the bug."""

    def broken(args) -> int:
        return {}["a bug"]

    monkeypatch.setattr(cli, "_cmd_translate", broken)
    out = U.run_cli(["translate", str(ws.text_model), "hello"])
    assert isinstance(out.escaped, KeyError) and "Traceback" in out.stderr and out.status is None


def test_help_and_version_exit_0() -> None:
    for argv in (["--help"], ["evaluate", "--help"], ["--version"]):
        out = U.run_cli(argv)
        assert isinstance(out.escaped, SystemExit) and out.escaped.code == 0, argv
    assert cli.main([]) == 0


def test_training_with_an_undecodable_dev_set_keeps_no_fake_best(tmp_path: Path, fsdd_files: list[Path]) -> None:
    """Dev audio that all fails to load used to score WER 0.0 and be kept as the best epoch; now there is
    no dev score at all (the final model is the last weights)."""
    import bad_inputs as B
    from asr_s2s.checkpoint import load_checkpoint
    from asr_s2s.manifest import write_manifest
    from asr_s2s.train import train

    train_m = tmp_path / "train.jsonl"
    write_manifest(train_m, B.fsdd_entries(fsdd_files[:6]))
    broken = B.make_truncated(tmp_path)
    dev_m = tmp_path / "dev.jsonl"
    dev_m.write_text(json.dumps({"audio_filepath": str(broken), "duration": 1.0, "text": "one", "id": "b"}) + "\n")
    cfg = B.training_config(train_m, epochs=1, max_steps=2)
    cfg.data.dev = str(dev_m)
    model = train(cfg, tmp_path / "exp", quiet=True)
    state = load_checkpoint(tmp_path / "exp" / "checkpoints" / "last.pt")["state"]
    events = [json.loads(x) for x in (tmp_path / "exp" / "metrics.jsonl").read_text().splitlines()]
    assert model.is_file() and state["best"] is None and not [e for e in events if e.get("event") == "epoch"]
