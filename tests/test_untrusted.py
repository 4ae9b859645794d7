"""Untrusted files: model files and checkpoints that would run code, YAML with python tags, hostile archives,
downloads that do not verify. Everything is refused with a clear message, and no code runs (a marker file
that the payload would create never appears).

Archive and download basics are in tests/test_download.py; here only the gaps: links already present in the
target, absolute hard links, FIFOs, drive letters, a stale download that does not verify.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch

import bad_inputs as B
from asr_s2s.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from asr_s2s.cli import main as cli_main
from asr_s2s.config import load_config
from asr_s2s.corpora.download import DownloadError, UnsafeArchiveError, download, extract
from asr_s2s.model import ASRModel, load_model


class RunsCode:
    """Unpickling this runs ``os.system(cmd)``: what a malicious model file carries."""

    def __init__(self, cmd: str):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def evil_payload(marker: Path, fmt: str = "asr-s2s/1") -> dict:
    return {"format": fmt, "config": {}, "model": {"w": torch.zeros(2)}, "meta": RunsCode(f"touch {marker}")}


def write_evil(path: Path, marker: Path, how: str, fmt: str = "asr-s2s/1") -> Path:
    payload = evil_payload(marker, fmt)
    if how == "zip":  # torch's default format
        torch.save(payload, path)
    elif how == "legacy":  # torch's pre-1.6 format
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    elif how == "raw_pickle":  # a bare pickle named .pt
        path.write_bytes(pickle.dumps(payload))
    else:  # pragma: no cover
        raise ValueError(how)
    return path


def _tiny_model() -> ASRModel:
    from asr_s2s.features import FeatureConfig
    from asr_s2s.seq2seq import ModelConfig

    tok = B.char_tokenizer()
    cfg = ModelConfig.from_dict({"input": "audio", "vocab_size": tok.vocab_size,
                                 "encoder": {"cell": "gru", "input_dim": 20, "hidden": 8, "layers": 1},
                                 "decoder": {"cell": "gru", "embed_dim": 4, "hidden": 8, "layers": 1}})
    return ASRModel(cfg, tok, FeatureConfig(sample_rate=8000, n_mels=20))


# ------------------------------------------------------------------------------------------ model files
@pytest.mark.parametrize("how", ["zip", "legacy", "raw_pickle"])
def test_model_file_with_code_is_refused(tmp_path: Path, how: str) -> None:
    marker = tmp_path / "PWNED"
    path = write_evil(tmp_path / "model.pt", marker, how)
    with pytest.raises(CheckpointError) as ei:
        load_model(path)
    msg = str(ei.value)
    assert msg.startswith(f"{path}: ") and "refused to load" in msg and "weights_only" in msg
    assert "will likely succeed" not in msg  # never invite the user to switch the protection off
    assert not marker.exists()


def test_refusal_names_the_blocked_global(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    with pytest.raises(CheckpointError, match=r"(posix|os)\.system"):
        load_checkpoint(write_evil(tmp_path / "m.pt", marker, "zip"))
    assert not marker.exists()


def test_plain_but_invalid_model_files_are_clear_errors(tmp_path: Path) -> None:
    """Files of plain tensors/containers that are not valid models: a CheckpointError naming the file."""
    good = _tiny_model().payload()
    broken = {
        "not_a_dict": [1, 2, 3],
        "wrong_format": {**good, "format": "something-else/3"},
        "no_config": {k: v for k, v in good.items() if k != "config"},
        "bad_tokenizer": {**good, "tokenizer": {"type": "char"}},
        "wrong_shapes": {**good, "model": {k: torch.zeros(1) for k in good["model"]}},
        "unknown_config_key": {**good, "config": {**good["config"], "rm_rf": True}},
    }
    for name, payload in broken.items():
        path = tmp_path / f"{name}.pt"
        torch.save(payload, path)
        with pytest.raises(CheckpointError) as ei:
            load_model(path)
        assert str(ei.value).startswith(f"{path}: "), (name, str(ei.value))
    for name, raw in {"empty": b"", "text": b"hello", "truncated": (tmp_path / "no_config.pt").read_bytes()[:500]}.items():
        path = tmp_path / f"{name}.pt"
        path.write_bytes(raw)
        with pytest.raises(CheckpointError, match=rf"^{path}: "):
            load_model(path)
    # and the round trip of a real one still works
    save_checkpoint(tmp_path / "ok.pt", good)
    assert isinstance(load_model(tmp_path / "ok.pt"), ASRModel)


# ---------------------------------------------------------------------------------------------- --resume
@pytest.fixture(scope="module")
def small_run(tmp_path_factory, fsdd_files):
    """A finished 2-step run (config, manifest, EXPDIR) to tamper with."""
    import json

    d = tmp_path_factory.mktemp("untrusted_run")
    m = d / "train.jsonl"
    m.write_text("".join(json.dumps(e) + "\n" for e in B.fsdd_entries(fsdd_files[:12])))
    cfg = B.training_config(m, max_steps=2, epochs=1)
    cfg.save(d / "cfg.yaml")
    threads = torch.get_num_threads()
    try:
        from asr_s2s.train import train

        train(cfg, d / "exp", quiet=True)
    finally:
        torch.set_num_threads(threads)
    return d


def _resume(d: Path, exp: Path, capsys) -> tuple[int, str]:
    rc = cli_main(["train", str(d / "cfg.yaml"), "--out", str(exp), "--resume"])
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("how", ["zip", "legacy"])
def test_resume_refuses_a_checkpoint_with_code(small_run: Path, tmp_path: Path, capsys, how: str) -> None:
    import shutil

    exp = tmp_path / "exp"
    shutil.copytree(small_run / "exp", exp)
    marker = tmp_path / "PWNED"
    write_evil(exp / "checkpoints" / "last.pt", marker, how, fmt="asr-s2s-train/1")
    rc, err = _resume(small_run, exp, capsys)
    assert rc == 2
    assert f"error: cannot resume: {exp / 'checkpoints' / 'last.pt'}: refused to load" in err
    assert "Traceback" not in err
    assert not marker.exists()


def test_resume_refuses_a_tokenizer_file_with_code(small_run: Path, tmp_path: Path, capsys) -> None:
    import shutil

    exp = tmp_path / "exp"
    shutil.copytree(small_run / "exp", exp)
    marker = tmp_path / "PWNED"
    torch.save({"tokenizer": RunsCode(f"touch {marker}")}, exp / "tokenizer.pt")
    rc, err = _resume(small_run, exp, capsys)
    assert rc == 2 and f"{exp / 'tokenizer.pt'}: refused to load" in err
    assert not marker.exists()


def test_resume_refuses_a_corrupt_checkpoint(small_run: Path, tmp_path: Path, capsys) -> None:
    import shutil

    exp = tmp_path / "exp"
    shutil.copytree(small_run / "exp", exp)
    last = exp / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    rc, err = _resume(small_run, exp, capsys)
    assert rc == 2 and f"cannot resume: {last}: truncated or corrupt checkpoint" in err


def test_resume_rejects_a_model_file_as_training_state(small_run: Path, tmp_path: Path, capsys) -> None:
    import shutil

    exp = tmp_path / "exp"
    shutil.copytree(small_run / "exp", exp)
    shutil.copy(exp / "model.pt", exp / "checkpoints" / "last.pt")
    rc, err = _resume(small_run, exp, capsys)
    assert rc == 2 and "not a training checkpoint" in err


# ------------------------------------------------------------------------------------------------- YAML
def test_yaml_python_tags_are_refused(tmp_path: Path, capsys) -> None:
    marker = tmp_path / "PWNED"
    for tag in ("!!python/object/apply:os.system", "!!python/object/new:os.system"):
        cfg = tmp_path / "evil.yaml"
        cfg.write_text(f'seed: {tag} ["touch {marker}"]\n')
        with pytest.raises(ValueError, match=rf"{cfg}: not a valid YAML config: .*python/object"):
            load_config(cfg)
        rc = cli_main(["train", str(cfg), "--out", str(tmp_path / "exp")])
        err = capsys.readouterr().err
        assert rc == 2 and "not a valid YAML config" in err and "Traceback" not in err
    with pytest.raises(ValueError, match="not a plain YAML value"):
        load_config(None, [f'seed=!!python/object/apply:os.system ["touch {marker}"]'])
    assert not marker.exists()
    assert not (tmp_path / "exp").exists()


def test_broken_or_missing_yaml_is_a_clear_error(tmp_path: Path) -> None:
    cfg = tmp_path / "broken.yaml"
    cfg.write_text("seed: [unclosed\n")
    with pytest.raises(ValueError, match=rf"{cfg}: not a valid YAML config"):
        load_config(cfg)
    cfg.write_bytes(b"seed: \xff\xfe\n")
    with pytest.raises(ValueError, match=rf"{cfg}: not a valid YAML config"):
        load_config(cfg)
    with pytest.raises(ValueError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")


def test_every_yaml_load_in_the_package_is_safe() -> None:
    """No yaml.load / unsafe_load / full_load / Loader= anywhere in the package; torch.load only weights_only."""
    import re

    import tokenize

    pkg = Path(__file__).resolve().parents[1] / "asr_s2s"
    offenders = []
    for py in pkg.rglob("*.py"):
        with open(py, "rb") as f:  # code only: comments and docstrings may name the unsafe calls
            toks = [t for t in tokenize.tokenize(f.readline) if t.type not in (tokenize.COMMENT, tokenize.STRING)]
        code = tokenize.untokenize((t.type, t.string) for t in toks)
        src = (code.decode() if isinstance(code, bytes) else code).replace(" ", "")
        for pat in (r"yaml\.(load|unsafe_load|full_load|load_all)\(", r"Loader=", r"pickle\.loads?\(",
                    r"weights_only=False", r"allow_pickle=True"):
            offenders += [f"{py.name}: {m.group(0)}" for m in re.finditer(pat, src)]
        for m in re.finditer(r"torch\.load\(([^)]*)\)", src):
            if "weights_only=True" not in m.group(1):
                offenders.append(f"{py.name}: torch.load({m.group(1)})")
    assert not offenders, offenders


# --------------------------------------------------------------------------------- archives (gaps only)
def _tar_with(path: Path, *members: tarfile.TarInfo | tuple[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tf:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tf.addfile(m)
            else:
                ti = tarfile.TarInfo(m[0])
                ti.size = len(m[1])
                tf.addfile(ti, io.BytesIO(m[1]))
    return path


def _special(name: str, kind: bytes, link: str = "") -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.linkname = link
    return ti


@pytest.mark.parametrize("fmt", ["tar", "zip"])
def test_extract_refuses_to_write_through_a_link_already_in_the_target(tmp_path: Path, fmt: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "sub").symlink_to(outside)  # left by an earlier extraction or planted by someone else
    if fmt == "tar":
        arc = _tar_with(tmp_path / "a.tar", ("sub/evil.txt", b"x"))
    else:
        arc = tmp_path / "a.zip"
        with zipfile.ZipFile(arc, "w") as zf:
            zf.writestr("sub/evil.txt", "x")
    with pytest.raises(UnsafeArchiveError, match="through a link outside the target"):
        extract(arc, dest)
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("member,match", [
    (_special("h", tarfile.LNKTYPE, "/etc/passwd"), "absolute path"),
    (_special("f", tarfile.FIFOTYPE), "special"),
    (_special("l", tarfile.SYMTYPE, "x/../.."), "outside the target"),
    (("C:/evil.txt", b"x"), "absolute path"),
], ids=["hardlink-absolute", "fifo", "symlink-dotdot-after-dir", "drive-letter"])
def test_extract_rejects_more_unsafe_tar_members(tmp_path: Path, member, match: str) -> None:
    arc = _tar_with(tmp_path / "bad.tar", ("ok.txt", b"1"), member)
    with pytest.raises(UnsafeArchiveError, match=match):
        extract(arc, tmp_path / "out")
    assert not (tmp_path / "out" / "ok.txt").exists()  # checked before anything is written


def test_extract_zip_drive_letter(tmp_path: Path) -> None:
    arc = tmp_path / "bad.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        zf.writestr("C:/evil.txt", "x")
    with pytest.raises(UnsafeArchiveError, match="absolute path"):
        extract(arc, tmp_path / "out")


# -------------------------------------------------------------------------------------- downloads (gaps)
def test_stale_download_that_does_not_verify_is_replaced(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"real corpus bytes" * 100)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    dest = tmp_path / "dl" / "corpus.bin"
    dest.parent.mkdir()
    dest.write_bytes(b"tampered")  # an earlier, different file under the final name
    download(src.as_uri(), dest, sha256=sha, size=src.stat().st_size)
    assert dest.read_bytes() == src.read_bytes()


def test_download_that_never_verifies_leaves_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"served bytes")
    dest = tmp_path / "dl" / "corpus.bin"
    with pytest.raises(DownloadError, match=r"sha256 mismatch"):
        download(src.as_uri(), dest, sha256="0" * 64)
    with pytest.raises(DownloadError, match=r"size mismatch: expected 999 bytes, got 12"):
        download(src.as_uri(), dest, size=999)
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()
