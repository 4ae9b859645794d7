"""The digit-string corpus (asr_s2s/corpora/digit_strings.py), the bootstrap helper (asr_s2s/bootstrap.py) and the
seed experiment's pieces that need no training (asr_s2s/length_experiment.py).

The strings are built from the real FSDD clips shipped in tests/data (jackson and theo, recordings 0-1 of every
digit), so nothing here needs $ASR_S2S_DATA."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import FIXTURES

from asr_s2s.bootstrap import bootstrap_ratio, bootstrap_ratio_difference
from asr_s2s.corpora import corpus_options, prepare_corpus
from asr_s2s.corpora import digit_strings as ds
from asr_s2s.corpora.fsdd import DIGITS

CLIPS_DIR = FIXTURES / "fsdd" / "recordings"
SR = ds.SAMPLE_RATE


@pytest.fixture(scope="module")
def clips() -> list[ds.Clip]:
    found, bad = ds.load_clips(sorted(CLIPS_DIR.glob("*.wav")))
    assert bad == 0 and len(found) == 40
    return found


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.asarray(x, dtype=np.float64) ** 2)))


# ------------------------------------------------------------------------------------------- the builder
def test_lengths_in_range_and_counts(clips: list[ds.Clip]) -> None:
    strings = ds.build_split(clips, "test", 3, 2, 7, seed=1)
    assert [len(s.digits) for s in strings] == [n for n in range(2, 8) for _ in range(3)]
    assert len({s.id for s in strings}) == len(strings)


def test_labels_match_the_joined_clips(clips: list[ds.Clip]) -> None:
    by_id = {c.id: c for c in clips}
    for s in ds.build_split(clips, "train", 2, 1, 6, seed=3):
        assert s.text == " ".join(DIGITS[d] for d in s.digits)
        assert [by_id[i].digit for i in s.sources] == list(s.digits)
        assert {by_id[i].speaker for i in s.sources} == {s.speaker}  # one speaker per string
        for (start, end), src in zip(s.spans, s.sources):
            # Each span is that clip plus the faint noise floor (and nothing else): the residual is noise-sized.
            assert end - start == len(by_id[src].wave)
            residual = s.wave[start:end] - np.clip(by_id[src].wave, -1, 1)
            assert _rms(residual) < 3e-3


def test_pauses_present_and_quiet_but_not_digital_silence(clips: list[ds.Clip]) -> None:
    strings = ds.build_split(clips, "test", 4, 2, 5, seed=7, pause_min=0.08, pause_max=0.3)
    for s in strings:
        gaps = [(a_end, b_start) for (_, a_end), (b_start, _) in zip(s.spans, s.spans[1:])]
        assert len(gaps) == len(s.digits) - 1
        for a, b in gaps:
            assert 0.08 * SR - 1 <= b - a <= 0.3 * SR + 1
            gap = s.wave[a:b]
            # The noise floor (-60 dBFS RMS) alone: well under the quietest clip here (jackson's, about -43 dBFS).
            assert _rms(gap) == pytest.approx(1e-3, rel=0.3)
            assert _rms(gap) < 0.3 * min(_rms(s.wave[x:y]) for x, y in s.spans)
    pauses = [b - a for s in strings for (_, a), (b, _) in zip(s.spans, s.spans[1:])]
    assert len(set(pauses)) > len(pauses) // 2  # random, not one fixed gap


def test_trim_silence_cuts_only_the_quiet_ends() -> None:
    tone = 0.5 * np.sin(np.arange(SR // 2) * 2 * np.pi * 440 / SR).astype(np.float32)
    wave = np.concatenate([np.zeros(SR // 4, np.float32), tone, np.zeros(SR // 4, np.float32)])
    out = ds.trim_silence(wave)
    margin = int(0.02 * SR)
    assert len(tone) <= len(out) <= len(tone) + 2 * margin + 2 * SR // 100


def test_same_seed_same_strings_other_seed_other_strings(clips: list[ds.Clip]) -> None:
    a = ds.build_split(clips, "test", 2, 1, 8, seed=5)
    b = ds.build_split(list(reversed(clips)), "test", 2, 1, 8, seed=5)  # the pool's order does not matter
    c = ds.build_split(clips, "test", 2, 1, 8, seed=6)
    assert all(x.wave.tobytes() == y.wave.tobytes() and x.sources == y.sources for x, y in zip(a, b))
    assert sum(x.sources != z.sources for x, z in zip(a, c)) > len(a) // 2


# ------------------------------------------------------------------------------------------- prepare
def _prepare(out: Path, **opts) -> dict[str, Path]:
    base = {"recordings": CLIPS_DIR, "min_len": 1, "max_len": 6, "train_per_length": 2, "dev_per_length": 1,
            "test_per_length": 2}
    return ds.prepare(Path("unused"), out, **{**base, **opts})


def _snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_prepare_is_byte_identical_per_seed(tmp_path: Path) -> None:
    out = tmp_path / "a"
    paths = _prepare(out, split="speaker", test_speakers=["theo"], dev_speakers=[])
    assert set(paths) == {"train", "test"}  # no recordings left for dev: skipped, not an error
    first = _snapshot(out)
    assert sum(k.endswith(".wav") for k in first) == 2 * 6 + 2 * 6
    _prepare(out, split="speaker", test_speakers=["theo"], dev_speakers=[], force=True)
    assert _snapshot(out) == first
    other = tmp_path / "b"
    _prepare(other, split="speaker", test_speakers=["theo"], dev_speakers=[], seed=1)
    again = _snapshot(other)
    assert again.keys() == first.keys()
    assert sum(first[k] != again[k] for k in first if k.endswith(".wav")) > len(first) // 2


def test_prepare_manifests_and_speaker_split(tmp_path: Path) -> None:
    paths = _prepare(tmp_path, split="speaker", test_speakers=["theo"], dev_speakers=[])
    rows = {s: [json.loads(x) for x in p.read_text().splitlines()] for s, p in paths.items()}
    assert {r["speaker"] for r in rows["train"]} == {"jackson"} and {r["speaker"] for r in rows["test"]} == {"theo"}
    for split, rs in rows.items():
        for r in rs:
            assert Path(r["audio_filepath"]).is_absolute()
            info = sf.info(r["audio_filepath"])
            assert info.samplerate == SR and info.channels == 1
            assert r["duration"] == pytest.approx(info.frames / SR, abs=1e-4)
            assert len(r["text"].split()) == r["num_digits"] == len(r["sources"])
            assert all(s.split("_")[1] == r["speaker"] for s in r["sources"])
    # The official split of these clips (recordings 0-1 only) has test recordings alone: train and dev skip.
    official = _prepare(tmp_path / "official")
    assert set(official) == {"test"}
    srcs = [s for x in official["test"].read_text().splitlines() for s in json.loads(x)["sources"]]
    assert all(int(s.split("_")[2]) < 5 for s in srcs)


def test_prepare_is_idempotent_and_option_changes_redo(tmp_path: Path) -> None:
    paths = _prepare(tmp_path, split="speaker", test_speakers=["theo"], dev_speakers=[])
    wav = Path(json.loads(paths["test"].read_text().splitlines()[0])["audio_filepath"])
    wav.write_bytes(b"touched")  # a re-run with the same options must not rebuild (it returns the stamp's files)
    assert _prepare(tmp_path, split="speaker", test_speakers=["theo"], dev_speakers=[]) == paths
    assert wav.read_bytes() == b"touched"
    _prepare(tmp_path, split="speaker", test_speakers=["theo"], dev_speakers=[], seed=9)
    assert wav.read_bytes() != b"touched"


def test_bad_recordings_are_counted_and_skipped(tmp_path: Path, caplog) -> None:
    rec = tmp_path / "recordings"
    shutil.copytree(CLIPS_DIR, rec)
    (rec / "3_jackson_7.wav").write_bytes(b"RIFF\x00\x00not audio at all")
    sf.write(str(rec / "4_jackson_8.wav"), np.zeros(800, np.float32), SR)  # silent
    (rec / "not_a_digit.wav").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="asr_s2s.corpora.digit_strings"):
        paths = _prepare(tmp_path / "out", recordings=rec, split="speaker", test_speakers=["theo"], dev_speakers=[])
    assert "3 of 43 recordings skipped" in caplog.text
    srcs = {s for p in paths.values() for x in p.read_text().splitlines() for s in json.loads(x)["sources"]}
    assert not srcs & {"3_jackson_7", "4_jackson_8"}


def test_prepare_refuses_bad_options(tmp_path: Path) -> None:
    for bad in ({"split": "bogus"}, {"min_len": 0}, {"min_len": 5, "max_len": 4}, {"pause_min": 0.5, "pause_max": 0.1},
                {"test_per_length": -1}):
        with pytest.raises(ValueError, match="digit_strings"):
            _prepare(tmp_path, **bad)


def test_registered_and_cli_options_typed(tmp_path: Path) -> None:
    opts = corpus_options("digit_strings", {"recordings": str(CLIPS_DIR), "max_len": "3", "test_per_length": "1",
                                            "split": "speaker", "dev_speakers": "", "test_speakers": "theo",
                                            "pause_max": "0.2", "train_per_length": "1", "dev_per_length": "0"})
    assert opts["max_len"] == 3 and opts["pause_max"] == 0.2 and opts["dev_speakers"] == [] and opts["test_speakers"] == ["theo"]
    paths = prepare_corpus("digit_strings", None, tmp_path, **opts)
    assert set(paths) == {"train", "test"}
    from asr_s2s import cli

    assert cli.main(["prepare", "digit_strings", "--out", str(tmp_path / "cli"), "--option", f"recordings={CLIPS_DIR}",
                     "--option", "max_len=2", "--option", "split=speaker", "--option", "dev_speakers=",
                     "--option", "train_per_length=1", "--option", "test_per_length=1"]) == 0
    assert (tmp_path / "cli" / "test.jsonl").exists()


# ------------------------------------------------------------------------------------------- bootstrap
def test_bootstrap_contains_the_point_and_is_seeded() -> None:
    rng = np.random.default_rng(0)
    words = rng.integers(1, 17, size=60)
    errors = rng.binomial(words, 0.2)
    iv = bootstrap_ratio(errors, words, seed=3)
    assert iv.point == pytest.approx(errors.sum() / words.sum())
    assert iv.low <= iv.point <= iv.high and iv.low < iv.high
    assert bootstrap_ratio(errors, words, seed=3) == iv
    assert bootstrap_ratio(errors, words, seed=4) != iv
    assert bootstrap_ratio(np.zeros(5), np.ones(5)) .high == 0.0  # no errors: no spread


def test_bootstrap_narrows_with_more_data() -> None:
    rng = np.random.default_rng(1)
    widths = []
    for n in (20, 80, 320):
        words = rng.integers(1, 17, size=n)
        errors = rng.binomial(words, 0.3)
        iv = bootstrap_ratio(errors, words, seed=0)
        widths.append(iv.high - iv.low)
    assert widths[0] > widths[1] > widths[2]
    assert widths[0] / widths[2] > 2.5  # about sqrt(16) = 4 in theory


def test_bootstrap_difference_is_paired() -> None:
    rng = np.random.default_rng(2)
    words = rng.integers(8, 17, size=50)
    a = rng.binomial(words, 0.5)
    same = bootstrap_ratio_difference(a, a, words)
    assert same.point == same.low == same.high == 0.0
    b = rng.binomial(words, 0.1)
    d = bootstrap_ratio_difference(a, b, words, seed=1)
    assert d.low > 0 and d.point == pytest.approx((a.sum() - b.sum()) / words.sum())
    with pytest.raises(ValueError):
        bootstrap_ratio([1, 2], [3])


# ------------------------------------------------------------------------------------------- the experiment
def test_matched_configs_match_parameters() -> None:
    from asr_s2s.config import load_config
    from asr_s2s.length_experiment import count_parameters, matched_configs
    from asr_s2s.recipes import CONFIG_DIR

    cfg = load_config(CONFIG_DIR / "digit_strings.yaml")
    configs = matched_configs(cfg)
    assert sorted(configs) == sorted(f"{c}_{a}" for c in ("rnn", "lstm", "gru") for a in ("none", "dot"))
    counts = {k: count_parameters(c.model, cfg.data.vocab_size, cfg.features.n_mels) for k, c in configs.items()}
    ref = counts["lstm_dot"]
    assert configs["lstm_dot"].model.encoder.hidden == cfg.model.encoder.hidden
    assert all(abs(n - ref) / ref < 0.01 for n in counts.values()), counts
    assert configs["rnn_none"].model.decoder.attention == "none" and configs["gru_dot"].model.encoder.cell == "gru"


def test_subset_manifest_keeps_the_lengths(tmp_path: Path) -> None:
    from asr_s2s.length_experiment import subset_manifest

    src = tmp_path / "all.jsonl"
    src.write_text("".join(json.dumps({"id": str(n), "num_digits": n}) + "\n" for n in range(1, 17)))
    dst = subset_manifest(src, tmp_path / "short.jsonl", 1, 8)
    assert [json.loads(x)["num_digits"] for x in dst.read_text().splitlines()] == list(range(1, 9))
    with pytest.raises(ValueError):
        subset_manifest(src, tmp_path / "none.jsonl", 17, 20)
