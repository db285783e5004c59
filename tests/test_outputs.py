"""Atomic writes: the usual file mode, and an interrupted write leaves the old file and no temporary file."""

from __future__ import annotations

import os

import pytest

from speechkern.outputs import atomic_write, write_bytes, write_text


def test_written_files_get_the_mode_open_would_give(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    path = write_text(tmp_path / "sub" / "table.md", "| a |\n")
    assert path.read_text() == "| a |\n"
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_an_interrupted_write_keeps_the_previous_file(tmp_path):
    path = write_bytes(tmp_path / "model.bin", b"old")

    def fail(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, fail)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]
