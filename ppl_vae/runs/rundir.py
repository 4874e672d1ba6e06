"""The run directory: one writer, a manifest of what ppl-vae wrote, confined paths, trust.

A run directory ``DIR`` (``--out DIR``) is owned by ppl-vae only in part: the files that
ppl-vae wrote into it are listed in ``DIR/manifest.json``; anything else belongs to the
user and is never replaced or removed. The rules, each enforced here:

- **validate before touching**: :meth:`RunDir.check` refuses an existing file as
  ``--out``, an unwritable folder, a non-empty directory without ``--resume`` or
  ``--overwrite``, and (for ``--overwrite``) any file that is not in the manifest -- all
  before a byte is written or removed. :meth:`RunDir.prepare` checks, then acts.
- **nothing lost**: ``--overwrite`` removes exactly the manifest's files and then the
  folders it created, if empty. Writes are atomic (a temporary file in the same folder,
  ``fsync``, ``os.replace``), the manifest entry comes first, so no file of ours ever
  looks foreign; :meth:`RunDir.cleanup_tmp` removes temporaries an interruption left
  (only names matching :data:`atomic.TMP_PATTERN`).
- **one writer**: :meth:`RunDir.lock` holds ``fcntl.flock(LOCK_EX | LOCK_NB)`` on
  ``DIR/.lock``; a second writer gets a :class:`~ppl_vae.errors.UserError` naming the pid.
  A command that fails or refuses under the lock leaves ``.lock`` as it found it (gone
  if it was not there, else its old bytes).
- **confined paths**: :meth:`RunDir.resolve` maps a relative name read from a run's JSON to
  a path inside ``DIR`` (no absolute paths, no ``..``, no symlink leaving ``DIR``).
- **uniform modes**: every file is created with mode ``0o666 & ~umask`` (0644 under the
  usual umask 022), like any file a program writes with ``open``.
- **trust**: a user's model file is copied into the run as ``model.py`` with its SHA-256
  (:meth:`RunDir.copy_model_file`); a run whose model is such a file is executed only if
  the hash is in the user's list (:func:`trust_hash`, kept in
  ``$XDG_CONFIG_HOME/ppl-vae/trusted.json``, default ``~/.config/ppl-vae/trusted.json``)
  or the user passes ``--trust`` (:func:`check_trusted`).
- **fingerprints**: :func:`sha256_file` hashes data files for ``config.json``;
  :func:`check_fingerprint` says when a run is evaluated on data that changed since.

Example::

    >>> import tempfile
    >>> run = RunDir(tempfile.mkdtemp() + "/run")
    >>> run.check(resume=False, overwrite=False)  # validation only: nothing is written
    >>> with run.lock():
    ...     run.prepare(resume=False, overwrite=False)
    ...     _ = run.write_json("config.json", {"model": "vae"})
    >>> sorted(run.manifest()), run.is_own_regular_file("config.json")
    (['config.json'], True)
"""

from __future__ import annotations

import ast
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ppl_vae import validate
from ppl_vae.errors import UserError, first_line
from ppl_vae.runs import atomic

MANIFEST = "manifest.json"


LOCK = ".lock"


MODEL_FILE = "model.py"


#: Files hashed when recorded; larger ones get their size only (hashing is not free).
HASH_LIMIT = 64 * 2**20


#: A model file larger than this is not a hand-written program.
MODEL_FILE_LIMIT = 4 * 2**20


_INTERNAL = {MANIFEST, LOCK}


#: The most bytes of an existing ``.lock`` that :meth:`RunDir.lock` rewrites (and puts back
#: when the command fails); a pid takes a few.
LOCK_LIMIT = 4096


#: The most bytes ppl-vae reads from one JSON file of a run, a data root or the trusted
#: list (a run's ``metrics.json`` with a long history is a few MiB).
JSON_LIMIT = 64 * 2**20


#: The deepest nesting ppl-vae accepts in such a JSON file (its own records nest < 10).
JSON_DEPTH = 64


_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


def read_regular(path: str | Path, limit: int, what: str = "file") -> bytes:
    """The bytes of ``path``, refused in one :class:`UserError` line unless it is a
    regular file (opened without following a final symlink, without blocking on a FIFO)
    of at most ``limit`` bytes. Nothing larger than ``limit`` is ever read."""
    path = Path(path)
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UserError(
                f"{what} {path} is a symlink; ppl-vae reads only regular files"
            ) from None
        raise UserError(f"cannot read {what} {path} ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UserError(
                f"{what} {path} is not a regular file; ppl-vae reads only regular files"
            )
        if st.st_size > limit:
            raise UserError(
                f"{what} {path} is {st.st_size} bytes, over the {limit >> 20} MiB ppl-vae reads"
            )
        chunks, left = [], limit + 1
        while left > 0:
            block = os.read(fd, min(left, 1 << 20))
            if not block:
                break
            chunks.append(block)
            left -= len(block)
        data = b"".join(chunks)
        if len(data) > limit:
            raise UserError(f"{what} {path} grew over the {limit >> 20} MiB ppl-vae reads")
        return data
    except OSError as exc:
        raise UserError(f"cannot read {what} {path} ({exc.strerror})") from None
    finally:
        os.close(fd)


def json_depth_ok(obj: Any, limit: int = JSON_DEPTH) -> bool:
    """Whether ``obj`` nests lists and objects at most ``limit`` deep (iteratively: no
    recursion to exhaust)."""
    stack = [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        elif not isinstance(item, list):
            continue
        if depth > limit:
            return False
        stack.extend((v, depth + 1) for v in item if isinstance(v, (dict, list)))
    return True


def parse_json(data: bytes, where: str) -> Any:
    """JSON from bytes, every failure of the parser one :class:`UserError` line:
    bad UTF-8, bad syntax, nesting deeper than :data:`JSON_DEPTH`, numbers too long."""
    try:
        obj = json.loads(data.decode("utf-8"))
    except RecursionError:
        obj = None
        deep = True
    except (ValueError, MemoryError) as exc:  # JSONDecodeError, UnicodeDecodeError, int digits
        first = first_line(exc)
        raise UserError(f"{where} is not valid JSON ({first[:200]})") from None
    else:
        deep = not json_depth_ok(obj)
    if deep:
        raise UserError(f"{where} nests deeper than {JSON_DEPTH} levels; not a ppl-vae record")
    return obj


def read_json(path: str | Path, limit: int = JSON_LIMIT, what: str = "file") -> Any:
    """:func:`read_regular` then :func:`parse_json`: the one way ppl-vae reads JSON it did
    not just write (a run's records, ``manifest.json``, ``trusted.json``, a data root's
    metadata). Any failure is one :class:`UserError` line naming the file."""
    return parse_json(read_regular(path, limit, what), f"{what} {path}")


def sha256_file(path: str | Path) -> str:
    """The hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_fingerprint(
    path: str | Path, expected: str | None, warn_only: bool = False
) -> str | None:
    """Compare a data file with the SHA-256 recorded at train time.

    Returns None when it matches (or when nothing was recorded). On a mismatch it raises
    :class:`UserError`, or with ``warn_only`` returns the message for a warning.
    """
    if expected is None:
        return None
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"data file {path} recorded in the run does not exist; put it back or pass --data"
        )
    actual = sha256_file(path)
    if actual == expected:
        return None
    message = (
        f"data file {path} changed since the run was trained (sha256 {actual[:12]}..., "
        f"recorded {expected[:12]}...); results are not comparable; use the original file "
        "or train a new run"
    )
    if warn_only:
        return message
    raise UserError(message)


@dataclass(frozen=True)
class Savepoint:
    """A run's state saved by :meth:`RunDir.savepoint`: the manifest's bytes (None when it
    had none) and the bytes of the files saved, in the order they are put back."""

    manifest: bytes | None
    files: dict[str, bytes]


class RunDir:
    """One run directory: validation, the lock, atomic recorded writes, confined reads."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock_fd: int | None = None
        self._lock_depth = 0

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ------------------------------------------------------------------ validation
    def check(self, resume: bool, overwrite: bool) -> None:
        """Refuse every state of the file system the run cannot start from. Writes nothing."""
        out = self.path
        validate.out_path(out)
        if resume and overwrite:
            raise UserError("--resume and --overwrite exclude each other; pass one of them")
        if out.is_symlink() and not out.is_dir():
            raise UserError(f"--out {out} is a dangling symlink; choose a directory path")
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out} is a file, not a directory; choose a directory path")
        if not out.exists():
            if resume:
                raise UserError(
                    f"--resume: {out} does not exist; train there without --resume first"
                )
            self._check_creatable(out)
            return
        if not os.access(out, os.W_OK | os.X_OK):
            raise UserError(f"--out {out} is not writable; choose a folder you can write to")
        has_manifest = (out / MANIFEST).is_file()
        contents = self._contents()
        if resume:
            if not has_manifest:
                raise UserError(
                    f"--resume: {out} has no {MANIFEST}, so it was not written by this version "
                    "of ppl-vae; start a new run with another --out"
                )
            self.manifest()  # a damaged manifest is an error now, not halfway through
            return
        if not contents:
            return
        listed = set(self.manifest()) if has_manifest else set()
        foreign = sorted(
            p
            for p in contents
            if (p not in listed and not atomic.TMP_PATTERN.match(Path(p).name))
            or not stat.S_ISREG(os.lstat(out / p).st_mode)
        )
        if not overwrite:
            raise UserError(
                f"{out} already holds files ({_some(contents)}); pass --resume to continue that "
                "run, --overwrite to replace it, or choose another --out"
            )
        if foreign:
            raise UserError(
                f"--overwrite refuses {out}: it holds files ppl-vae did not write "
                f"({_some(foreign)}); move them away or choose another --out"
            )

    @staticmethod
    def _check_creatable(out: Path) -> None:
        parent = out.parent
        while not parent.exists():
            if parent.is_symlink():
                raise UserError(f"--out {out}: {parent} is a dangling symlink; fix or remove it")
            parent = parent.parent
        if not parent.is_dir():
            raise UserError(f"--out {out}: {parent} is a file, not a folder; choose another --out")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise UserError(
                f"--out {out}: cannot create it in {parent} (not writable); choose a folder "
                "you can write to"
            )

    def _contents(self) -> list[str]:
        """Relative names of every file (and symlink or special file) under the directory,
        leaving out the lock and the manifest. Empty folders count as nothing."""
        found = []
        for root, dirs, files in os.walk(self.path):
            rel = Path(root).relative_to(self.path)
            for name in files + [d for d in dirs if (Path(root) / d).is_symlink()]:
                relname = (rel / name).as_posix()
                if relname not in _INTERNAL:
                    found.append(relname)
        return sorted(found)

    # ----------------------------------------------------------------- preparation
    def prepare(self, resume: bool, overwrite: bool) -> None:
        """Check (:meth:`check`), then make the directory ready: created if missing,
        emptied of our files with ``overwrite``, and cleared of temporaries. Needs the lock,
        so take :meth:`lock` first (it creates the directory)."""
        self.check(resume, overwrite)
        self._require_lock()
        self.cleanup_tmp()
        if overwrite:
            self._remove_recorded()

    def _remove_recorded(self) -> None:
        manifest = self._read_manifest()
        for name in manifest["files"]:
            self.resolve(name)
            path = self.path / name  # the name itself: a link is removed, never its target
            if path.is_symlink() or path.is_file():
                path.unlink()
        for name in sorted(manifest["dirs"], key=lambda d: -d.count("/")):
            with contextlib.suppress(OSError):  # not empty or gone: it stays
                self.resolve(name).rmdir()
        self._write_manifest({"files": {}, "dirs": []})

    # ------------------------------------------------------------------------- lock
    @contextlib.contextmanager
    def lock(self) -> Iterator[RunDir]:
        """Hold the directory's exclusive lock (creating the directory if needed).

        A second process gets a :class:`UserError`; the lock dies with its process, so a
        crash never leaves the directory locked. Re-entrant within one :class:`RunDir`.

        The holder's pid is written into ``.lock`` (a second writer's error names it), and
        it stays there when the body succeeds: that command wrote the run. When the body
        raises -- a command refused after taking the lock (``report``, ``evaluate``,
        ``analyze`` or a ``--resume`` that finds a foreign file), or a job that failed and
        rolled back -- the lock is put back as it was found: a ``.lock`` this call created
        is removed, with the folders it created when they are empty again, and an existing
        one gets its old bytes back. A refused command thus changes no byte of the run. A
        ``.lock`` over :data:`LOCK_LIMIT` bytes is not a pid of ours: it is locked but never
        rewritten. Since a lock file may now be removed, one is held only when, once
        locked, it is still the file named ``.lock`` (else the lock is taken again).
        """
        if self._lock_fd is not None:
            self._lock_depth += 1
            try:
                yield self
            finally:
                self._lock_depth -= 1
            return
        if self.path.exists() and not self.path.is_dir():
            raise UserError(
                f"--out {self.path} is a file, not a directory; choose a directory path"
            )
        made = _missing_folders(self.path)
        try:
            fd, created, found = self._take_lock()
        except BaseException:
            _remove_empty(made)
            raise
        self._lock_fd = fd
        try:
            yield self
        except BaseException:
            self._put_back_lock(fd, created, found, made)
            raise
        finally:
            self._lock_fd = None
            os.close(fd)  # releases the flock

    def _take_lock(self) -> tuple[int, bool, bytes | None]:
        """Open and flock ``.lock``; returns the descriptor, whether this call created the
        file, and its bytes before the pid was written (None when created)."""
        lock = self.path / LOCK
        while True:
            fd, created = self._open_lock()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise UserError(
                        f"{self.path} is being written by another ppl-vae process "
                        f"(pid {holder}); wait for it or choose another --out"
                    ) from None
                raise
            try:
                current = os.lstat(lock)
            except FileNotFoundError:
                current = None
            if current is not None and os.path.samestat(os.fstat(fd), current):
                break
            os.close(fd)  # its holder removed that file as it let go: lock the one there now
        found = None if created else os.pread(fd, LOCK_LIMIT + 1, 0)
        if found is None or len(found) <= LOCK_LIMIT:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd, created, found

    def _put_back_lock(self, fd: int, created: bool, found: bytes | None, made: list[Path]) -> None:
        """``.lock`` as :meth:`lock` found it (see there), while still holding it."""
        lock = self.path / LOCK
        with contextlib.suppress(OSError):
            if created:
                if os.path.samestat(os.fstat(fd), os.lstat(lock)):
                    os.unlink(lock)
                _remove_empty(made)
            elif found is not None and len(found) <= LOCK_LIMIT:
                os.ftruncate(fd, len(found))
                os.pwrite(fd, found, 0)

    def _open_lock(self) -> tuple[int, bool]:
        """``DIR/.lock``, opened without following a link and without blocking, and only
        when it is a regular file with one link: a ``.lock -> ../thesis.tex`` (or a hard
        link to it, or a FIFO) is refused before a byte of it is touched. Returns the
        descriptor and whether this call created the file."""
        lock = self.path / LOCK
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        while True:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
                try:
                    fd, created = os.open(lock, flags | os.O_CREAT | os.O_EXCL, 0o666), True
                except FileExistsError:
                    fd, created = os.open(lock, flags), False
                break
            except FileNotFoundError:
                continue  # removed between the two opens: create it
            except OSError as exc:
                if exc.errno == errno.ELOOP or os.path.islink(lock):
                    raise UserError(
                        f"{lock} is a symlink; ppl-vae never follows one; remove the link"
                    ) from None
                raise UserError(
                    f"cannot write into {self.path} ({exc.strerror}); choose another --out"
                ) from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            os.close(fd)
            kind = "is not a regular file" if not stat.S_ISREG(st.st_mode) else "has other links"
            raise UserError(f"{lock} {kind}; ppl-vae will not write it; remove it yourself")
        return fd, created

    def _require_lock(self) -> None:
        if self._lock_fd is None:
            raise RuntimeError(f"write into {self.path} outside `with RunDir.lock()`")

    # --------------------------------------------------------------------- manifest
    def _read_manifest(self) -> dict[str, Any]:
        path = self.path / MANIFEST
        if not os.path.lexists(path):
            return {"files": {}, "dirs": []}
        try:
            body = read_json(path, what="manifest")
            if not isinstance(body, dict):
                raise TypeError("expected an object")
            files, dirs = body["files"], body["dirs"]
            if not isinstance(files, dict) or not isinstance(dirs, list):
                raise TypeError("files must be an object and dirs a list")
            for name in [*files, *dirs]:
                if not isinstance(name, str) or not name or "\x00" in name:
                    raise TypeError(f"entry {name!r} is not a file name")
                if Path(name).is_absolute() or ".." in Path(name).parts:
                    raise ValueError(f"entry {name!r} leaves the run directory")
        except (OSError, ValueError, KeyError, TypeError, UserError) as exc:
            raise UserError(
                f"{path} is damaged ({exc}); ppl-vae cannot tell its files from yours, so "
                "remove the run yourself or choose another --out"
            ) from None
        return {"files": files, "dirs": dirs}

    def manifest(self) -> dict[str, dict[str, Any]]:
        """The files ppl-vae wrote: ``{relative name: {"size": ..., "sha256": ...}}``."""
        return self._read_manifest()["files"]

    def _write_manifest(self, body: dict[str, Any]) -> None:
        data = json.dumps({"format": 1, **body}, indent=1, sort_keys=True) + "\n"
        atomic.replace(self.path, MANIFEST, data.encode())

    def _add_to_manifest(self, name: str, entry: dict[str, Any], new_dirs: list[str]) -> None:
        self._add_all_to_manifest({name: entry}, new_dirs)

    def _add_all_to_manifest(self, entries: dict[str, dict[str, Any]], new_dirs: list[str]) -> None:
        body = self._read_manifest()
        body["files"].update(entries)
        body["dirs"] = sorted(set(body["dirs"]) | set(new_dirs))
        self._write_manifest(body)

    # ----------------------------------------------------------------------- writes
    def _target(self, name: str) -> tuple[Path, list[str]]:
        """The confined path for ``name``, its missing parent folders created (and named),
        refusing to replace anything that is not ours."""
        path = self.resolve(name)
        rel = path.relative_to(self.path.resolve()).as_posix()
        if rel in _INTERNAL or atomic.TMP_PATTERN.match(path.name) or rel == ".":
            raise UserError(f"{name!r} is a name ppl-vae reserves inside a run directory")
        step = self.path
        for part in Path(name).parts:
            step = step / part
            if step.is_symlink():
                raise UserError(f"{step} is a symlink; ppl-vae writes only regular files")
        if path.exists() and not path.is_file():
            raise UserError(f"{path} is not a regular file; move it away and run again")
        if path.exists() and rel not in self.manifest():
            raise UserError(
                f"{path} was not written by ppl-vae; ppl-vae will not replace it; move it away"
            )
        created = []
        folder = path.parent
        missing = []
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        for d in reversed(missing):
            d.mkdir()
            created.append(d.relative_to(self.path.resolve()).as_posix())
        return path, created

    def write_bytes(self, name: str, data: bytes) -> Path:
        """Write ``data`` to ``name`` inside the run, atomically, recorded in the manifest."""
        self._require_lock()
        path, created = self._target(name)
        rel = path.relative_to(self.path.resolve()).as_posix()
        tmp = atomic.write_tmp(path.parent, path.name, data)
        try:
            entry = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            self._add_to_manifest(rel, entry, created)  # listed before it exists
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        atomic.fsync_dir(path.parent)
        return path

    def write_text(self, name: str, text: str) -> Path:
        """:meth:`write_bytes` of UTF-8 text."""
        return self.write_bytes(name, text.encode("utf-8"))

    def write_json(self, name: str, obj: Any) -> Path:
        """:meth:`write_text` of ``obj`` as indented JSON; NaN and inf are refused
        (``allow_nan=False``: JSON has no such values)."""
        return self.write_text(name, json.dumps(obj, indent=1, allow_nan=False) + "\n")

    @contextlib.contextmanager
    def atomic_path(self, name: str) -> Iterator[Path]:
        """A temporary path for code that writes files itself (``safetensors.save_file``,
        ``savefig``): on a clean exit it is recorded, given the uniform mode and renamed to
        ``name``; on an exception it is removed.

        >>> import tempfile
        >>> run = RunDir(tempfile.mkdtemp())
        >>> with run.lock(), run.atomic_path("a.txt") as tmp:
        ...     _ = tmp.write_text("hi")
        >>> (run.path / "a.txt").read_text()
        'hi'
        """
        self._require_lock()
        path, created = self._target(name)
        fd, tmp = atomic.new_tmp(path.parent, path.name)
        os.close(fd)
        try:
            yield tmp
            os.chmod(tmp, atomic.file_mode())
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            self._add_to_manifest(self._rel(path), self._entry(tmp), created)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        atomic.fsync_dir(path.parent)

    @contextlib.contextmanager
    def staged(self) -> Iterator[Callable[[str], Path]]:
        """:meth:`atomic_path` for several files that other code writes (a run's figures):
        ``path_for(name)`` checks ``name`` (ours or new, no link) and gives a temporary path
        for it; on a clean exit every one is listed in the manifest with one write and
        renamed into place, on an exception all are removed. A file another link points at
        (a hard-linked backup) keeps its old bytes: the new ones arrive by rename."""
        self._require_lock()
        pending: dict[str, tuple[Path, Path, list[str]]] = {}

        def path_for(name: str) -> Path:
            path, created = self._target(name)
            fd, tmp = atomic.new_tmp(path.parent, path.name)
            os.close(fd)
            pending[name] = (path, tmp, created)
            return tmp

        try:
            yield path_for
            entries, created_all = {}, set()
            for path, tmp, created in pending.values():
                os.chmod(tmp, atomic.file_mode())
                with open(tmp, "rb") as f:
                    os.fsync(f.fileno())
                entries[self._rel(path)] = self._entry(tmp)
                created_all.update(created)
            self._add_all_to_manifest(entries, sorted(created_all))
            for path, tmp, _ in pending.values():
                os.replace(tmp, path)
        except BaseException:
            for _, tmp, _ in pending.values():
                tmp.unlink(missing_ok=True)
            raise
        for folder in {path.parent for path, _, _ in pending.values()}:
            atomic.fsync_dir(folder)

    def check_writable(self, names: Iterable[str]) -> None:
        """Refuse, before any work, names this run could not write (a link, a folder, a
        file ppl-vae did not write); writes nothing."""
        for name in names:
            path = self.path / name
            if (path.exists() or path.is_symlink()) and not self.is_own_regular_file(name):
                raise UserError(f"{path} was not written by ppl-vae; move it away and run again")

    def record(self, path: str | Path) -> Path:
        """Adopt a file another function wrote inside the run (a figure): give it the
        uniform mode and list it in the manifest. Refuses paths outside the run."""
        return self.record_all([path])[0]

    def record_all(self, paths: Iterable[str | Path]) -> list[Path]:
        """:meth:`record` for several files, with one write of the manifest (each write
        waits for the disk: a run's figures are recorded at once). Every path is checked
        before any is recorded."""
        self._require_lock()
        root = self.path.resolve()
        targets, entries, created = [], {}, set()
        for path in map(Path, paths):
            rel = os.path.relpath(path, self.path) if path.is_absolute() else path.as_posix()
            target = self.resolve(rel)
            if target.is_symlink() or not target.is_file():
                raise UserError(
                    f"{target} is not a regular file; ppl-vae records only its own files"
                )
            targets.append(target)
            folder = target.parent
            while folder != root:
                created.add(folder.relative_to(root).as_posix())
                folder = folder.parent
        for target in targets:
            os.chmod(target, atomic.file_mode())
            entries[self._rel(target)] = self._entry(target)
        self._add_all_to_manifest(entries, sorted(created))
        return targets

    @contextlib.contextmanager
    def recording(self, folder: str) -> Iterator[Path]:
        """Hold the lock while other code writes files into ``folder`` of the run (the
        analysis), then record them. Refused first when ``folder`` is a symlink or holds
        files ppl-vae did not write (they would be overwritten)."""
        with self.lock():
            path = self.resolve(folder)

            def inside(p: Path) -> str:  # relative to the run, whether its path is or not
                return (Path(folder) / p.relative_to(path)).as_posix()

            if (self.path / folder).is_symlink():
                raise UserError(
                    f"{self.path / folder} is a symlink; ppl-vae writes only into "
                    "its own folders; remove the link"
                )
            if path.exists():
                foreign = [
                    inside(p)
                    for p in sorted(path.rglob("*"))
                    if (p.is_symlink() or p.is_file())
                    and not atomic.TMP_PATTERN.match(p.name)
                    and not self.is_own_regular_file(inside(p))
                ]
                if foreign:
                    raise UserError(
                        f"{path} holds files ppl-vae did not write ({_some(foreign)}); move "
                        "them away and run again"
                    )
            try:
                yield path
            finally:  # also when the body fails: what it wrote stays ppl-vae's own
                self.record_all(
                    inside(p)
                    for p in (sorted(path.rglob("*")) if path.exists() else [])
                    if not p.is_symlink() and p.is_file() and not atomic.TMP_PATTERN.match(p.name)
                )

    def _rel(self, path: Path) -> str:
        return path.resolve().relative_to(self.path.resolve()).as_posix()

    @staticmethod
    def _entry(path: Path) -> dict[str, Any]:
        size = path.stat().st_size
        return {"size": size, "sha256": sha256_file(path) if size <= HASH_LIMIT else None}

    def remove(self, name: str) -> None:
        """Delete one of our files (an old checkpoint) and drop it from the manifest."""
        self._require_lock()
        body = self._read_manifest()
        if name not in body["files"]:
            raise UserError(f"{name} is not a file ppl-vae wrote into {self.path}; left alone")
        path = self.resolve(name)
        if path.is_file() or path.is_symlink():
            path.unlink()
        del body["files"][name]
        self._write_manifest(body)

    def cleanup_tmp(self) -> list[str]:
        """Remove temporaries an interrupted write left behind (only :data:`atomic.TMP_PATTERN`
        names, only regular files); returns their relative names."""
        self._require_lock()
        removed = []
        for root, _dirs, files in os.walk(self.path):
            for name in files:
                p = Path(root) / name
                if atomic.TMP_PATTERN.match(name) and not p.is_symlink() and p.is_file():
                    p.unlink()
                    removed.append(p.relative_to(self.path).as_posix())
        return sorted(removed)

    # -------------------------------------------------------------------- roll-back
    def savepoint(self, names: Iterable[str] = ()) -> Savepoint:
        """What :meth:`roll_back` needs to put the run back as it is now: the manifest's
        bytes and those of each of ``names`` that is a file ppl-vae wrote here, read once
        (a job's start; nothing is done per step). A job names the files it may replace
        or append to (the checkpoint's weights before its record, so that a whole
        checkpoint exists at every step of a roll-back); the files it creates need no
        saving: a roll-back removes whatever the manifest lists that it did not then."""
        self._require_lock()
        manifest = self.read_bytes(MANIFEST) if os.path.lexists(self.path / MANIFEST) else None
        files: dict[str, bytes] = {}
        for name in names:
            if name not in files and self.is_own_regular_file(name):
                files[name] = self.read_bytes(name, os.lstat(self.path / name).st_size)
        return Savepoint(manifest, files)

    def roll_back(self, saved: Savepoint) -> None:
        """Put the run back as it was at :meth:`savepoint`: temporaries removed, each saved
        file given its bytes back (in the order saved, and only where they changed), every
        file listed since removed, the folders listed since removed when empty, and the
        manifest given its old bytes (removed if there was none). The manifest lists every
        file of ours throughout (the union of then and now comes first), so an interruption
        midway leaves no file of ours looking foreign."""
        self._require_lock()
        self.cleanup_tmp()
        now = self._read_manifest()
        then = {"files": {}, "dirs": []}
        if saved.manifest is not None:
            then = parse_json(saved.manifest, f"the saved {MANIFEST}")
        union = {
            "files": {**now["files"], **then["files"]},
            "dirs": sorted(set(now["dirs"]) | set(then["dirs"])),
        }
        if union != now:  # a fresh run's roll-back writes nothing here (a full disk)
            self._write_manifest(union)
        for name, data in saved.files.items():
            path, _ = self._target(name)
            try:
                same = read_regular(path, len(data)) == data
            except UserError:
                same = False
            if not same:
                atomic.replace(path.parent, path.name, data)
        for name in now["files"]:
            if name not in then["files"]:
                self.resolve(name)
                path = self.path / name  # the name itself: a link is removed, never its target
                if path.is_symlink() or path.is_file():
                    path.unlink()
        new_dirs = set(now["dirs"]) - set(then["dirs"])
        _remove_empty(self.resolve(d) for d in sorted(new_dirs, key=lambda d: -d.count("/")))
        if saved.manifest is None:
            (self.path / MANIFEST).unlink(missing_ok=True)
        else:
            atomic.replace(self.path, MANIFEST, saved.manifest)

    # ------------------------------------------------------------------------ reads
    def resolve(self, relative: str) -> Path:
        """A name read from the run's JSON, as a path that stays inside the run.

        >>> RunDir("/runs/a").resolve("../b/checkpoint.json")
        Traceback (most recent call last):
        ...
        ppl_vae.errors.UserError: '../b/checkpoint.json' leaves the run directory /runs/a; ...
        """
        if not isinstance(relative, str) or not relative or "\x00" in relative:
            raise UserError(f"{relative!r} is not a file name inside the run directory {self.path}")
        p = Path(relative)
        if p.is_absolute() or ".." in p.parts:
            raise UserError(
                f"{relative!r} leaves the run directory {self.path}; a run refers only to "
                "its own files (the run's JSON was edited or damaged)"
            )
        root = self.path.resolve()
        target = (root / p).resolve()
        if target != root and root not in target.parents:
            raise UserError(
                f"{relative!r} in {self.path} is a symlink leading out of the run directory; "
                "remove the link"
            )
        return target

    def read_bytes(self, name: str, limit: int = JSON_LIMIT) -> bytes:
        """The bytes of the run's file ``name``: no symlink on the way, a regular file
        inside the run, at most ``limit`` bytes (:func:`read_regular`)."""
        return read_regular(self._lexical(name), limit, what="run file")

    def read_json(self, name: str, limit: int = JSON_LIMIT) -> Any:
        """The JSON record ``name`` of the run: no symlink on the way, a regular file inside
        the run, at most ``limit`` bytes and :data:`JSON_DEPTH` deep; every failure one
        :class:`UserError` line."""
        return read_json(self._lexical(name), limit, what="run file")

    def embeddable(self, name: str) -> bool:
        """:meth:`is_own_regular_file`, and the file has no other hard link (a link to a
        private file elsewhere is never shown in ``report.html``)."""
        if not self.is_own_regular_file(name):
            return False
        return os.lstat(self.path / name).st_nlink == 1

    def is_own_regular_file(self, name: str) -> bool:
        """True when ``name`` is a regular file (no symlink anywhere on the way) inside the run
        that ppl-vae wrote: what a report may embed."""
        try:
            lexical = self._lexical(name)
            if self._rel(lexical) not in self.manifest():
                return False
        except UserError:
            return False
        return stat.S_ISREG(os.lstat(lexical).st_mode)

    def _lexical(self, name: str) -> Path:
        """``DIR/name`` after :meth:`resolve`'s checks, refusing a symlink at any step."""
        self.resolve(name)
        path = self.path
        for part in Path(name).parts:
            path = path / part
            if path.is_symlink():
                raise UserError(f"{path} is a symlink; ppl-vae never writes links into a run")
        if not path.exists():
            raise UserError(f"{path} does not exist")
        return path

    # ------------------------------------------------------------------------ trust
    def copy_model_file(self, src: str | Path) -> tuple[str, str]:
        """Copy a user's model program into the run as ``model.py``; returns
        ``(relative name, sha256)`` for ``config.json``. The source is read, checked to be
        Python by parsing (never executed here) and written with :meth:`write_bytes`."""
        data = read_model_source(src)
        self.write_bytes(MODEL_FILE, data)
        return MODEL_FILE, hashlib.sha256(data).hexdigest()


def check_outputs(out: str | Path, names: list[str], overwrite: bool) -> None:
    """Check a folder that will hold run directories and the files ``names`` written beside
    them (``compare``, ``sweep``): it can be created or written, and each of ``names``
    that exists is a file ppl-vae wrote there (listed in ``out/manifest.json``) and may be
    replaced only with ``overwrite``. Writes nothing."""
    out = Path(out)
    validate.out_path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory; choose a directory path")
    if not out.exists():
        RunDir._check_creatable(out)
        return
    if not os.access(out, os.W_OK | os.X_OK):
        raise UserError(f"--out {out} is not writable; choose a folder you can write to")
    own = set(RunDir(out).manifest()) if (out / MANIFEST).is_file() else set()
    for name in names:
        path = out / name
        if not (path.exists() or path.is_symlink()):
            continue
        if name not in own or path.is_symlink() or not path.is_file():
            raise UserError(
                f"{path} was not written by ppl-vae; move it away or choose another --out"
            )
        if not overwrite:
            raise UserError(f"{path} exists; pass --overwrite to replace it, or another --out")


def check_member(out: str | Path, name: str) -> Path:
    """The run directory ``out/name`` of a ``compare`` or ``sweep`` folder, refused when
    it is a symlink (a planted ``cmp/ae -> elsewhere`` would take a whole run, and with
    ``--overwrite`` remove one, outside ``out``) or leaves ``out``. Writes nothing."""
    path = Path(out) / name
    if Path(name).is_absolute() or ".." in Path(name).parts or len(Path(name).parts) != 1:
        raise UserError(f"{name!r} is not a run name inside {out}")
    if path.is_symlink():
        raise UserError(
            f"{path} is a symlink; ppl-vae writes the runs of {out} only inside it; "
            "remove the link or choose another --out"
        )
    return path


def read_model_source(src: str | Path) -> bytes:
    """The bytes of a user's model file, refused unless it is a readable Python program."""
    src = Path(src)
    if src.is_dir():
        raise UserError(f"model file {src} is a directory; pass the path of a .py file")
    if not src.exists():
        raise UserError(f"model file {src} does not exist; pass a model name or a .py file")
    if not src.is_file():
        raise UserError(f"model file {src} is not a regular file; pass a .py file")
    if src.stat().st_size > MODEL_FILE_LIMIT:
        raise UserError(f"model file {src} is over {MODEL_FILE_LIMIT >> 20} MiB; not a program")
    try:
        data = src.read_bytes()
        ast.parse(data, filename=str(src))
    except OSError as exc:
        raise UserError(f"cannot read model file {src} ({exc.strerror})") from None
    except (SyntaxError, ValueError) as exc:
        raise UserError(
            f"model file {src} is not a Python program ({exc}); pass a .py file that defines MODEL"
        ) from None
    return data


def _missing_folders(path: Path) -> list[Path]:
    """``path`` and those of its parents that do not exist, deepest first."""
    missing = []
    while not os.path.lexists(path):
        missing.append(path)
        path = path.parent
    return missing


def _remove_empty(folders: Iterable[Path]) -> None:
    """Remove each folder (deepest first as given) that is empty; leave the others."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _some(names: list[str], k: int = 5) -> str:
    more = f", and {len(names) - k} more" if len(names) > k else ""
    return ", ".join(names[:k]) + more
