"""Trust: ppl-vae runs only model code the user chose to run.

A user's model file is copied into the run as ``model.py`` with its SHA-256. A run whose
model is such a file is executed only if the hash is in the user's list
(:func:`trust_hash` adds every model file the user trained with; the list lives in
``$XDG_CONFIG_HOME/ppl-vae/trusted.json``, default ``~/.config/ppl-vae/trusted.json``) or
the user passes ``--trust`` (:func:`check_trusted`); :func:`model_file` checks the run's
copy (inside the run, ours, unchanged) before anything imports it.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from pathlib import Path

from ppl_vae.errors import UserError
from ppl_vae.runs import atomic
from ppl_vae.runs.fingerprint import sha256_file
from ppl_vae.runs.rundir import RunDir
from ppl_vae.runs.safeio import read_json

_SHA = re.compile(r"^[0-9a-f]{64}$")


def trusted_path() -> Path:
    """``$XDG_CONFIG_HOME/ppl-vae/trusted.json`` (``~/.config`` when the variable is unset)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "ppl-vae" / "trusted.json"


def trusted_hashes() -> set[str]:
    """The SHA-256 hashes of model files this user trained with (or trusted explicitly)."""
    path = trusted_path()
    if not os.path.lexists(path):
        if path.parent.exists() and not path.parent.is_dir():
            raise UserError(
                f"{path.parent} is a file, not a folder; point XDG_CONFIG_HOME at a folder"
            )
        return set()
    try:
        hashes = read_json(path, limit=16 * 2**20, what="trusted list")["sha256"]
        if not isinstance(hashes, list):
            raise TypeError("sha256 must be a list")
    except (UserError, KeyError, TypeError) as exc:
        raise UserError(
            f"{path} is damaged ({exc}); delete it (you will be asked to trust again)"
        ) from None
    return {h for h in hashes if isinstance(h, str) and _SHA.match(h)}


def check_recordable() -> None:
    """Refuse, writing nothing, a trusted list :func:`trust_hash` could not record to (a
    damaged list, a file where its folder goes, a folder that is not writable)."""
    path = trusted_path()
    trusted_hashes()
    folder = path.parent
    while not os.path.lexists(folder):
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(
            f"cannot write the trusted list in {path.parent} ({folder} is not a folder you "
            "can write); point XDG_CONFIG_HOME at a folder you can write"
        )


def trust_hash(sha: str) -> None:
    """Add a model file's hash to the user's trusted list (atomic, under a lock); a hash
    already listed creates nothing."""
    if not isinstance(sha, str) or not _SHA.match(sha):
        raise UserError(f"{sha!r} is not a SHA-256 hex digest")
    if sha in trusted_hashes():
        return
    path = trusted_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(
            path.parent / ".trusted.lock",
            os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
            0o666,
        )
    except OSError as exc:
        raise UserError(
            f"cannot write the trusted list in {path.parent} ({exc.strerror}); point "
            "XDG_CONFIG_HOME at a folder you can write"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # short: concurrent trainers wait their turn
        hashes = trusted_hashes()
        if sha not in hashes:
            body = json.dumps({"sha256": sorted(hashes | {sha})}, indent=1) + "\n"
            atomic.replace(path.parent, path.name, body.encode())
    finally:
        os.close(fd)


def check_trusted(sha: str, trust_flag: bool) -> None:
    """Refuse to run a model file neither trained with here nor trusted by ``--trust``."""
    if trust_flag or sha in trusted_hashes():
        return
    raise UserError(
        f"this run's model code (model.py, sha256 {sha[:12]}...) is not a suite model and was "
        f"not trained on this machine; read the run's model.py, then pass --trust to run it "
        f"(trusted hashes live in {trusted_path()})"
    )


def model_file(run: RunDir, relative: str, expected_sha: str, trust: bool = False) -> Path:
    """The run's copy of a user model, checked before anything imports it: inside the
    run, ours, unchanged since training (its hash is the one in ``config.json``) and
    trusted (:func:`check_trusted` on the hash of the bytes on disk)."""
    path = run.resolve(relative)
    if not run.is_own_regular_file(relative):
        raise UserError(f"{path} is not a model file this run wrote; train the run again")
    actual = sha256_file(path)
    if actual != expected_sha:
        raise UserError(
            f"{path} changed since training (sha256 {actual[:12]}... but config.json "
            f"records {str(expected_sha)[:12]}...); restore it or train a new run"
        )
    check_trusted(actual, trust)
    return path
