"""Atomic writes: the one place ppl-vae writes a file's bytes.

Every file ppl-vae writes -- a run's JSON, checkpoints and figures (through
:class:`~ppl_vae.runs.rundir.RunDir`), the user's trusted list, ``sample --out`` --
is written to a temporary file in the same folder (``.<name>.<8 hex>.ppl-vae-tmp``,
created with ``O_EXCL``, mode ``0o666 & ~umask``), flushed and ``fsync``-ed, then renamed
over the target with ``os.replace``, and the folder is ``fsync``-ed. A reader sees the old
file or the new one, never half of one; a hard link to the old file keeps the old bytes;
a crash leaves at most a temporary, which :meth:`RunDir.cleanup_tmp` removes.

Example::

    >>> import tempfile
    >>> from pathlib import Path
    >>> d = Path(tempfile.mkdtemp())
    >>> write_text(d / "a.json", "{}")
    >>> (d / "a.json").read_text(), [p.name for p in d.iterdir()]
    ('{}', ['a.json'])
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

TMP_SUFFIX = ".ppl-vae-tmp"
#: Temporary files of an atomic write: ``.<target name>.<8 hex digits>.ppl-vae-tmp``.
TMP_PATTERN = re.compile(r"^\..+\.[0-9a-f]{8}\.ppl-vae-tmp$")


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (``/proc``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # portable fallback: read by setting, then restore at once
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode of every file a run holds: ``0o666 & ~umask``, as ``open()`` would create."""
    return 0o666 & ~current_umask()


def new_tmp(folder: Path, name: str) -> tuple[int, Path]:
    """Create an empty temporary file next to ``name`` (mode ``0o666 & ~umask``)."""
    while True:
        tmp = folder / f".{name}.{secrets.token_hex(4)}{TMP_SUFFIX}"
        try:
            return os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666), tmp
        except FileExistsError:
            continue


def fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_tmp(folder: Path, name: str, data: bytes) -> Path:
    """A new temporary file next to ``name`` holding ``data``, flushed and ``fsync``-ed:
    the one place ppl-vae writes bytes it holds (a full disk fails here, and the temporary
    is removed). The caller renames it into place or removes it."""
    fd, tmp = new_tmp(folder, name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def replace(folder: Path, name: str, data: bytes) -> None:
    """Write ``data`` to ``folder/name`` atomically (:func:`write_tmp`, then rename)."""
    tmp = write_tmp(folder, name, data)
    try:
        os.replace(tmp, folder / name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(folder)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (for files outside a run's manifest; a run's
    own files go through :class:`~ppl_vae.runs.rundir.RunDir`, which records them)."""
    path = Path(path)
    replace(path.parent, path.name, text.encode())


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[Path]:
    """A temporary path next to ``path`` for code that writes a file itself (``savefig``,
    Pillow): renamed over ``path`` on a clean exit, removed on an exception."""
    path = Path(path)
    fd, tmp = new_tmp(path.parent, path.name)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
