"""``manifest.json``: the list of the files ppl-vae wrote into a folder.

The body is ``{"format": 1, "files": {relative name: {"size", "sha256"}}, "dirs": [...]}``:
the files ppl-vae wrote (anything else belongs to the user) and the folders it created.
:func:`read` checks every name (relative, no ``..``) and refuses a damaged manifest in one
line; :func:`write` replaces it atomically. A name listed whose file is absent is not a
file of ours (a commit lists its files before they exist, and removes old ones after).

Example::

    >>> import tempfile
    >>> from pathlib import Path
    >>> d = Path(tempfile.mkdtemp())
    >>> read(d)
    {'files': {}, 'dirs': []}
    >>> write(d, {"files": {"a.json": {"size": 2, "sha256": None}}, "dirs": []})
    >>> sorted(read(d)["files"])
    ['a.json']
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ppl_vae.errors import UserError
from ppl_vae.runs import atomic
from ppl_vae.runs.safeio import read_json

MANIFEST = "manifest.json"
#: The lock of a run directory (:mod:`ppl_vae.runs.lock`).
LOCK = ".lock"
#: Names inside a run that are never a file of the run.
INTERNAL = frozenset({MANIFEST, LOCK})


def empty() -> dict[str, Any]:
    return {"files": {}, "dirs": []}


def read(folder: str | Path) -> dict[str, Any]:
    """The manifest of ``folder`` (empty when it has none), its names checked."""
    path = Path(folder) / MANIFEST
    if not os.path.lexists(path):
        return empty()
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


def write(folder: str | Path, body: dict[str, Any]) -> None:
    """Replace ``folder``'s manifest by ``body`` (atomically: by rename, never in place)."""
    data = json.dumps({"format": 1, **body}, indent=1, sort_keys=True) + "\n"
    atomic.replace(Path(folder), MANIFEST, data.encode())
