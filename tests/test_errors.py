"""The one first-line helper and the one context manager that turns any failure into the
one ``error:`` line, in process and with stdout on a full device."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest

from ppl_vae.errors import UserError, first_line, one_error_line


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ValueError("bad shape\n  at line 3"), "bad shape"),
        (RuntimeError("\n\n  indented first\nsecond"), "indented first"),
        (KeyError(), "KeyError"),  # an empty message names the type (no IndexError)
        (RuntimeError("x" * 500), "x" * 200),
    ],
)
def test_first_line(exc, expected):
    assert first_line(exc) == expected


@pytest.mark.parametrize(
    ("exc", "code", "line"),
    [
        (UserError("no run here\nsecond line"), 2, "error: no run here second line"),
        (RuntimeError("broke\nTrace Shapes:\n x 3"), 2, "error: RuntimeError: broke (unexpected"),
        (SystemExit(3), 2, "error: the model program called sys.exit(3)"),
        (OSError(28, "No space left on device"), 2, "error: No space left on device; free"),
        (KeyboardInterrupt(), 130, "interrupted"),
    ],
)
def test_any_failure_is_one_line_and_its_warnings_are_dropped(exc, code, line, capsys):
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with one_error_line() as status:
            warnings.warn("held back", stacklevel=1)
            raise exc
    err = capsys.readouterr().err
    assert not shown
    assert status.code == code and len(err.splitlines()) == 1 and err.startswith(line), err


def test_a_success_keeps_its_code_and_shows_its_warnings_after_it():
    with pytest.warns(UserWarning, match="shown after"), one_error_line() as status:
        warnings.warn("shown after", stacklevel=1)
        status.code = 3
    assert status.code == 3


@pytest.mark.parametrize("buffered", [True, False])
@pytest.mark.parametrize("argv", [["models"], ["--help"], ["train", "--help"]])
def test_a_full_stdout_is_one_error_line(argv, buffered):
    env = {**os.environ, "PYTHONUNBUFFERED": "" if buffered else "1"}
    with open("/dev/full", "w") as full:
        p = subprocess.run(
            [sys.executable, "-m", "ppl_vae", *argv], stdout=full, stderr=subprocess.PIPE, env=env
        )
    lines = p.stderr.decode().splitlines()
    assert p.returncode == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: No space left on device"), lines
