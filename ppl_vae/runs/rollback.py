"""Roll-back: a run put back as it was when a job started.

A job that may replace or append to files of an existing run (``train --resume``) takes a
:func:`savepoint` at its start (the manifest's bytes and those of the files it names, read
once); when it fails, :func:`roll_back` puts the run back byte for byte: the saved files
by rename (a ``cp -al`` backup keeps its bytes), every file listed since removed, the
manifest as it was.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from ppl_vae.errors import UserError
from ppl_vae.runs import atomic, manifest
from ppl_vae.runs.lock import remove_empty
from ppl_vae.runs.manifest import MANIFEST
from ppl_vae.runs.rundir import RunDir
from ppl_vae.runs.safeio import parse_json, read_regular


@dataclass(frozen=True)
class Savepoint:
    """A run's state saved by :func:`savepoint`: the manifest's bytes (None when it
    had none) and the bytes of the files saved, in the order they are put back."""

    manifest: bytes | None
    files: dict[str, bytes]


def savepoint(run: RunDir, names: Iterable[str] = ()) -> Savepoint:
    """What :func:`roll_back` needs to put the run back as it is now: the manifest's
    bytes and those of each of ``names`` that is a file ppl-vae wrote here, read once
    (a job's start; nothing is done per step). A job names the files it may replace
    or append to (the checkpoint's weights before its record, so that a whole
    checkpoint exists at every step of a roll-back); the files it creates need no
    saving: a roll-back removes whatever the manifest lists that it did not then."""
    run._require_lock()
    listed = os.path.lexists(run.path / MANIFEST)
    body = run.read_bytes(MANIFEST) if listed else None
    files: dict[str, bytes] = {}
    for name in names:
        if name not in files and run.is_own_regular_file(name):
            files[name] = run.read_bytes(name, os.lstat(run.path / name).st_size)
    return Savepoint(body, files)


def roll_back(run: RunDir, saved: Savepoint) -> None:
    """Put the run back as it was at :func:`savepoint`: temporaries removed, each saved
    file given its bytes back (in the order saved, and only where they changed), every
    file listed since removed, the folders listed since removed when empty, and the
    manifest given its old bytes (removed if there was none). The manifest lists every
    file of ours throughout (the union of then and now comes first), so an interruption
    midway leaves no file of ours looking foreign."""
    run._require_lock()
    run.cleanup_tmp()
    now = run._read_manifest()
    then = manifest.empty()
    if saved.manifest is not None:
        then = parse_json(saved.manifest, f"the saved {MANIFEST}")
    union = {
        "files": {**now["files"], **then["files"]},
        "dirs": sorted(set(now["dirs"]) | set(then["dirs"])),
    }
    if union != now:  # a fresh run's roll-back writes nothing here (a full disk)
        manifest.write(run.path, union)
    for name, data in saved.files.items():
        path, _ = run._target(name)
        try:
            same = read_regular(path, len(data)) == data
        except UserError:
            same = False
        if not same:
            atomic.replace(path.parent, path.name, data)
    for name in set(now["files"]) - set(then["files"]):
        run._unlink(name)
    new_dirs = set(now["dirs"]) - set(then["dirs"])
    remove_empty(run.resolve(d) for d in sorted(new_dirs, key=lambda d: -d.count("/")))
    if saved.manifest is None:
        (run.path / MANIFEST).unlink(missing_ok=True)
    else:
        atomic.replace(run.path, MANIFEST, saved.manifest)
