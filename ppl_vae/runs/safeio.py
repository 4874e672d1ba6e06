"""Safe reading: the one way ppl-vae reads a file it did not just write.

A run's records, ``manifest.json``, the trusted list, a data root's metadata and a
checkpoint's weights are read by :func:`read_regular`: opened without following a final
symlink and without blocking on a FIFO, refused unless a regular file, and never read past
a bound. JSON goes through :func:`parse_json`: bad UTF-8, bad syntax, nesting deeper than
:data:`JSON_DEPTH` and numbers too long are each one :class:`~ppl_vae.errors.UserError`
line. :func:`read_json` is the two together.

Example::

    >>> import tempfile
    >>> from pathlib import Path
    >>> p = Path(tempfile.mkdtemp()) / "a.json"
    >>> _ = p.write_text('{"x": [1, 2]}')
    >>> read_json(p)
    {'x': [1, 2]}
    >>> parse_json(b"[" * 100 + b"]" * 100, "deep.json")
    Traceback (most recent call last):
    ...
    ppl_vae.errors.UserError: deep.json nests deeper than 64 levels; not a ppl-vae record
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

from ppl_vae.errors import UserError, first_line

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
        raise UserError(f"{where} is not valid JSON ({first_line(exc)})") from None
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
