"""Fingerprints: the SHA-256 of what ppl-vae writes and of the data a run was trained on.

Every hash ppl-vae takes goes through this module: :func:`digest` for bytes it holds
(computed as they are written, never by reading the file back), :func:`sha256_file` for a
file it did not write itself (a data file, a figure another process drew). A run's
``config.json`` records its data file's hash; :func:`check_fingerprint` says when a run is
evaluated on data that changed since.

Example::

    >>> digest(b"")[:12]
    'e3b0c44298fc'
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ppl_vae.errors import UserError

#: Files hashed when recorded; larger ones get their size only (hashing is not free).
HASH_LIMIT = 64 * 2**20


def digest(data: bytes) -> str:
    """The hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


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
