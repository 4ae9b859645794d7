"""download / extract / find_or_download, offline: a loopback HTTP server (127.0.0.1 only) and file:// URLs."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from asr_s2s.corpora.download import (
    DownloadError,
    Source,
    UnsafeArchiveError,
    download,
    extract,
    find_or_download,
)

PAYLOAD = os.urandom(300_000)


class _Handler(BaseHTTPRequestHandler):
    """Serves server.files; honours Range (206) unless server.ignore_range; can cut a body short once."""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start, status = 0, 200
        rng = self.headers.get("Range")
        if rng and not srv.ignore_range:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if srv.cut_next:
            srv.cut_next = False
            self.wfile.write(body[: len(body) // 3])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.requests, srv.ignore_range, srv.cut_next = {}, [], False, False
    srv.timeout = 5
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(timeout=5)


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


# ------------------------------------------------------------------ download


def test_download_verifies_and_renames(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    out = download(server.base + "/a.bin", tmp_path / "a.bin", sha256=_sha(PAYLOAD),
                   md5=hashlib.md5(PAYLOAD).hexdigest(), size=len(PAYLOAD))
    assert out.read_bytes() == PAYLOAD
    assert not (tmp_path / "a.bin.part").exists()
    # a second call finds the verified file and makes no request
    n = len(server.requests)
    download(server.base + "/a.bin", tmp_path / "a.bin", sha256=_sha(PAYLOAD))
    assert len(server.requests) == n


def test_checksum_mismatch_raises_and_leaves_nothing(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    url = server.base + "/a.bin"
    with pytest.raises(DownloadError) as ei:
        download(url, tmp_path / "a.bin", sha256="0" * 64)
    msg = str(ei.value)
    assert url in msg and "sha256 mismatch" in msg and _sha(PAYLOAD) in msg
    assert not (tmp_path / "a.bin").exists() and not (tmp_path / "a.bin.part").exists()
    with pytest.raises(DownloadError, match="md5 mismatch"):
        download(url, tmp_path / "a.bin", md5="f" * 32)
    with pytest.raises(DownloadError, match="size mismatch"):
        download(url, tmp_path / "a.bin", size=len(PAYLOAD) + 1)


def test_http_404_is_a_clear_error(server, tmp_path):
    url = server.base + "/missing.tar.gz"
    with pytest.raises(DownloadError) as ei:
        download(url, tmp_path / "x.tar.gz")
    assert url in str(ei.value) and "404" in str(ei.value)
    assert not (tmp_path / "x.tar.gz").exists()


def test_connection_refused_is_a_clear_error(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    url = f"http://127.0.0.1:{port}/x"
    with pytest.raises(DownloadError, match="cannot connect") as ei:
        download(url, tmp_path / "x", retries=0, timeout=2)
    assert url in str(ei.value)


def test_resume_from_partial_file_uses_range(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD[:123_456])
    out = download(server.base + "/a.bin", tmp_path / "a.bin", sha256=_sha(PAYLOAD))
    assert out.read_bytes() == PAYLOAD
    assert server.requests == [("/a.bin", "bytes=123456-")]


def test_interrupted_transfer_resumes(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    server.cut_next = True
    # retries=0: the cut transfer is an error, the .part stays
    with pytest.raises(DownloadError, match="interrupted"):
        download(server.base + "/a.bin", tmp_path / "a.bin", retries=0, size=len(PAYLOAD))
    part = tmp_path / "a.bin.part"
    have = part.stat().st_size
    assert 0 < have < len(PAYLOAD)
    # the next call resumes from there
    download(server.base + "/a.bin", tmp_path / "a.bin", sha256=_sha(PAYLOAD), size=len(PAYLOAD))
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD
    assert server.requests[-1][1] == f"bytes={have}-"


def test_interrupted_transfer_retries_within_one_call(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    server.cut_next = True
    download(server.base + "/a.bin", tmp_path / "a.bin", sha256=_sha(PAYLOAD))
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD
    assert [r for _, r in server.requests] == [None, f"bytes={len(PAYLOAD) // 3}-"]


def test_server_without_range_support_restarts(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    server.ignore_range = True
    (tmp_path / "a.bin.part").write_bytes(b"garbage-prefix")
    download(server.base + "/a.bin", tmp_path / "a.bin", sha256=_sha(PAYLOAD))
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


def test_complete_part_file_416(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD)
    download(server.base + "/a.bin", tmp_path / "a.bin", sha256=_sha(PAYLOAD))
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


def test_file_url_and_resume(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    dest = tmp_path / "out" / "dst.bin"
    dest.parent.mkdir()
    (dest.parent / "dst.bin.part").write_bytes(PAYLOAD[:1000])
    download(src.as_uri(), dest, sha256=_sha(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match="no such file"):
        download((tmp_path / "nope").as_uri(), tmp_path / "nope2")
    with pytest.raises(DownloadError, match="unsupported URL scheme"):
        download("ftp://127.0.0.1/x", tmp_path / "x")


# ------------------------------------------------------------------ extract


def _tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], mode="w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tf.addfile(m)
            else:
                name, data = m
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    return path


def _link(name: str, target: str, hard=False) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    ti.linkname = target
    return ti


@pytest.mark.parametrize("mode,suffix", [("w:gz", "tar.gz"), ("w:bz2", "tar.bz2"), ("w", "tar")])
def test_extract_tar_and_rerun_skips(tmp_path, mode, suffix):
    arc = _tar(tmp_path / f"a.{suffix}", [("top/a.txt", b"A"), ("top/sub/b.txt", b"B"), _link("top/l", "a.txt")], mode)
    dest = tmp_path / "out"
    extract(arc, dest)
    assert (dest / "top/a.txt").read_bytes() == b"A" and (dest / "top/sub/b.txt").read_bytes() == b"B"
    assert os.readlink(dest / "top/l") == "a.txt"
    (dest / "top/a.txt").write_bytes(b"changed")
    extract(arc, dest)  # marker: skipped
    assert (dest / "top/a.txt").read_bytes() == b"changed"
    extract(arc, dest, force=True)
    assert (dest / "top/a.txt").read_bytes() == b"A"


def test_extract_zip(tmp_path):
    arc = tmp_path / "a.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        zf.writestr("d/x.txt", "X")
        zf.writestr("d/e/", "")
    extract(arc, tmp_path / "out")
    assert (tmp_path / "out/d/x.txt").read_text() == "X" and (tmp_path / "out/d/e").is_dir()
    assert (tmp_path / "out/.a.zip.extracted").is_file()


@pytest.mark.parametrize(
    "members",
    [
        [("ok.txt", b"1"), ("../evil.txt", b"x")],
        [("a/../../evil.txt", b"x")],
        [("/tmp/evil_abs.txt", b"x")],
        [_link("esc", "../outside")],
        [_link("esc", "/etc/passwd")],
        [_link("hard", "../../outside", hard=True)],
        # chain: 'b' -> '.' is harmless alone, 'a' -> 'b/..' looks inside lexically but is the parent
        [_link("b", "."), _link("a", "b/.."), ("a/evil.txt", b"x")],
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink-rel", "symlink-abs", "hardlink", "symlink-chain"],
)
def test_extract_rejects_unsafe_tar(tmp_path, members):
    arc = _tar(tmp_path / "bad.tar.gz", members)
    dest = tmp_path / "deep" / "out"
    with pytest.raises(UnsafeArchiveError):
        extract(arc, dest)
    assert not (tmp_path / "deep" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert not (dest / ".bad.tar.gz.extracted").exists()


def test_extract_rejects_unsafe_zip(tmp_path):
    for name in ("../evil.txt", "/abs.txt", "a\\..\\..\\evil.txt"):
        arc = tmp_path / "bad.zip"
        with zipfile.ZipFile(arc, "w") as zf:
            zf.writestr(name, "x")
        with pytest.raises(UnsafeArchiveError):
            extract(arc, tmp_path / "out")
    arc = tmp_path / "link.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        zi = zipfile.ZipInfo("esc")
        zi.external_attr = (0o120777 << 16)
        zf.writestr(zi, "../../outside")
    with pytest.raises(UnsafeArchiveError, match="outside"):
        extract(arc, tmp_path / "out")


def test_extract_rejects_device(tmp_path):
    ti = tarfile.TarInfo("dev")
    ti.type = tarfile.CHRTYPE
    with pytest.raises(UnsafeArchiveError, match="special"):
        extract(_tar(tmp_path / "dev.tar", [ti], "w"), tmp_path / "out")


# ------------------------------------------------------------------ find_or_download


def test_find_or_download_prefers_local_then_downloads(server, tmp_path):
    data = tmp_path / "data"
    src = Source(dirname="toy", roots=(".", "*"), check=("etc/list.txt",), url=server.base + "/toy.tar.gz",
                 filename="toy.tar.gz")
    arc = _tar(tmp_path / "toy.tar.gz", [("toy-1.0/etc/list.txt", b"hello")])
    blob = arc.read_bytes()
    server.files["/toy.tar.gz"] = blob
    with pytest.raises(FileNotFoundError):
        find_or_download("toy", data, source=src, download_missing=False)
    root = find_or_download("toy", data, source=Source(**{**src.__dict__, "sha256": _sha(blob)}))
    assert root == data / "toy" / "toy-1.0" and (root / "etc/list.txt").read_bytes() == b"hello"
    n = len(server.requests)
    assert find_or_download("toy", data, source=src) == root  # local copy found: no request
    assert len(server.requests) == n


def test_find_or_download_local_copy_without_network(tmp_path):
    (tmp_path / "an4" / "an4" / "etc").mkdir(parents=True)
    (tmp_path / "an4" / "an4" / "wav").mkdir()
    assert find_or_download("an4", tmp_path) == tmp_path / "an4" / "an4"
    with pytest.raises(FileNotFoundError, match="commonvoice"):
        find_or_download("commonvoice", tmp_path)
    with pytest.raises(KeyError):
        find_or_download("nope", tmp_path)


def test_failed_download_says_where_a_local_copy_was_looked_for(server, tmp_path):
    """Offline, the fix is a local copy: the error names the folder searched and how to point at another one."""
    src = Source(dirname="toy", roots=(".",), check=("etc/list.txt",), url=server.base + "/gone.tar.gz")
    with pytest.raises(DownloadError) as ei:
        find_or_download("toy", tmp_path / "data", source=src)
    msg = str(ei.value)
    assert str(tmp_path / "data" / "toy") in msg and "ASR_S2S_DATA" in msg and "404" in msg


def test_cli_prints_user_errors_without_a_traceback(tmp_path, capsys):
    """A missing corpus (no local copy, downloads disabled) and a model file that is not one: `error: ...` on
    stderr and exit status 2 from the command, not a traceback."""
    from asr_s2s.cli import main

    rc = main(["prepare", "commonvoice", "--data-dir", str(tmp_path), "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and "commonvoice" in err and "Traceback" not in err
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a checkpoint")
    (tmp_path / "dev.jsonl").write_text("")
    rc = main(["evaluate", str(bad), str(tmp_path / "dev.jsonl")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and str(bad) in err
