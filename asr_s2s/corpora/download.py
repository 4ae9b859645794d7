"""Download and unpack corpora: resumable, verified, and safe against hostile archives.

- :func:`download` fetches one URL (``http(s)://`` or ``file://``) into a ``.part`` file, resumes an
  interrupted transfer with an HTTP ``Range`` request, verifies size / SHA-256 / MD5 and only then
  renames the file into place (atomic on one file system).
- :func:`extract` unpacks tar (plain, .gz, .bz2, .xz) and zip archives after checking every member:
  absolute paths, ``..`` components and links that point outside the target raise
  :class:`UnsafeArchiveError` *before anything is written*. A marker file makes a second run a no-op.
- :func:`find_or_download` looks for an existing local copy under ``data_dir/<corpus dir>/`` first
  and only downloads (from the official URL in :data:`SOURCES`) when none is found.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

log = logging.getLogger(__name__)

USER_AGENT = "asr-s2s/0.1 (+https://github.com; corpus downloader)"
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download failed: the message names the URL and the cause."""


class UnsafeArchiveError(RuntimeError):
    """An archive member would land outside the extraction target (or is not a plain file/dir/link)."""


# --------------------------------------------------------------------------------------------------
# download


def _hash_file(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def _verify(path: Path, url: str, sha256: str | None, md5: str | None, size: int | None) -> None:
    """Raise DownloadError when *path* does not match the expected size / checksums."""
    if size is not None:
        got = path.stat().st_size
        if got != size:
            raise DownloadError(f"{url}: size mismatch: expected {size} bytes, got {got} ({path})")
    for algo, want in (("sha256", sha256), ("md5", md5)):
        if want:
            got = _hash_file(path, algo)
            if got.lower() != want.lower():
                raise DownloadError(f"{url}: {algo} mismatch: expected {want.lower()}, got {got} ({path})")


def _copy_stream(src, out, url: str, part: Path, expected: int | None) -> int:
    n = 0
    try:
        while block := src.read(CHUNK):
            out.write(block)
            n += len(block)
    except Exception as e:  # OSError, timeouts, http.client.IncompleteRead (an HTTPException) ...
        raise _Interrupted(f"{url}: transfer interrupted after {n} bytes ({e!r}); {part} kept for resuming") from e
    if expected is not None and n < expected:
        raise _Interrupted(f"{url}: transfer interrupted: got {n} of {expected} bytes; {part} kept for resuming")
    return n


class _Interrupted(DownloadError):
    """A transfer stopped early; the .part file is kept and the next attempt resumes it."""


def _fetch_file_url(url: str, part: Path) -> None:
    src = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
    if not src.is_file():
        raise DownloadError(f"{url}: no such file ({src})")
    offset = part.stat().st_size if part.exists() else 0
    total = src.stat().st_size
    if offset > total:
        part.unlink()
        offset = 0
    with open(src, "rb") as f, open(part, "ab" if offset else "wb") as out:
        f.seek(offset)
        _copy_stream(f, out, url, part, total - offset)


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def _fetch_http(url: str, part: Path, size: int | None, timeout: float) -> None:
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:
        part.unlink()
        offset = 0
    if size is not None and offset == size:
        return  # already complete; verification follows
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            # Range not satisfiable: the .part is complete (verify) or longer than the file (restart).
            e.close()
            cr = _CONTENT_RANGE.match(e.headers.get("Content-Range", "") or "") or re.match(
                r"bytes\s+\*/(\d+)", e.headers.get("Content-Range", "") or ""
            )
            total = int(cr.groups()[-1]) if cr and cr.groups()[-1] != "*" else None
            if total is not None and total == offset:
                return
            part.unlink()
            raise _Interrupted(f"{url}: server rejected resume range (HTTP 416); restarting") from e
        raise DownloadError(f"{url}: HTTP error {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        raise DownloadError(f"{url}: cannot connect: {e.reason}") from e
    except (OSError, ValueError) as e:
        raise DownloadError(f"{url}: request failed: {e!r}") from e
    with resp:
        status = getattr(resp, "status", 200)
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        mode = "wb"
        if offset and status == 206:
            m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            if m and int(m.group(1)) == offset:
                mode = "ab"
            else:
                log.warning("%s: unexpected Content-Range %r; restarting", url, resp.headers.get("Content-Range"))
                resp.close()
                part.unlink()
                raise _Interrupted(f"{url}: bad Content-Range on resume; restarting")
        elif offset:
            log.info("%s: server ignored the Range request; downloading from the start", url)
        with open(part, mode) as out:
            _copy_stream(resp, out, url, part, length)


def download(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    md5: str | None = None,
    size: int | None = None,
    *,
    retries: int = 3,
    timeout: float = 60.0,
) -> Path:
    """Download *url* to *dest* and return *dest* as a Path.

    The bytes go to ``dest + ".part"``; an existing ``.part`` (from an interrupted run) is resumed
    with ``Range: bytes=N-`` (a server that answers 200 instead of 206 is handled by starting over).
    Interrupted transfers are resumed up to *retries* times within this call. When the transfer is
    complete the size and checksums given are verified; on mismatch the ``.part`` is deleted and
    :class:`DownloadError` names the URL, the expected and the actual value. Only a verified file is
    renamed to *dest*. An existing *dest* that verifies is returned untouched (one that does not
    verify is deleted and downloaded again).
    """
    dest = Path(dest)
    if dest.exists():
        try:
            _verify(dest, url, sha256, md5, size)
            return dest
        except DownloadError as e:
            log.warning("existing %s does not verify (%s); downloading again", dest, e)
            dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    scheme = urllib.parse.urlparse(url).scheme.lower()
    if scheme not in ("http", "https", "file"):
        raise DownloadError(f"{url}: unsupported URL scheme {scheme!r}")
    attempt = 0
    while True:
        try:
            if scheme == "file":
                _fetch_file_url(url, part)
            else:
                _fetch_http(url, part, size, timeout)
            break
        except _Interrupted as e:
            attempt += 1
            if attempt > retries:
                raise DownloadError(f"{e} (gave up after {attempt} attempts)") from e
            log.warning("%s; resuming (attempt %d of %d)", e, attempt, retries)
    try:
        _verify(part, url, sha256, md5, size)
    except DownloadError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return dest


# --------------------------------------------------------------------------------------------------
# extract


def _check_name(name: str, archive: Path) -> PurePosixPath:
    """A member name must be relative and free of '..' (both '/' and '\\' count as separators)."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} contains '..'")
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _check_link(member: str, link: str, hard: bool, archive: Path, root: str) -> None:
    norm = link.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        raise UnsafeArchiveError(f"{archive}: link {member!r} -> {link!r} points to an absolute path")
    # symlinks resolve from the member's folder, hard links from the archive root
    base = root if hard else os.path.join(root, os.path.dirname(member))
    target = os.path.normpath(os.path.join(base, norm))
    if not _inside(target, root):
        raise UnsafeArchiveError(f"{archive}: link {member!r} -> {link!r} points outside the target")


def _marker(dest: Path, archive: Path) -> Path:
    return dest / f".{archive.name}.extracted"


def extract(archive: str | os.PathLike, dest: str | os.PathLike, *, force: bool = False) -> Path:
    """Unpack a tar(.gz/.bz2/.xz) or zip *archive* into *dest* and return *dest*.

    Every member is checked first; an absolute path, a ``..`` component, a symlink or hard link that
    resolves outside *dest*, or a device / FIFO member raises :class:`UnsafeArchiveError` and nothing
    is written. During extraction each target is checked again against the real (symlink-resolved)
    paths on disk, which catches link chains that only escape once earlier members exist. When done,
    a marker ``dest/.<archive name>.extracted`` records the archive size; a later call with the same
    archive returns at once (pass ``force=True`` to unpack again).
    """
    archive, dest = Path(archive), Path(dest)
    marker = _marker(dest, archive)
    if not force and marker.is_file():
        try:
            info = json.loads(marker.read_text())
            if not archive.exists() or info.get("size") == archive.stat().st_size:
                return dest
        except (OSError, ValueError):
            pass
    if not archive.is_file():
        raise FileNotFoundError(f"archive not found: {archive}")
    dest.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(dest)
    if zipfile.is_zipfile(archive):
        _extract_zip(archive, root)
    elif tarfile.is_tarfile(archive):
        _extract_tar(archive, root)
    else:
        raise UnsafeArchiveError(f"{archive}: not a tar or zip archive")
    marker.write_text(json.dumps({"archive": archive.name, "size": archive.stat().st_size}) + "\n")
    return dest


def _extract_tar(archive: Path, root: str) -> None:
    with tarfile.open(archive, "r:*") as tf:
        members = tf.getmembers()
        for m in members:
            _check_name(m.name, archive)
            if m.issym() or m.islnk():
                _check_link(m.name, m.linkname, m.islnk(), archive, root)
            elif not (m.isfile() or m.isdir()):
                raise UnsafeArchiveError(f"{archive}: member {m.name!r} is a device, FIFO or other special file")
        for m in members:
            target = os.path.join(root, str(_check_name(m.name, archive)))
            if not _inside(os.path.realpath(os.path.dirname(target)), root):
                raise UnsafeArchiveError(f"{archive}: member {m.name!r} would be written through a link outside the target")
            if m.issym():
                real = os.path.realpath(os.path.join(os.path.dirname(target), m.linkname))
                if not _inside(real, root):
                    raise UnsafeArchiveError(f"{archive}: link {m.name!r} -> {m.linkname!r} resolves outside the target")
            # the stdlib 'data' filter repeats these checks and drops setuid bits / odd permissions
            tf.extract(m, root, set_attrs=True, filter="data")


def _extract_zip(archive: Path, root: str) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        links: dict[str, str] = {}
        for info in infos:
            _check_name(info.filename, archive)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                link = zf.read(info).decode("utf-8", "surrogateescape")
                _check_link(info.filename.rstrip("/"), link, False, archive, root)
                links[info.filename] = link
            # any other unix file type in a zip is written as a plain file, as zipfile itself does
        for info in infos:
            rel = str(_check_name(info.filename, archive))
            target = os.path.join(root, rel)
            if not _inside(os.path.realpath(os.path.dirname(target)), root):
                raise UnsafeArchiveError(f"{archive}: member {info.filename!r} would be written through a link outside the target")
            if info.filename in links:
                link = links[info.filename]
                if not _inside(os.path.realpath(os.path.join(os.path.dirname(target), link)), root):
                    raise UnsafeArchiveError(f"{archive}: link {info.filename!r} -> {link!r} resolves outside the target")
                if os.path.lexists(target):
                    os.unlink(target)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.symlink(link, target)
            elif info.is_dir():
                os.makedirs(target, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                if os.path.islink(target):
                    os.unlink(target)
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)


# --------------------------------------------------------------------------------------------------
# official sources and local copies


@dataclass(frozen=True)
class Source:
    """Where a corpus (or one part of it) comes from and how a local copy is recognised.

    ``dirname``: folder under ``data_dir`` that holds the corpus (the download lands there too).
    ``roots``: glob patterns, relative to ``data_dir/dirname``, for candidate root folders; a
    candidate counts when every entry of ``check`` exists below it (``"a|b"``: either a or b).
    The first hit (patterns in order, matches sorted) is returned.
    ``url`` None means the corpus cannot be fetched automatically (``note`` says how to get it).
    """

    dirname: str
    roots: tuple[str, ...]
    check: tuple[str, ...]
    url: str | None = None
    filename: str | None = None
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None
    note: str = ""

    def with_url(self, url: str, **kw) -> "Source":
        return replace(self, url=url, filename=kw.pop("filename", None) or self.filename, **kw)


_OPENSLR = "https://www.openslr.org/resources"


def _libri(subset: str, resource: int, md5: str | None) -> Source:
    return Source(
        dirname="librispeech",
        roots=("LibriSpeech", "*/LibriSpeech", "."),
        check=(subset,),
        url=f"{_OPENSLR}/{resource}/{subset}.tar.gz",
        filename=f"{subset}.tar.gz",
        md5=md5,
        note="OpenSLR SLR12 (LibriSpeech) / SLR31 (mini LibriSpeech), CC BY 4.0",
    )


#: Official URLs and published checksums. Checksums are given only where the publisher states one
#: (OpenSLR's md5sum.txt); GitHub archives, the CMU AN4 tarball and manythings.org zips carry no
#: published checksum (and the latter two change over time), so theirs are None.
SOURCES: dict[str, Source] = {
    "fsdd": Source(
        dirname="fsdd",
        roots=(".", "*"),
        check=("recordings",),
        # pinned to the commit the local copy was taken from (v1.0.10-27-g26eb9aa)
        url="https://github.com/Jakobovski/free-spoken-digit-dataset/archive/"
        "26eb9aaf76e81b692f806f9140c2d2777410d7a1.zip",
        filename="free-spoken-digit-dataset.zip",
        note="GitHub Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0",
    ),
    "an4": Source(
        dirname="an4",
        roots=("an4", "."),
        check=("etc", "wav"),
        url="http://www.speech.cs.cmu.edu/databases/an4/an4_sphere.tar.gz",
        filename="an4_sphere.tar.gz",
        note="CMU AN4, BSD-style licence (keep an4/LICENSE)",
    ),
    "librispeech/train-clean-100": _libri("train-clean-100", 12, "2a93770f6d5c6c964bc36631d331a522"),
    "librispeech/train-clean-360": _libri("train-clean-360", 12, "c0e676e450a7ff2f54aeade5171606fa"),
    "librispeech/train-other-500": _libri("train-other-500", 12, "d1a0fd59409feb2c614ce4d30c387708"),
    "librispeech/dev-clean": _libri("dev-clean", 12, "42e2234ba48799c1f50f24a7926300a1"),
    "librispeech/dev-other": _libri("dev-other", 12, "c8d0bcc9cca99d4f8b62fcc847357931"),
    "librispeech/test-clean": _libri("test-clean", 12, "32fa31d27d2e1cad72775fee3f4849a9"),
    "librispeech/test-other": _libri("test-other", 12, "fb5a50374b501bb3bac4815ee91d3135"),
    "librispeech/train-clean-5": _libri("train-clean-5", 31, "5df7d4e78065366204ca6845bb08f490"),
    "librispeech/dev-clean-2": _libri("dev-clean-2", 31, "6d7ab67ac6a1d2c993d050e16d61080d"),
    "wakeword": Source(
        dirname="wakeword",
        roots=(".", "*"),
        check=("audio",),
        url="https://github.com/Picovoice/wake-word-benchmark/archive/84919190fb1891bf0936dcb577d9268e467f876f.zip",
        filename="wake-word-benchmark.zip",
        note="GitHub Picovoice/wake-word-benchmark (folder audio/), Apache-2.0",
    ),
    "alphanumeric": Source(
        dirname="alphanumeric",
        roots=(".", "*"),
        check=("audio_data", "metadata.csv"),
        url="https://github.com/Sakshee5/alphanumeric-audio-dataset/archive/6c9a38ed7e590a45410fdc33a548005a30f03552.zip",
        filename="alphanumeric-audio-dataset.zip",
        note="GitHub Sakshee5/alphanumeric-audio-dataset, MIT",
    ),
    "commonvoice": Source(
        dirname="commonvoice",
        roots=(".", "*", "*/*"),
        check=("clips", "train.tsv"),
        note="Common Voice releases need an accepted licence/e-mail at https://commonvoice.mozilla.org/datasets "
        "(CC0); download and extract one language, e.g. to data/commonvoice/cv-corpus-17.0-2024-03-15/<lang>/",
    ),
    "tatoeba_kor_eng": Source(
        dirname="tatoeba_kor_eng",
        roots=(".", "*"),
        check=("kor.txt",),
        url="https://www.manythings.org/anki/kor-eng.zip",
        filename="kor-eng.zip",
        note="manythings.org/anki + tatoeba.org, CC BY 2.0 FR",
    ),
    "tatoeba_eng_fra": Source(
        dirname="tatoeba_eng_fra",
        roots=(".", "*"),
        check=("fra.txt|eng-fra.txt",),  # the official zip holds fra.txt; the PyTorch tutorial calls it eng-fra.txt
        url="https://www.manythings.org/anki/fra-eng.zip",
        filename="fra-eng.zip",
        note="manythings.org/anki + tatoeba.org, CC BY 2.0 FR",
    ),
}


def find_local(source: Source, data_dir: str | os.PathLike) -> Path | None:
    """The root of an existing local copy of *source* under ``data_dir/source.dirname``, or None."""
    base = Path(data_dir) / source.dirname
    if not base.is_dir():
        return None
    for pattern in source.roots:
        cands = [base] if pattern == "." else sorted(p for p in base.glob(pattern) if p.is_dir())
        for cand in cands:
            if all(any((cand / alt).exists() for alt in c.split("|")) for c in source.check):
                return cand
    return None


def find_or_download(
    corpus: str,
    data_dir: str | os.PathLike,
    *,
    download_missing: bool = True,
    source: Source | None = None,
) -> Path:
    """Return the root folder of *corpus* under *data_dir*, downloading and extracting it if needed.

    *corpus* is a key of :data:`SOURCES` (e.g. ``"an4"``, ``"librispeech/dev-clean"``). A local copy
    in ``data_dir/<dirname>/`` is always preferred; only when none is found is the archive fetched
    from the official URL (or ``source.url`` when *source* overrides the entry, e.g. for a mirror),
    verified, and extracted into ``data_dir/<dirname>/``.
    """
    if source is None:
        if corpus not in SOURCES:
            raise KeyError(f"unknown corpus source {corpus!r}; known: {', '.join(sorted(SOURCES))}")
        source = SOURCES[corpus]
    found = find_local(source, data_dir)
    if found is not None:
        return found
    where = Path(data_dir) / source.dirname
    if source.url is None:
        raise FileNotFoundError(f"{corpus}: no local copy under {where} and no automatic download. {source.note}")
    if not download_missing:
        raise FileNotFoundError(f"{corpus}: no local copy under {where} (downloads disabled; official URL {source.url})")
    filename = source.filename or Path(urllib.parse.urlparse(source.url).path).name
    log.info("%s: no local copy under %s; downloading %s", corpus, where, source.url)
    try:
        archive = download(source.url, where / filename, sha256=source.sha256, md5=source.md5, size=source.size)
    except DownloadError as exc:  # say where a local copy was looked for: the usual fix on an offline machine
        raise DownloadError(f"{corpus}: no local copy under {where} (the data root is --data-dir, else $ASR_S2S_DATA, "
                            f"else ./data) and the download failed: {exc}") from exc
    extract(archive, where)
    found = find_local(source, data_dir)
    if found is None:
        raise DownloadError(f"{source.url}: extracted into {where} but the expected layout ({', '.join(source.check)}) is missing")
    return found
