"""The run directory: one writer, a manifest of what ppl-vae wrote, confined paths.

A run directory ``DIR`` (``--out DIR``) is owned by ppl-vae only in part: the files that
ppl-vae wrote into it are listed in ``DIR/manifest.json`` (:mod:`~ppl_vae.runs.manifest`);
anything else belongs to the user and is never replaced or removed. The rules, each
enforced here:

- **validate before touching**: :meth:`RunDir.check` refuses an existing file as
  ``--out``, an unwritable folder, a non-empty directory without ``--resume`` or
  ``--overwrite``, and (for ``--overwrite``) any file that is not in the manifest -- all
  before a byte is written or removed. :meth:`RunDir.prepare` checks, then acts.
- **one commit primitive**: every write goes through :meth:`RunDir.commit`: each file to a
  temporary in its folder (``fsync``-ed, hashed as its bytes go in), then the manifest
  written once listing them, then each renamed into place (a hard link to the old file,
  say a ``cp -al`` backup, keeps the old bytes), then the files the commit replaces are
  removed. No file of ours ever looks foreign; the manifest may list a file a commit just
  removed until the next commit (absent files are not ours: :meth:`RunDir.manifest`).
  :meth:`RunDir.cleanup_tmp` removes temporaries an interruption left.
- **one writer**: :meth:`RunDir.lock` (:mod:`~ppl_vae.runs.lock`); a refused command
  leaves ``.lock`` as it found it.
- **confined paths**: :meth:`RunDir.resolve` maps a relative name read from a run's JSON to
  a path inside ``DIR`` (no absolute paths, no ``..``, no symlink leaving ``DIR``); reads
  go through :mod:`~ppl_vae.runs.safeio`.
- **uniform modes**: every file is created with mode ``0o666 & ~umask``.

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

import contextlib
import json
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ppl_vae.errors import UserError
from ppl_vae.runs import atomic, manifest
from ppl_vae.runs import lock as run_lock
from ppl_vae.runs.checks import check_run_dir, read_model_source, some
from ppl_vae.runs.commit import Commit, entry, seal
from ppl_vae.runs.manifest import INTERNAL
from ppl_vae.runs.safeio import JSON_LIMIT, read_json, read_regular

MODEL_FILE = "model.py"


class RunDir:
    """One run directory: validation, the lock, atomic recorded writes, confined reads."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._held: run_lock.Held | None = None

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def check(self, resume: bool, overwrite: bool) -> None:
        """Refuse every state of the file system the run cannot start from
        (:func:`ppl_vae.runs.checks.check_run_dir`). Writes nothing."""
        check_run_dir(self.path, resume, overwrite)

    # ----------------------------------------------------------------- preparation
    def prepare(self, resume: bool, overwrite: bool) -> None:
        """Check (:meth:`check`), then make the directory ready: created if missing,
        emptied of our files with ``overwrite``, and cleared of temporaries. Needs the lock,
        so take :meth:`lock` first (it creates the directory)."""
        self.check(resume, overwrite)
        self._require_lock()
        self.cleanup_tmp()
        if overwrite:
            body = self._read_manifest()
            for name in body["files"]:
                self._unlink(name)
            for name in sorted(body["dirs"], key=lambda d: -d.count("/")):
                with contextlib.suppress(OSError):  # not empty or gone: it stays
                    self.resolve(name).rmdir()
            manifest.write(self.path, manifest.empty())

    # ------------------------------------------------------------------------- lock
    @contextlib.contextmanager
    def lock(self) -> Iterator[RunDir]:
        """Hold the directory's exclusive lock (:func:`ppl_vae.runs.lock.take`, creating the
        directory if needed); re-entrant within one :class:`RunDir`. When the body raises,
        ``.lock`` is put back as it was found (:func:`ppl_vae.runs.lock.release`)."""
        if self._held is not None:
            yield self
            return
        self._held = run_lock.take(self.path)
        failed = True
        try:
            yield self
            failed = False
        finally:
            held, self._held = self._held, None
            run_lock.release(held, failed)

    def _require_lock(self) -> None:
        if self._held is None:
            raise RuntimeError(f"write into {self.path} outside `with RunDir.lock()`")

    # --------------------------------------------------------------------- manifest
    def _read_manifest(self) -> dict[str, Any]:
        return manifest.read(self.path)

    def manifest(self) -> dict[str, dict[str, Any]]:
        """The files ppl-vae wrote: ``{relative name: {"size": ..., "sha256": ...}}``; a
        name listed whose file is gone (removed by the last commit) is left out."""
        files = self._read_manifest()["files"]
        return {n: e for n, e in files.items() if os.path.lexists(self.path / n)}

    def _update_manifest(self, entries: dict[str, dict[str, Any]], new_dirs: Iterable[str]) -> None:
        """The one write of the manifest of a commit: ``entries`` added, the folders added,
        the names whose files are gone dropped."""
        body = self._read_manifest()
        files = {n: e for n, e in body["files"].items() if os.path.lexists(self.path / n)}
        files.update(entries)
        manifest.write(self.path, {"files": files, "dirs": sorted({*body["dirs"], *new_dirs})})

    # ----------------------------------------------------------------------- writes
    def _target(self, name: str) -> tuple[Path, list[str]]:
        """The confined path for ``name``, its missing parent folders created (and named),
        refusing to replace anything that is not ours."""
        path = self.resolve(name)
        rel = path.relative_to(self.path.resolve()).as_posix()
        if rel in INTERNAL or atomic.TMP_PATTERN.match(path.name) or rel == ".":
            raise UserError(f"{name!r} is a name ppl-vae reserves inside a run directory")
        self._lexical(name, must_exist=False)
        if path.exists() and not path.is_file():
            raise UserError(f"{path} is not a regular file; move it away and run again")
        if path.exists() and rel not in self.manifest():
            raise UserError(
                f"{path} was not written by ppl-vae; ppl-vae will not replace it; move it away"
            )
        root = self.path.resolve()
        missing = run_lock.missing_folders(path.parent)
        for d in reversed(missing):
            d.mkdir()
        return path, [d.relative_to(root).as_posix() for d in reversed(missing)]

    @contextlib.contextmanager
    def commit(self, remove: Iterable[str] = ()) -> Iterator[Commit]:
        """The one way a file of the run is written: the body stages files on the
        :class:`Commit`; on a clean exit each temporary is ``fsync``-ed (those other code
        wrote are hashed in the same read), the manifest is written once, each file is
        renamed into place in the order staged, and the files named in ``remove`` (ours) are
        deleted. On an exception every temporary is removed and nothing else changes."""
        self._require_lock()
        tx = Commit(self._target)
        try:
            yield tx
            staged = list(tx.staged.values())
            for s in staged:
                if s.entry is None:
                    s.entry = seal(s.tmp)
            created = {d for s in staged for d in s.created}
            self._update_manifest({self._rel(s.path): s.entry for s in staged}, created)
            for s in staged:
                os.replace(s.tmp, s.path)
        except BaseException:
            tx.discard()
            raise
        for folder in {s.path.parent for s in staged}:
            atomic.fsync_dir(folder)
        for name in remove:
            self._unlink(name)

    def write_bytes(self, name: str, data: bytes) -> Path:
        """Write ``data`` to ``name`` inside the run (:meth:`commit`)."""
        with self.commit() as tx:
            tx.write(name, data)
        return tx.staged[name].path

    def write_text(self, name: str, text: str) -> Path:
        """:meth:`write_bytes` of UTF-8 text."""
        return self.write_bytes(name, text.encode("utf-8"))

    def write_json(self, name: str, obj: Any) -> Path:
        """:meth:`write_text` of ``obj`` as indented JSON; NaN and inf are refused
        (``allow_nan=False``: JSON has no such values)."""
        return self.write_text(name, json.dumps(obj, indent=1, allow_nan=False) + "\n")

    @contextlib.contextmanager
    def atomic_path(self, name: str) -> Iterator[Path]:
        """A temporary path for code that writes a file itself (``savefig``), committed as
        ``name`` on a clean exit, removed on an exception.

        >>> import tempfile
        >>> run = RunDir(tempfile.mkdtemp())
        >>> with run.lock(), run.atomic_path("a.txt") as tmp:
        ...     _ = tmp.write_text("hi")
        >>> (run.path / "a.txt").read_text()
        'hi'
        """
        with self.commit() as tx:
            yield tx.path_for(name)

    @contextlib.contextmanager
    def staged(self) -> Iterator[Callable[[str], Path]]:
        """:meth:`atomic_path` for several files that other code writes (a run's figures),
        committed together: ``path_for(name)`` gives each one's temporary path."""
        with self.commit() as tx:
            yield tx.path_for

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
        """:meth:`record` for several files, with one write of the manifest. Every path is
        checked before any is recorded."""
        self._require_lock()
        root = self.path.resolve()
        targets, created = [], set()
        for path in map(Path, paths):
            rel = os.path.relpath(path, self.path) if path.is_absolute() else path.as_posix()
            target = self.resolve(rel)
            if target.is_symlink() or not target.is_file():
                raise UserError(
                    f"{target} is not a regular file; ppl-vae records only its own files"
                )
            targets.append(target)
            created.update(
                d.relative_to(root).as_posix() for d in target.parents if root in d.parents
            )
        for target in targets:
            os.chmod(target, atomic.file_mode())
        self._update_manifest({self._rel(t): entry(t) for t in targets}, created)
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
                        f"{path} holds files ppl-vae did not write ({some(foreign)}); move "
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

    def _unlink(self, name: str) -> None:
        """Remove the run's file ``name`` itself (a link is removed, never its target)."""
        self.resolve(name)
        path = self.path / name
        if path.is_symlink() or path.is_file():
            path.unlink()

    def remove(self, name: str) -> None:
        """Delete one of our files and drop it from the manifest."""
        self._require_lock()
        if name not in self._read_manifest()["files"]:
            raise UserError(f"{name} is not a file ppl-vae wrote into {self.path}; left alone")
        self._unlink(name)
        self._update_manifest({}, ())

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

    def _lexical(self, name: str, must_exist: bool = True) -> Path:
        """``DIR/name`` after :meth:`resolve`'s checks, refusing a symlink at any step."""
        self.resolve(name)
        path = self.path
        for part in Path(name).parts:
            path = path / part
            if path.is_symlink():
                raise UserError(f"{path} is a symlink; ppl-vae never writes links into a run")
        if must_exist and not path.exists():
            raise UserError(f"{path} does not exist")
        return path

    # ------------------------------------------------------------------------ trust
    def copy_model_file(self, src: str | Path) -> tuple[str, str]:
        """Copy a user's model program into the run as ``model.py``; returns
        ``(relative name, sha256)`` for ``config.json``. The source is read, checked to be
        Python by parsing (never executed here) and committed with its hash."""
        with self.commit() as tx:
            sha = tx.write(MODEL_FILE, read_model_source(src))
        return MODEL_FILE, sha
