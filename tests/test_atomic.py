"""Atomic writes: the target is the old content or the whole new content, never a part."""

from __future__ import annotations

import os
import stat

import pytest

from asr_s2s.atomic import atomic_open, atomic_write_lines


def test_complete_write_replaces_and_has_normal_permissions(tmp_path):
    p = tmp_path / "sub" / "f.txt"
    atomic_write_lines(p, ["a", "b"])
    assert p.read_text() == "a\nb\n"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask
    with atomic_open(p, "wb", fsync=True) as f:
        f.write(b"new")
    assert p.read_bytes() == b"new"
    assert [x.name for x in p.parent.iterdir()] == ["f.txt"]  # no temporary left


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "f.txt"
    p.write_text("old")
    with pytest.raises(RuntimeError, match="midway"):
        with atomic_open(p, "w") as f:
            f.write("half of the new")
            raise RuntimeError("midway")
    assert p.read_text() == "old"
    assert [x.name for x in tmp_path.iterdir()] == ["f.txt"]


def test_only_whole_file_modes(tmp_path):
    with pytest.raises(ValueError, match="whole files"):
        with atomic_open(tmp_path / "f", "a"):
            pass
