"""Corpus preparation: FSDD and AN4 on the real local copies; AN4 test partition, LibriSpeech and
Common Voice on tiny copies built here in the real layout; Tatoeba on the real files and a tiny one."""

from __future__ import annotations

import functools
import hashlib
import io
import tarfile
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr_s2s.corpora import CORPORA, an4, commonvoice, fsdd, librispeech, prepare_corpus, tatoeba
from asr_s2s.corpora.common import read_manifest
from asr_s2s.corpora.download import SOURCES, DownloadError

SR = 16000


def _tone(seconds: float, freq: float = 440.0, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _read_tsv(p: Path) -> list[tuple[str, str]]:
    return [tuple(line.rstrip("\n").split("\t")) for line in open(p, encoding="utf-8")]


@pytest.fixture
def http_dir(tmp_path):
    """Serve tmp_path/www on 127.0.0.1 (a thread, shut down after the test); yields (base_url, dir, log)."""
    www = tmp_path / "www"
    www.mkdir()
    seen: list[str] = []

    class H(SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            seen.append(self.path)
            super().do_GET()

    srv = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(H, directory=str(www)))
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", www, seen
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(timeout=5)


# ------------------------------------------------------------------------------------------ FSDD


@pytest.fixture(scope="module")
def fsdd_official(fsdd_corpus, tmp_path_factory):
    return fsdd.prepare(fsdd_corpus.parents[1], tmp_path_factory.mktemp("fsdd_off"))


def test_fsdd_official_split(fsdd_official):
    rows = {k: read_manifest(p) for k, p in fsdd_official.items()}
    assert sum(len(r) for r in rows.values()) == 3000
    assert len(rows["test"]) == 6 * 10 * 5 == 300
    assert len(rows["dev"]) == 300 and len(rows["train"]) == 2400
    for split, lo, hi in (("test", 0, 4), ("dev", 5, 9), ("train", 10, 49)):
        assert all(lo <= int(r["id"].split("_")[2]) <= hi for r in rows[split])
    ids = [r["id"] for rs in rows.values() for r in rs]
    assert len(set(ids)) == 3000
    for r in rows["test"][:50] + rows["train"][-50:]:
        digit, spk, _ = r["id"].split("_")
        assert r["text"] == fsdd.DIGITS[int(digit)] and r["speaker"] == spk
        assert Path(r["audio_filepath"]).is_absolute() and Path(r["audio_filepath"]).is_file()
        assert 0.1 < r["duration"] < 2.5


def test_fsdd_speaker_split(fsdd_corpus, tmp_path):
    out = fsdd.prepare(fsdd_corpus.parents[1], tmp_path, split="speaker")
    spk = {k: {r["speaker"] for r in read_manifest(p)} for k, p in out.items()}
    assert spk["test"] == set(fsdd.DEFAULT_TEST_SPEAKERS) and spk["dev"] == set(fsdd.DEFAULT_DEV_SPEAKERS)
    assert not spk["train"] & spk["test"] and not spk["train"] & spk["dev"] and not spk["dev"] & spk["test"]
    assert [len(read_manifest(out[k])) for k in ("train", "dev", "test")] == [2000, 500, 500]
    out2 = fsdd.prepare(fsdd_corpus.parents[1], tmp_path / "b", split="speaker", test_speakers=["george", "lucas"],
                        dev_speakers=["jackson"])
    assert {r["speaker"] for r in read_manifest(out2["test"])} == {"george", "lucas"}
    with pytest.raises(ValueError, match="unknown speaker"):
        fsdd.prepare(fsdd_corpus.parents[1], tmp_path / "c", split="speaker", test_speakers=["nobody"])


def test_fsdd_download_github_zip(http_dir, tmp_path):
    """No local copy: the GitHub archive (zip, top folder named after the commit) is fetched and used."""
    base, www, seen = http_dir
    top = "free-spoken-digit-dataset-26eb9aaf76e81b692f806f9140c2d2777410d7a1"
    with zipfile.ZipFile(www / "fsdd.zip", "w") as zf:
        zf.writestr(f"{top}/README.md", "# Free Spoken Digit Dataset (tiny test copy)\n")
        for spk in ("alice", "bob"):
            for d in range(10):
                for i in range(12):
                    buf = io.BytesIO()
                    sf.write(buf, _tone(0.05 + 0.01 * d, sr=8000), 8000, format="WAV", subtype="PCM_16")
                    zf.writestr(f"{top}/recordings/{d}_{spk}_{i}.wav", buf.getvalue())
    src = SOURCES["fsdd"].with_url(base + "/fsdd.zip")
    out = fsdd.prepare(tmp_path / "data", tmp_path / "out", source=src)
    n = {k: len(read_manifest(p)) for k, p in out.items()}
    assert n == {"test": 2 * 10 * 5, "dev": 2 * 10 * 5, "train": 2 * 10 * 2}
    assert read_manifest(out["dev"])[0]["duration"] == pytest.approx(0.05)
    out = fsdd.prepare(tmp_path / "data", tmp_path / "out2", source=src, split="speaker", test_speakers=["bob"],
                       dev_speakers=["alice"])
    assert seen == ["/fsdd.zip"]  # the second prepare found the extracted copy
    assert {r["speaker"] for r in read_manifest(out["test"])} == {"bob"}


def test_fsdd_rerun_is_idempotent(fsdd_corpus, fsdd_official):
    before = {k: p.read_bytes() for k, p in fsdd_official.items()}
    mtimes = {k: p.stat().st_mtime_ns for k, p in fsdd_official.items()}
    again = fsdd.prepare(fsdd_corpus.parents[1], fsdd_official["train"].parent)
    assert again == fsdd_official
    assert {k: p.stat().st_mtime_ns for k, p in again.items()} == mtimes  # not rewritten
    forced = fsdd.prepare(fsdd_corpus.parents[1], fsdd_official["train"].parent, force=True)
    assert {k: p.read_bytes() for k, p in forced.items()} == before  # deterministic


# ------------------------------------------------------------------------------------------- AN4


def test_an4_real_local_copy(an4_corpus, tmp_path):
    out = prepare_corpus("an4", an4_corpus.parents[1], tmp_path)
    rows = {k: read_manifest(p) for k, p in out.items()}
    has_test = (an4_corpus / "wav" / "an4test_clstk").is_dir()
    assert set(out) == ({"train", "dev", "test"} if has_test else {"train", "dev"})
    assert len(rows["train"]) + len(rows["dev"]) == 948
    tr, dv = {r["speaker"] for r in rows["train"]}, {r["speaker"] for r in rows["dev"]}
    assert not tr & dv and len(tr) + len(dv) == 74
    assert dv == set(an4.DEV_SPEAKERS_74)
    for rs in rows.values():
        for r in rs:
            assert Path(r["audio_filepath"]).is_file() and r["duration"] > 0
            assert r["text"] == r["text"].lower() and r["text"] == " ".join(r["text"].split()) and r["text"]
            assert "<s>" not in r["text"] and "(" not in r["text"]
            assert Path(r["audio_filepath"]).parent.name == r["speaker"]
    assert 0.6 < sum(r["duration"] for rs in rows.values() for r in rs) / 3600 < 0.8  # ~42 min


def _sph(path: Path, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), (_tone(seconds) * 32767).astype(np.int16), SR, format="NIST", subtype="PCM_16")


def test_an4_test_partition_parsing(http_dir, tmp_path):
    """A tiny an4_sphere.tar.gz (train + test partitions, real layout) fetched over loopback."""
    base, www, seen = http_dir
    stage = tmp_path / "stage" / "an4"
    (stage / "etc").mkdir(parents=True)
    train = {"an1-fabc-b": ("fabc", "<s> A B C </s> (an1-fabc-b)"), "an2-mxyz-b": ("mxyz", "<s>  TWO   NINE </s> (an2-mxyz-b)")}
    for utt, (spk, _) in train.items():
        _sph(stage / "wav" / "an4_clstk" / spk / f"{utt}.sph", 0.5)
    (stage / "etc" / "an4_train.transcription").write_text("\n".join(l for _, l in train.values()) + "\n")
    for utt, spk in (("cen1-fash-b", "fash"), ("cen2-fash-b", "fash"), ("cen3-mjgk-b", "mjgk")):
        _sph(stage / "wav" / "an4test_clstk" / spk / f"{utt}.sph", 0.75)
    (stage / "etc" / "an4_test.transcription").write_bytes(
        b"ENTER SIX TWO FOUR (cen1-fash-b)\r\n"
        b"\n"
        b"<s> RUBOUT G M E F THREE NINE </s> (cen2-fash-b)\n"  # the train style, in the test file
        b"YES (cen3-mjgk-b)   \n"
        b"NO AUDIO HERE (cen9-nobody-b)\n"
        b"a line without an id\n"
    )
    with tarfile.open(www / "an4_sphere.tar.gz", "w:gz") as tf:
        tf.add(stage, arcname="an4")
    src = SOURCES["an4"].with_url(base + "/an4_sphere.tar.gz")
    root = tmp_path / "data" / "an4" / "an4"
    parsed = an4.parse_transcription(stage / "etc" / "an4_test.transcription")
    assert parsed == [("cen1-fash-b", "enter six two four"), ("cen2-fash-b", "rubout g m e f three nine"),
                      ("cen3-mjgk-b", "yes"), ("cen9-nobody-b", "no audio here")]
    with pytest.raises(FileNotFoundError, match="downloads disabled"):
        an4.prepare(tmp_path / "data", tmp_path / "out", download=False, source=src)
    out = an4.prepare(tmp_path / "data", tmp_path / "out", dev_speakers=["mxyz"], source=src)
    assert seen == ["/an4_sphere.tar.gz"] and (root / "etc" / "an4_test.transcription").is_file()
    assert set(out) == {"train", "dev", "test"}
    test = read_manifest(out["test"])
    assert [(r["id"], r["text"], r["speaker"]) for r in test] == [
        ("cen1-fash-b", "enter six two four", "fash"), ("cen2-fash-b", "rubout g m e f three nine", "fash"),
        ("cen3-mjgk-b", "yes", "mjgk")]
    assert all(abs(r["duration"] - 0.75) < 1e-3 for r in test)
    assert [r["text"] for r in read_manifest(out["train"])] == ["a b c"]
    assert [r["text"] for r in read_manifest(out["dev"])] == ["two nine"]
    # the test partition disappears -> test.jsonl goes too
    import shutil

    shutil.rmtree(root / "wav" / "an4test_clstk")
    out = an4.prepare(tmp_path / "data", tmp_path / "out", dev_speakers=["mxyz"], download=False)
    assert set(out) == {"train", "dev"} and not (tmp_path / "out" / "test.jsonl").exists()


def test_an4_dev_speaker_rule():
    spk = [f"f{i:03d}" for i in range(20)] + [f"m{i:03d}" for i in range(50)]
    dev = an4.pick_dev_speakers(spk)
    assert len([s for s in dev if s[0] == "f"]) == 2 and len([s for s in dev if s[0] == "m"]) == 5
    assert dev == an4.pick_dev_speakers(list(reversed(spk)))  # order-independent


# ----------------------------------------------------------------------------------- LibriSpeech

LIBRI = {  # subset -> {(speaker, chapter): [(utt, text, seconds)]}
    "dev-clean": {("1272", "128104"): [("0000", "MISTER QUILTER IS THE APOSTLE", 0.6), ("0001", "NOR IS MISTER QUILTER'S MANNER", 0.4)],
                  ("2412", "153948"): [("0000", "IT WAS NOT A WORD", 0.5)]},
    "train-clean-5": {("19", "198"): [("0000", "NORTHANGER ABBEY", 0.3)]},
    "dev-clean-2": {("84", "121123"): [("0000", "GO DO YOU HEAR", 0.35), ("0001", "BUT IN LESS THAN FIVE MINUTES", 0.45)]},
}


def _libri_archive(path: Path, subset: str) -> bytes:
    with tarfile.open(path, "w:gz") as tf:
        def add(name: str, data: bytes):
            ti = tarfile.TarInfo(f"LibriSpeech/{name}")
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        add("README.TXT", b"LibriSpeech ASR corpus (tiny test copy)\n")
        add("SPEAKERS.TXT", b";ID |SEX| SUBSET | MINUTES | NAME\n")
        for (spk, chap), utts in LIBRI[subset].items():
            trans = []
            for utt, text, secs in utts:
                buf = io.BytesIO()
                sf.write(buf, _tone(secs, 300 + 50 * int(utt)), SR, format="FLAC")
                add(f"{subset}/{spk}/{chap}/{spk}-{chap}-{utt}.flac", buf.getvalue())
                trans.append(f"{spk}-{chap}-{utt} {text}")
            add(f"{subset}/{spk}/{chap}/{spk}-{chap}.trans.txt", ("\n".join(trans) + "\n").encode())
    return path.read_bytes()


def test_librispeech_download_and_prepare(http_dir, tmp_path):
    base, www, seen = http_dir
    blob = _libri_archive(www / "dev-clean.tar.gz", "dev-clean")
    official = SOURCES["librispeech/dev-clean"]
    assert official.url == "https://www.openslr.org/resources/12/dev-clean.tar.gz" and official.md5
    data = tmp_path / "data"
    # a mirror that serves other bytes than OpenSLR published: the official md5 catches it
    with pytest.raises(DownloadError, match="md5 mismatch"):
        librispeech.prepare(data, tmp_path / "out", train=(), dev="dev-clean", test=(),
                            sources={"dev-clean": official.with_url(base + "/dev-clean.tar.gz")})
    src = official.with_url(base + "/dev-clean.tar.gz", md5=hashlib.md5(blob).hexdigest())
    out = librispeech.prepare(data, tmp_path / "out", train=(), dev="dev-clean", test=(), sources={"dev-clean": src})
    assert set(out) == {"dev"}
    rows = read_manifest(out["dev"])
    assert [r["id"] for r in rows] == ["1272-128104-0000", "1272-128104-0001", "2412-153948-0000"]
    assert rows[1]["text"] == "nor is mister quilter's manner" and rows[0]["speaker"] == "1272"
    assert [r["duration"] for r in rows] == pytest.approx([0.6, 0.4, 0.5], abs=1e-3)
    assert all(Path(r["audio_filepath"]).is_file() for r in rows)
    assert (data / "librispeech" / "LibriSpeech" / "dev-clean" / "1272" / "128104").is_dir()
    # second run: the local copy is found, nothing is fetched
    n = len(seen)
    out2 = librispeech.prepare(data, tmp_path / "out2", train=(), dev="dev-clean", test=(), lowercase=False,
                               sources={"dev-clean": src})
    assert len(seen) == n and read_manifest(out2["dev"])[0]["text"] == "MISTER QUILTER IS THE APOSTLE"


def test_librispeech_mini_preset_local_copy(tmp_path):
    lib = tmp_path / "data" / "librispeech"
    lib.mkdir(parents=True)
    from asr_s2s.corpora.download import extract

    for subset in ("train-clean-5", "dev-clean-2"):
        _libri_archive(tmp_path / f"{subset}.tar.gz", subset)
        extract(tmp_path / f"{subset}.tar.gz", lib)
    out = prepare_corpus("librispeech", tmp_path / "data", tmp_path / "out", preset="mini", download=False)
    assert set(out) == {"train", "dev"}  # mini LibriSpeech has no test subset
    assert [r["text"] for r in read_manifest(out["train"])] == ["northanger abbey"]
    assert len(read_manifest(out["dev"])) == 2
    with pytest.raises(FileNotFoundError, match="downloads disabled"):
        librispeech.prepare(tmp_path / "data", tmp_path / "o2", download=False)  # clean-100 not there


# ----------------------------------------------------------------------------------- Common Voice


def _cv_release(root: Path) -> Path:
    clips = root / "clips"
    clips.mkdir(parents=True)
    rows = {
        "train": [("spk_a", "common_voice_xx_1.mp3", "Hello, world!", 0.5), ("spk_a", "common_voice_xx_2.mp3", 'She said "don\'t"', 0.7),
                  ("spk_b", "common_voice_xx_3.mp3", "  Spaces\u00a0 everywhere ", 0.6), ("spk_b", "common_voice_xx_missing.mp3", "No clip", 0),
                  ("spk_c", "common_voice_xx_4.mp3", "", 0.4)],
        "dev": [("spk_d", "common_voice_xx_5.mp3", "Über Straße.", 0.8)],
        "test": [("spk_e", "common_voice_xx_6.mp3", "Last one?", 0.9)],
    }
    header = "client_id\tpath\tsentence_id\tsentence\tsentence_domain\tup_votes\tdown_votes\tage\tgender\taccents\tvariant\tlocale\tsegment\n"
    for split, rs in rows.items():
        with open(root / f"{split}.tsv", "w", encoding="utf-8") as f:
            f.write(header)
            for i, (cid, path, sent, secs) in enumerate(rs):
                if secs:
                    sr = 48000 if i % 2 else 32000
                    sf.write(str(clips / path), _tone(secs, 200 + 40 * i, sr), sr, format="MP3")
                f.write(f"{cid}\t{path}\tsid{i}\t{sent}\t\t2\t0\t\t\t\t\txx\t\n")
    # newer releases list durations; here for one clip only (deliberately different, to see it used)
    (root / "clip_durations.tsv").write_text("clip\tduration[ms]\ncommon_voice_xx_5.mp3\t1234\n")
    return root


def test_commonvoice_release(tmp_path):
    data = tmp_path / "data"
    rel = _cv_release(data / "commonvoice" / "cv-corpus-99.0-2099-01-01" / "xx")
    out = prepare_corpus("commonvoice", data, tmp_path / "out")
    rows = {k: read_manifest(p) for k, p in out.items()}
    assert [r["text"] for r in rows["train"]] == ["Hello, world!", 'She said "don\'t"', "Spaces everywhere"]
    assert [r["speaker"] for r in rows["train"]] == ["spk_a", "spk_a", "spk_b"]
    assert rows["train"][0]["id"] == "common_voice_xx_1"
    assert [r["duration"] for r in rows["train"]] == pytest.approx([0.5, 0.7, 0.6], abs=0.06)
    assert rows["dev"][0]["duration"] == pytest.approx(1.234) and rows["dev"][0]["text"] == "Über Straße."
    assert rows["test"][0]["text"] == "Last one?"
    assert all(Path(r["audio_filepath"]).is_file() for rs in rows.values() for r in rs)
    out2 = commonvoice.prepare(data, tmp_path / "out2", release_dir=rel, lowercase=True, strip_punctuation=True)
    assert [r["text"] for r in read_manifest(out2["train"])] == ["hello world", "she said don't", "spaces everywhere"]
    # a second language: ambiguous without language=
    _cv_release(data / "commonvoice" / "cv-corpus-99.0-2099-01-01" / "yy")
    with pytest.raises(ValueError, match="several releases"):
        commonvoice.prepare(data, tmp_path / "out3")
    assert commonvoice.find_release(data, "yy").name == "yy"
    with pytest.raises(FileNotFoundError, match="commonvoice.mozilla.org"):
        commonvoice.prepare(tmp_path / "empty", tmp_path / "out4")


# ---------------------------------------------------------------------------------------- Tatoeba


@pytest.fixture(scope="module")
def tatoeba_root():
    from conftest import data_root

    d = data_root()
    if not (d / "tatoeba_kor_eng" / "kor.txt").is_file():
        pytest.skip("Tatoeba kor-eng not found (set ASR_S2S_DATA)")
    return d


def _assert_disjoint(out: dict[str, Path]) -> dict[str, list]:
    pairs = {k: _read_tsv(p) for k, p in out.items()}
    for side in (0, 1):
        sets = {k: {p[side] for p in v} for k, v in pairs.items()}
        assert not sets["train"] & sets["dev"] and not sets["train"] & sets["test"] and not sets["dev"] & sets["test"]
    return pairs


@pytest.mark.parametrize("direction", ["kor-eng", "eng-fra"])
def test_tatoeba_real_splits_disjoint(tatoeba_root, tmp_path, direction):
    out = tatoeba.prepare(tatoeba_root, tmp_path, direction=direction, download=False)
    pairs = _assert_disjoint(out)
    n = sum(len(v) for v in pairs.values())
    assert n > (3000 if direction == "kor-eng" else 70000)
    for k in ("dev", "test"):
        assert 0.025 < len(pairs[k]) / n < 0.08
    if direction == "kor-eng":
        assert ("가.", "Go.") in pairs["train"] + pairs["dev"] + pairs["test"]
    else:
        assert not any("\u202f" in t for v in pairs.values() for _, t in v)


def test_tatoeba_download_zip(tmp_path):
    """The manythings zip (kor.txt + _about.txt), fetched from a file:// URL."""
    arc = tmp_path / "kor-eng.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        zf.writestr("_about.txt", "** Info **\n")
        zf.writestr("kor.txt", "".join(f"Sentence {i}.\t문장 {i}.\tCC-BY 2.0 (France) Attribution: tatoeba.org #{i}\n"
                                       for i in range(200)))
    src = SOURCES["tatoeba_kor_eng"].with_url(arc.as_uri())
    out = tatoeba.prepare(tmp_path / "data", tmp_path / "out", source=src)
    pairs = _assert_disjoint(out)
    assert sum(len(v) for v in pairs.values()) == 200 and pairs["train"][0] == ("문장 0.", "Sentence 0.")
    assert (tmp_path / "data" / "tatoeba_kor_eng" / "kor.txt").is_file()


def test_tatoeba_tiny_dedupe_direction(tmp_path):
    d = tmp_path / "data" / "tatoeba_eng_fra"
    d.mkdir(parents=True)
    lines = ["Go.\tVa !", "Go.\tVa\u202f!", "Go.\tMarche.", "Walk.\tMarche.", "Hi.\tSalut !", "\tvide", "Run!\tCours\u202f!"]
    lines += [f"Sentence {i}.\tPhrase {i}." for i in range(400)]
    (d / "eng-fra.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    fwd = tatoeba.prepare(tmp_path / "data", tmp_path / "fwd", direction="eng-fra", download=False)
    rev = tatoeba.prepare(tmp_path / "data", tmp_path / "rev", direction="fra-eng", download=False)
    p_fwd, p_rev = _assert_disjoint(fwd), _assert_disjoint(rev)
    all_fwd = [p for v in p_fwd.values() for p in v]
    assert len(all_fwd) == 3 + 2 + 400  # 'Va !' twice -> once; empty side dropped
    assert ("Go.", "Va !") in all_fwd and ("Run!", "Cours !") in all_fwd
    # 'Go.' and 'Walk.' share 'Marche.': same split
    split_of = {p: k for k, v in p_fwd.items() for p in v}
    assert split_of[("Go.", "Marche.")] == split_of[("Walk.", "Marche.")] == split_of[("Go.", "Va !")]
    # reversing the direction swaps the columns and keeps the split
    assert {k: [(t, s) for s, t in v] for k, v in p_rev.items()} == p_fwd
    assert all(len(p_fwd[k]) > 0 for k in ("train", "dev", "test"))


# ---------------------------------------------------------------------------------------- registry


def test_registry():
    assert set(CORPORA) >= {"fsdd", "digit_strings", "an4", "librispeech", "commonvoice", "tatoeba", "wakeword",
                            "alphanumeric"}
    for mod in CORPORA.values():
        assert callable(mod.prepare)
    with pytest.raises(KeyError, match="unknown corpus"):
        prepare_corpus("timit", None, "/nonexistent")
