"""Translation decoding: DecodeOptions travel from `translate`, `evaluate_pairs` and the CLI to search; beam 1 is
greedy decoding, byte for byte; a text model's recommended decoding (tuned on dev by the text recipes) round-trips
through its file and is what `translate` uses unless told otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from asr_s2s import decoding
from asr_s2s.decoding import DecodeOptions
from asr_s2s.model import ASRModel, load_model
from asr_s2s.text import CharTokenizer
from s2s_helpers import TEXT_PAIRS, pad_ids, tiny_config
import bad_usage as U

SOURCES = [s for s, _ in TEXT_PAIRS] + ["the dog", "red tea", ""]  # three it never saw (one empty)
# Scored pairs with two sources it never saw, where the beam and the normalisation change the output.
PAIRS = TEXT_PAIRS + [("the dog", "le chien"), ("red tea", "the rouge")]
NORMS = [("none", 1.0), ("length", 1.0), ("gnmt", 0.6), ("gnmt", 1.0)]


@pytest.fixture(scope="module")
def model() -> ASRModel:
    """A char-level GRU/dot text model trained 150 updates on the eight made-up pairs (mostly right, not all)."""
    src_tok = CharTokenizer.build([s for s, _ in TEXT_PAIRS])
    tgt_tok = CharTokenizer.build([t for _, t in TEXT_PAIRS])
    torch.manual_seed(0)
    cfg = tiny_config("gru", "dot", tgt_tok.vocab_size, text_vocab=src_tok.vocab_size, hidden=32)
    m = ASRModel(cfg, tgt_tok, None, src_tokenizer=src_tok)
    x, xl = pad_ids([src_tok.encode(s) for s, _ in TEXT_PAIRS])
    y, yl = pad_ids([tgt_tok.encode(t) for _, t in TEXT_PAIRS])
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(150):
        m.train()
        loss = m.loss(x, xl, y, yl)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval()


@pytest.fixture()
def plain(model: ASRModel):
    """The model with no recommended decoding, whatever a test set before."""
    model.set_recommended_decoding(None)
    yield model
    model.set_recommended_decoding(None)


def spy(monkeypatch) -> list[tuple[str, dict]]:
    """Record which search decode_batch calls, with its keyword arguments."""
    calls: list[tuple[str, dict]] = []
    for name in ("greedy_search", "beam_search"):
        real = getattr(decoding, name)

        def wrapped(*args, _real=real, _name=name, **kw):
            calls.append((_name, kw))
            return _real(*args, **kw)

        monkeypatch.setattr(decoding, name, wrapped)
    return calls


def old_greedy(model: ASRModel, sentences: list[str]) -> list[str]:
    """What `translate` did before it took options: `decode(beam=1)` per batch (that path is unchanged)."""
    from asr_s2s.text import UNK

    ids = [torch.tensor(model.src_tokenizer.encode(s) or [UNK]) for s in sentences]
    lens = torch.tensor([len(x) for x in ids])
    src = torch.nn.utils.rnn.pad_sequence(ids, batch_first=True)
    return [model.tokenizer.decode(t) for t in model.decode(src, lens, beam=1).tokens]


# ------------------------------------------------------------------------------------------- the API
def test_greedy_is_unchanged(plain: ASRModel) -> None:
    want = old_greedy(plain, SOURCES)
    assert plain.translate(SOURCES) == want
    assert plain.translate(SOURCES, beam=1) == want
    assert plain.translate(SOURCES, batch_size=3) == want
    assert sum(h == t for h, (_, t) in zip(want, TEXT_PAIRS)) >= 4  # trained enough for the search to matter


@pytest.mark.parametrize("norm,alpha", NORMS)
def test_beam_one_is_greedy_whatever_the_normalisation(plain: ASRModel, norm: str, alpha: float) -> None:
    want = plain.translate(SOURCES)
    assert plain.translate(SOURCES, options=DecodeOptions(beam=1, length_norm=norm, alpha=alpha)) == want
    # The beam search itself at width 1 (not the greedy shortcut decode_batch takes) finds the same tokens.
    ids = [torch.tensor(plain.src_tokenizer.encode(s) or [3]) for s in SOURCES]
    src, lens = torch.nn.utils.rnn.pad_sequence(ids, batch_first=True), torch.tensor([len(x) for x in ids])
    g = plain.seq2seq.greedy(src, lens, length_norm=norm, alpha=alpha)
    b = plain.seq2seq.beam_search(src, lens, beam=1, length_norm=norm, alpha=alpha)
    assert g.tokens == b.tokens


def test_options_travel_to_search(plain: ASRModel, monkeypatch) -> None:
    calls = spy(monkeypatch)
    opts = DecodeOptions(beam=4, length_norm="gnmt", alpha=0.6, length_bonus=0.5)
    plain.translate(SOURCES[:3], options=opts)
    assert [c[0] for c in calls] == ["beam_search"]
    kw = calls[0][1]
    assert (kw["beam"], kw["length_norm"], kw["alpha"], kw["length_bonus"]) == (4, "gnmt", 0.6, 0.5)
    calls.clear()
    plain.translate(SOURCES[:3], beam=8, length_norm="length", alpha=0.8)  # keywords build the options too
    assert [c[0] for c in calls] == ["beam_search"]
    assert (calls[0][1]["beam"], calls[0][1]["length_norm"], calls[0][1]["alpha"]) == (8, "length", 0.8)
    calls.clear()
    plain.translate(SOURCES[:3])
    assert [c[0] for c in calls] == ["greedy_search"]


def test_recommended_decoding_is_used_unless_told_otherwise(plain: ASRModel, monkeypatch) -> None:
    from asr_s2s.evaluate import evaluate_pairs

    rec = DecodeOptions(beam=4, length_norm="gnmt", alpha=0.6)
    want = plain.translate(SOURCES, options=rec)
    greedy = plain.translate(SOURCES)
    assert want != greedy  # the test below can tell the two apart
    plain.set_recommended_decoding(rec)
    calls = spy(monkeypatch)
    assert plain.translate(SOURCES) == want
    assert calls[-1][0] == "beam_search" and calls[-1][1]["alpha"] == 0.6
    assert plain.translate(SOURCES, beam=1) == greedy  # a beam given: plain defaults plus that beam
    assert plain.translate(SOURCES, options=DecodeOptions()) == greedy
    assert evaluate_pairs(plain, PAIRS)["hypotheses"] == want[: len(PAIRS)]
    assert evaluate_pairs(plain, PAIRS, beam=1)["hypotheses"] == greedy[: len(PAIRS)]


def test_recommended_decoding_round_trips_through_the_model_file(plain: ASRModel, tmp_path: Path) -> None:
    rec = DecodeOptions(beam=8, length_norm="gnmt", alpha=1.0, length_bonus=0.25)
    want = plain.translate(SOURCES, options=rec)
    plain.set_recommended_decoding(rec)
    plain.save(tmp_path / "m.pt")
    again = load_model(tmp_path / "m.pt")
    assert again.recommended_decoding == rec
    assert again.translate(SOURCES) == want
    plain.set_recommended_decoding(None)
    plain.save(tmp_path / "plain.pt")
    assert load_model(tmp_path / "plain.pt").recommended_decoding == DecodeOptions()


# ------------------------------------------------------------------------------------------- tuning
def test_tune_translation_tries_the_grid_and_keeps_the_best(plain: ASRModel) -> None:
    from asr_s2s.tune import TEXT_NORMS, text_settings, tune_translation

    settings = text_settings()
    assert settings[0] == DecodeOptions()  # greedy first: it wins ties
    assert len(settings) == 1 + 2 * len(TEXT_NORMS) and {o.beam for o in settings} == {1, 4, 8}
    lines: list[str] = []
    res = tune_translation(plain, PAIRS, log=lines.append)
    assert len(res.rows) == len(settings) == len(lines)
    top = max(r["bleu"] for r in res.rows)
    assert res.bleu == top and res.best in settings
    first = next(r for r in res.rows if (r["bleu"], r["chrf"]) == (res.bleu, res.chrf))
    assert (first["beam"], first["length_norm"], first["alpha"]) == (res.best.beam, res.best.length_norm, res.best.alpha)
    assert res.table().count("\n") == 2 + len(settings)


def test_text_recipe_stage_writes_the_table_and_records_the_choice(plain: ASRModel, tmp_path: Path) -> None:
    from asr_s2s.recipes import text_decoding_stage

    model_path = tmp_path / "model.pt"
    plain.save(model_path, meta={"step": 150})
    dev = tmp_path / "dev.tsv"
    dev.write_text("".join(f"{s}\t{t}\n" for s, t in TEXT_PAIRS * 2), encoding="utf-8")
    best = text_decoding_stage("tiny", tmp_path, model_path, {"dev": dev}, max_pairs=len(TEXT_PAIRS))
    assert "first 8 pairs" in (tmp_path / "tuning.md").read_text()
    tuned = load_model(model_path)
    assert tuned.recommended_decoding == best and tuned.meta == {"step": 150}
    (tmp_path / "tuning.md").unlink()
    assert text_decoding_stage("tiny", tmp_path, model_path, {"dev": dev}) == best  # carried: not tuned again
    assert not (tmp_path / "tuning.md").exists()


# ------------------------------------------------------------------------------------------- the CLI
@pytest.fixture()
def model_file(plain: ASRModel, tmp_path: Path) -> Path:
    plain.set_recommended_decoding(DecodeOptions(beam=4, length_norm="gnmt", alpha=0.6))
    plain.save(tmp_path / "rec.pt")
    return tmp_path / "rec.pt"


def test_translate_flags(plain: ASRModel, model_file: Path) -> None:
    out = lambda *argv: U.run_cli(["translate", *argv, str(model_file), *SOURCES[:-1]])  # noqa: E731
    rec = out()
    assert rec.status == 0 and rec.stdout.splitlines() == plain.translate(SOURCES[:-1])
    plain.set_recommended_decoding(None)
    greedy = plain.translate(SOURCES[:-1])
    assert out("--decoding", "plain").stdout.splitlines() == greedy
    assert out("--beam", "1").stdout.splitlines() == greedy
    flags = out("--beam", "8", "--length-norm", "length", "--alpha", "0.8", "--length-bonus", "0.5")
    assert flags.status == 0
    assert flags.stdout.splitlines() == plain.translate(SOURCES[:-1], beam=8, length_norm="length", alpha=0.8,
                                                        length_bonus=0.5)


def test_evaluate_flags_on_sentence_pairs(plain: ASRModel, model_file: Path, tmp_path: Path) -> None:
    import json

    from asr_s2s.evaluate import evaluate_pairs

    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("".join(f"{s}\t{t}\n" for s, t in PAIRS), encoding="utf-8")
    run = lambda *flags: json.loads(U.run_cli(["evaluate", *flags, "--json", str(model_file), str(tsv)]).stdout)  # noqa: E731
    rec = evaluate_pairs(plain, PAIRS)  # the fixture set the recommended decoding
    plain.set_recommended_decoding(None)
    greedy = evaluate_pairs(plain, PAIRS)
    wide = evaluate_pairs(plain, PAIRS, options=DecodeOptions(beam=8, length_norm="none"))
    assert len({rec["chrf"], greedy["chrf"], wide["chrf"]}) == 3  # three decodings the scores tell apart
    assert run()["chrf"] == rec["chrf"]
    assert run("--decoding", "plain")["chrf"] == greedy["chrf"]
    assert run("--beam", "8", "--length-norm", "none")["chrf"] == wide["chrf"]


@pytest.mark.parametrize("flags,named", [(["--ctc-weight", "0.3"], "--ctc-weight"), (["--lm-weight", "0.2"], "--lm-weight")])
def test_speech_only_flags_are_refused_for_text_models(model_file: Path, tmp_path: Path, flags: list[str],
                                                       named: str) -> None:
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("the cat\tle chat\n", encoding="utf-8")
    for argv in (["evaluate", *flags, str(model_file), str(tsv)],):
        res = U.judge("text model", "cli", argv, U.run_cli(argv), 2, [named])
        assert res.outcome == "error", res.detail
    bad = U.run_cli(["translate", "--alpha", "-1", str(model_file), "the cat"])
    assert bad.status == 2 and "--alpha" in bad.stderr
