"""The lock of a run directory: one writer at a time, and a refused command changes nothing.

``DIR/.lock`` is held with ``fcntl.flock(LOCK_EX | LOCK_NB)``; a second writer gets a
:class:`~ppl_vae.errors.UserError` naming the holder's pid, which :func:`take` writes into
the file. The lock dies with its process, so a crash never leaves the directory locked.

``.lock`` is never written in place once it existed before the command: the holder locks
the file found, then puts a new file holding its pid in its place by rename (a new inode,
locked before the rename), so a backup made with ``cp -al`` keeps its own ``.lock`` byte
for byte, and a ``.lock`` hard-linked to a file of the user's never touches that file.
:func:`release` after a failure puts ``.lock`` back as it was found: removed when this
command created it (with the folders it created, when empty again), else its old bytes
back, again by rename. A ``.lock`` over :data:`LOCK_LIMIT` bytes is not a pid of ours: it is
locked but never replaced. A lock is held only when, once locked, it is still the file
named ``.lock`` (else it is taken again), so a holder may replace or remove it.

Example::

    >>> import tempfile
    >>> from pathlib import Path
    >>> held = take(Path(tempfile.mkdtemp()) / "run")
    >>> (held.folder / LOCK).read_text() == f"{os.getpid()}\\n"
    True
    >>> release(held, failed=True)
    >>> held.folder.exists()
    False
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ppl_vae.errors import UserError
from ppl_vae.runs import atomic
from ppl_vae.runs.manifest import LOCK

#: The most bytes of an existing ``.lock`` that :func:`take` replaces (and puts back when
#: the command fails); a pid takes a few.
LOCK_LIMIT = 4096

_FLAGS = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass
class Held:
    """A lock taken by :func:`take`: the descriptor of the locked ``.lock``, whether this
    call created it, its bytes before (None when created) and the folders it made."""

    folder: Path
    fd: int
    created: bool
    found: bytes | None
    mode: int
    made: list[Path]


def take(folder: Path) -> Held:
    """Lock ``folder`` (created if missing) for this process; see the module docstring."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {folder} is a file, not a directory; choose a directory path")
    made = missing_folders(folder)
    try:
        fd, created = _lock_current(folder)
    except BaseException:
        remove_empty(made)
        raise
    found = None if created else os.pread(fd, LOCK_LIMIT + 1, 0)
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    pid = f"{os.getpid()}\n".encode()
    try:
        if created:  # a new file nobody else links: written in place
            os.pwrite(fd, pid, 0)
        elif len(found) <= LOCK_LIMIT:
            fd = _swap(folder, fd, pid, mode)
    except BaseException:
        os.close(fd)
        remove_empty(made)
        raise
    return Held(folder, fd, created, found, mode, made)


def release(held: Held, failed: bool) -> None:
    """Let go of the lock; after a ``failed`` command, ``.lock`` as it was found."""
    try:
        if failed:
            with contextlib.suppress(OSError):
                _put_back(held)
    finally:
        os.close(held.fd)  # releases the flock


def _put_back(held: Held) -> None:
    lock = held.folder / LOCK
    if held.created:
        if os.path.samestat(os.fstat(held.fd), os.lstat(lock)):
            os.unlink(lock)
        remove_empty(held.made)
    elif held.found is not None and len(held.found) <= LOCK_LIMIT:
        held.fd = _swap(held.folder, held.fd, held.found, held.mode)


def _swap(folder: Path, fd: int, data: bytes, mode: int) -> int:
    """Put a new file holding ``data`` (with ``mode``) in place of the locked ``.lock`` (by
    rename, locked before it is named), then let go of the old one; returns the new
    descriptor."""
    new_fd, tmp = atomic.new_tmp(folder, LOCK)
    try:
        fcntl.flock(new_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new inode: nobody holds it
        os.write(new_fd, data)
        os.fchmod(new_fd, mode)
        os.replace(tmp, folder / LOCK)
    except BaseException:
        os.close(new_fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return new_fd


def _lock_current(folder: Path) -> tuple[int, bool]:
    """Open and flock ``.lock`` until the file locked is the one named ``.lock``."""
    lock = folder / LOCK
    while True:
        fd, created = _open(folder)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise UserError(
                    f"{folder} is being written by another ppl-vae process "
                    f"(pid {holder}); wait for it or choose another --out"
                ) from None
            raise
        try:
            current = os.lstat(lock)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(os.fstat(fd), current):
            return fd, created
        os.close(fd)  # its holder replaced or removed that file: lock the one there now


def _open(folder: Path) -> tuple[int, bool]:
    """``DIR/.lock``, opened without following a link and without blocking, and only when
    it is a regular file: a ``.lock -> ../thesis.tex`` (or a FIFO) is refused before a
    byte of it is touched. Returns the descriptor and whether this call created it."""
    lock = folder / LOCK
    while True:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            try:
                fd, created = os.open(lock, _FLAGS | os.O_CREAT | os.O_EXCL, 0o666), True
            except FileExistsError:
                fd, created = os.open(lock, _FLAGS), False
            break
        except FileNotFoundError:
            continue  # removed between the two opens: create it
        except OSError as exc:
            if exc.errno == errno.ELOOP or os.path.islink(lock):
                raise UserError(
                    f"{lock} is a symlink; ppl-vae never follows one; remove the link"
                ) from None
            raise UserError(
                f"cannot write into {folder} ({exc.strerror}); choose another --out"
            ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UserError(
            f"{lock} is not a regular file; ppl-vae will not write it; remove it yourself"
        )
    return fd, created


def missing_folders(path: Path) -> list[Path]:
    """``path`` and those of its parents that do not exist, deepest first."""
    missing = []
    while not os.path.lexists(path):
        missing.append(path)
        path = path.parent
    return missing


def remove_empty(folders: Iterable[Path]) -> None:
    """Remove each folder (deepest first as given) that is empty; leave the others."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()
