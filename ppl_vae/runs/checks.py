"""Checks of what a job is given before it writes: folders of runs and a user's model file.

:func:`check_creatable` says whether ``--out`` can be made; :func:`check_outputs` and
:func:`check_member` check a folder that holds several runs and the tables beside them
(``compare``, ``sweep``); :func:`read_model_source` reads a user's model file, refused
unless it is a readable Python program (parsed, never executed). None of them writes.

Example::

    >>> some(["a", "b", "c"], k=2)
    'a, b, and 1 more'
"""

from __future__ import annotations

import ast
import os
import stat
from pathlib import Path

from ppl_vae import validate
from ppl_vae.errors import UserError
from ppl_vae.runs import atomic, manifest

#: A model file larger than this is not a hand-written program.
MODEL_FILE_LIMIT = 4 * 2**20


def check_creatable(out: Path) -> None:
    """Refuse an ``--out`` that cannot be created (a dangling link or a file on the way, a
    folder that is not writable). Writes nothing."""
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


def check_run_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse every state of the file system a run in ``out`` cannot start from: a file,
    a folder that cannot be written, a non-empty folder without ``resume`` or ``overwrite``,
    a resume without a manifest, an overwrite of files ppl-vae did not write. Writes
    nothing."""
    validate.out_path(out)
    if resume and overwrite:
        raise UserError("--resume and --overwrite exclude each other; pass one of them")
    if out.is_symlink() and not out.is_dir():
        raise UserError(f"--out {out} is a dangling symlink; choose a directory path")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory; choose a directory path")
    if not out.exists():
        if resume:
            raise UserError(f"--resume: {out} does not exist; train there without --resume first")
        check_creatable(out)
        return
    if not os.access(out, os.W_OK | os.X_OK):
        raise UserError(f"--out {out} is not writable; choose a folder you can write to")
    has_manifest = (out / manifest.MANIFEST).is_file()
    contents = run_contents(out)
    if resume:
        if not has_manifest:
            raise UserError(
                f"--resume: {out} has no {manifest.MANIFEST}, so it was not written by this "
                "version of ppl-vae; start a new run with another --out"
            )
        manifest.read(out)  # a damaged manifest is an error now, not halfway through
        return
    if not contents:
        return
    listed = set(manifest.read(out)["files"]) if has_manifest else set()
    foreign = sorted(
        p
        for p in contents
        if (p not in listed and not atomic.TMP_PATTERN.match(Path(p).name))
        or not stat.S_ISREG(os.lstat(out / p).st_mode)
    )
    if not overwrite:
        raise UserError(
            f"{out} already holds files ({some(contents)}); pass --resume to continue that "
            "run, --overwrite to replace it, or choose another --out"
        )
    if foreign:
        raise UserError(
            f"--overwrite refuses {out}: it holds files ppl-vae did not write "
            f"({some(foreign)}); move them away or choose another --out"
        )


def run_contents(folder: Path) -> list[str]:
    """Relative names of every file (and symlink or special file) under the directory,
    leaving out the lock and the manifest. Empty folders count as nothing."""
    found = []
    for root, dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        for name in files + [d for d in dirs if (Path(root) / d).is_symlink()]:
            relname = (rel / name).as_posix()
            if relname not in manifest.INTERNAL:
                found.append(relname)
    return sorted(found)


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
        check_creatable(out)
        return
    if not os.access(out, os.W_OK | os.X_OK):
        raise UserError(f"--out {out} is not writable; choose a folder you can write to")
    own = set(manifest.read(out)["files"]) if (out / manifest.MANIFEST).is_file() else set()
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


def some(names: list[str], k: int = 5) -> str:
    """The first ``k`` of ``names`` for an error line, and how many more."""
    more = f", and {len(names) - k} more" if len(names) > k else ""
    return ", ".join(names[:k]) + more
