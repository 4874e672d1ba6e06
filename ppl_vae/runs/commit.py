"""The files of one commit of a run directory (:meth:`~ppl_vae.runs.rundir.RunDir.commit`).

A :class:`Commit` collects the files a commit writes: :meth:`Commit.write` puts bytes held
in memory into a temporary next to their target (``fsync``-ed) and hashes them as they go
in; :meth:`Commit.path_for` gives a temporary that other code writes (``savefig``, a
figure drawn by another process), which :func:`seal` ``fsync``-s and hashes in one read
when the commit ends. :class:`~ppl_vae.runs.rundir.RunDir` then lists them all in the
manifest with one write and renames each into place.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ppl_vae.runs import atomic, fingerprint


@dataclass
class Staged:
    """A file of a commit: where it goes, its temporary, the folders made for it, and its
    manifest entry (None until other code has written the temporary)."""

    path: Path
    tmp: Path
    created: list[str]
    entry: dict[str, Any] | None


class Commit:
    """The files of one ``RunDir.commit``, in the order they are renamed into place;
    ``target(name)`` is the run's check of a name it may write (its path and the folders
    made for it)."""

    def __init__(self, target: Callable[[str], tuple[Path, list[str]]]):
        self.target = target
        self.staged: dict[str, Staged] = {}

    def write(self, name: str, data: bytes) -> str:
        """Stage ``data`` as the run's file ``name``; returns its SHA-256."""
        path, created = self.target(name)
        tmp = atomic.write_tmp(path.parent, path.name, data)
        sha = fingerprint.digest(data)
        self._add(name, Staged(path, tmp, created, {"size": len(data), "sha256": sha}))
        return sha

    def path_for(self, name: str) -> Path:
        """A temporary path for the run's file ``name`` (ours or new, no link) that other
        code writes."""
        path, created = self.target(name)
        fd, tmp = atomic.new_tmp(path.parent, path.name)
        os.close(fd)
        self._add(name, Staged(path, tmp, created, None))
        return tmp

    def _add(self, name: str, staged: Staged) -> None:
        old = self.staged.pop(name, None)
        if old is not None:
            old.tmp.unlink(missing_ok=True)
        self.staged[name] = staged

    def discard(self) -> None:
        """Remove every temporary (the commit failed)."""
        for s in self.staged.values():
            s.tmp.unlink(missing_ok=True)


def seal(tmp: Path) -> dict[str, Any]:
    """A temporary that other code wrote, given the uniform mode and ``fsync``-ed; its
    manifest entry, hashed in the same read (over :data:`fingerprint.HASH_LIMIT`: its size
    only)."""
    os.chmod(tmp, atomic.file_mode())
    with open(tmp, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        sha = fingerprint.digest(f.read()) if size <= fingerprint.HASH_LIMIT else None
        os.fsync(f.fileno())
    return {"size": size, "sha256": sha}


def entry(path: Path) -> dict[str, Any]:
    """The manifest entry of a file other code wrote in place (``RunDir.record``)."""
    size = path.stat().st_size
    small = size <= fingerprint.HASH_LIMIT
    return {"size": size, "sha256": fingerprint.sha256_file(path) if small else None}
