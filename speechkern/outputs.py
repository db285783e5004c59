"""Writing outputs safely: atomic writes, and no output folder's contents replaced without ``--overwrite``.

Every file speechkern writes (audio, models, caches, tables, figures) goes through :func:`atomic_write`: a
temporary file in the target's folder, then a rename, so an interrupted write leaves the previous file, or none,
never a truncated one.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from speechkern.errors import SpeechkernError

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read the process umask once (setting it back at once)


def atomic_write(path: str | os.PathLike, write: Callable[[str], object], replace: bool = True) -> Path:
    """Create ``path`` by calling ``write(tmp)`` on a temporary path beside it, then renaming; returns ``path``.

    The file gets the mode a plain ``open`` would give it (mkstemp's are private), and parent folders are created
    (and removed again, when empty, if the write fails). Raises SpeechkernError, before ``write``, when ``path`` is a
    folder or lies below a file.
    replace: False creates ``path`` exclusively: when another process created it meanwhile (two runs writing one
    output), its file is kept and SpeechkernError names the path; a rename would silently replace it.
    """
    path = check_name(path)
    _check_not_blocked(path)
    created = [folder for folder in path.parents if not folder.exists()]  # innermost first
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # after writing: some writers (safetensors) recreate the file as 0600
        if replace:
            os.replace(tmp, path)
        else:
            _move_exclusive(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
            for folder in created:  # a failed write leaves no empty folders behind either
                folder.rmdir()
        raise
    return path


PART = re.compile(r"^\..+\.[a-z0-9_]{8}\.part$")  # atomic_write's temporary file: .<name>.<mkstemp suffix>.part


def remove_parts(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files (:data:`PART`) that :func:`atomic_write`s left in ``folder`` and below when their
    process was killed (SIGKILL, power loss: no clean-up ran); returns them. For a command that resumes in
    ``folder``: call it where no other process writes there."""
    root = Path(folder)
    if not root.is_dir():
        return []
    found = [p for p in sorted(root.rglob(".*.part")) if PART.match(p.name) and p.is_file()]
    for path in found:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return found


def _check_not_blocked(path: Path) -> None:
    """Refuse an output that is a folder (a rename onto it fails only after the work), or lies below a file."""
    if path.is_dir():
        raise SpeechkernError(f"{path}: is a folder; name a file for this output, or move the folder away")
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise SpeechkernError(f"{path}: cannot be written, {blocker} is a file, not a folder; move it away or "
                              "choose another output")  # fmt: skip


# What atomic_write adds to a name for its temporary file: "." before, ".XXXXXXXX.part" after (mkstemp's 8 letters).
_PART_BYTES = len(".") + len(".XXXXXXXX") + len(".part")


def check_name(path: str | os.PathLike) -> Path:
    """Refuse, before any work, an output whose name (with the temporary file's additions) is longer than its file
    system allows (255 bytes on most), naming it and what to do."""
    path = Path(path)
    folder = next((p for p in path.parents if p.is_dir()), Path("."))
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        limit = 255
    size = len(os.fsencode(path.name))
    if size + _PART_BYTES > limit:
        raise SpeechkernError(
            f"{path}: the name is {size} bytes, and this file system takes {limit - _PART_BYTES} at most for an "
            "output (its temporary file adds to it); choose a shorter name or folder"
        )
    return path


def _move_exclusive(tmp: str, path: Path) -> None:
    """Rename ``tmp`` to ``path`` unless ``path`` exists: a hard link fails atomically where a rename replaces."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise SpeechkernError(
            f"{path}: was created by another process while this one was writing it; that file is kept and this "
            "result discarded (allow replacing it, or choose another output name)"
        ) from None
    except OSError:  # a file system without hard links (FAT, some network shares): check, then rename
        if path.exists():
            raise SpeechkernError(f"{path}: was created by another process while this one was writing it; that "
                                  "file is kept and this result discarded") from None  # fmt: skip
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def csv_text(rows: list[dict], format_value: Callable[[object], object] = lambda v: v) -> str:
    """Rows of dicts as CSV text: the columns in order of first appearance, missing values empty, each value
    passed through ``format_value``."""
    import csv
    import io

    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: format_value(v) for k, v in row.items()} for row in rows)
    return buffer.getvalue()


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def check_out_dir(out_dir: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse an output folder that already holds files unless ``overwrite``, and a path that is a file."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SpeechkernError(f"{out}: is a file, not a folder; choose another output folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise SpeechkernError(
            f"{out}: the output folder is not empty; pass overwrite=True to replace its results or choose another "
            "output folder"
        )
    return out


def check_writable(path: str | os.PathLike, n_bytes: int = 0) -> Path:
    """Refuse, before any work, an output file that cannot be created: it is a folder, its folder (or the nearest
    existing one above it) is a file, not writable (read-only disk, permissions), or has less than ``n_bytes`` free."""
    path = Path(path)
    if path.is_dir():
        raise SpeechkernError(f"{path}: is a folder; name a file for this output, or move the folder away")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise SpeechkernError(f"{path}: cannot be written, {folder} is a file, not a folder; choose another output")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise SpeechkernError(
            f"{path}: cannot be written in {folder} ({err.strerror or err}); choose a writable folder"
        ) from None
    free = shutil.disk_usage(folder).free
    if n_bytes > free:
        raise SpeechkernError(
            f"{path}: needs about {format_bytes(n_bytes)} but {folder} has {format_bytes(free)} free; "
            "free some space or choose another folder"
        )
    return path


def format_bytes(n: float) -> str:
    """``n`` bytes in words, one decimal below 10 of a unit: ``"0 bytes"``, ``"512 bytes"``, ``"3.4 kB"``,
    ``"12 MB"``, ``"1.5 GB"`` (powers of 1000, as disk sizes are written)."""
    if n < 1000:
        return f"{n:.0f} bytes"
    for unit in ("kB", "MB", "GB", "TB"):
        n /= 1000
        if n < 999.5:
            return f"{n:.1f} {unit}" if n < 9.95 else f"{n:.0f} {unit}"
    return f"{n:.3g} TB"
