"""The one exception type the CLI turns into a clear message and a non-zero exit, the one
place a library's message is shortened (:func:`first_line`), and the one place any
exception becomes that message (:func:`one_error_line`)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import warnings
from collections.abc import Iterator


class UserError(Exception):
    """Bad input from a user: the message names the problem and the fix.

    The CLI prints ``error: <message>`` on one line and exits with status 2,
    without a traceback. Library code raises it for anything a user can fix
    (a missing file, an unknown model name, data that does not fit the likelihood).
    """


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message, at most ``limit`` characters; the
    exception's type name when the message is empty. The one place the engine shortens a
    library's (torch, Pyro, a user's program) message for an ``error:`` line or a note."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:limit] if lines else type(exc).__name__


def one_line(message: str) -> str:
    """A message as one line: Pyro's trace-shape table and line breaks removed."""
    message = message.split("Trace Shapes:")[0]
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


@dataclasses.dataclass
class Status:
    """The exit status of a command run under :func:`one_error_line`."""

    code: int = 0


@contextlib.contextmanager
def one_error_line() -> Iterator[Status]:
    """Run a command's body; whatever it raises becomes one ``error: <what>`` line on stderr
    and the exit status in the yielded :class:`Status` (2; 130 for an interrupt, 141 for a
    closed pipe, which ends quietly). stdout is flushed inside, so a full device
    (``> /dev/full``) fails here as one line too, and is then pointed at /dev/null so the
    interpreter's last flush adds no second complaint. Warnings (Pyro's, torch's) are held
    back while the body runs: shown after it when it succeeds, dropped when it fails.

        >>> with one_error_line() as status:
        ...     raise UserError("no such run")
        >>> status.code
        2
    """
    status, succeeded = Status(), False
    with warnings.catch_warnings(record=True) as caught:
        try:
            yield status
            sys.stdout.flush()  # a closed pipe or a full device shows here, not at exit
            succeeded = True
        except UserError as exc:
            status.code = _fail(str(exc))
        except KeyboardInterrupt:
            _settle_stdout()
            print("interrupted", file=sys.stderr)
            status.code = 130
        except BrokenPipeError:  # the reader went away (`ppl-vae models | head`)
            _stdout_to_devnull()
            status.code = 141  # 128 + SIGPIPE, as a shell reports a command a closed pipe ended
        except SystemExit as exc:  # a user's program called sys.exit() while it ran
            status.code = _fail(
                f"the model program called sys.exit({exc.code!r}) while ppl-vae ran it; "
                "a model file defines programs and does not exit"
            )
        except OSError as exc:  # a full disk, /dev/full, a permission
            where = f" ({exc.filename})" if exc.filename else ""
            status.code = _fail(f"{exc.strerror or exc}{where}; free space or choose another place")
        except Exception as exc:
            if os.environ.get("PPL_VAE_TRACEBACK"):
                raise
            status.code = _fail(
                f"{type(exc).__name__}: {one_line(str(exc))[:300]} "
                "(unexpected; PPL_VAE_TRACEBACK=1 shows where)"
            )
    if succeeded:
        for w in caught:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def _fail(message: str) -> int:
    _settle_stdout()
    print(f"error: {one_line(message)}", file=sys.stderr)
    return 2


def _settle_stdout() -> None:
    """Flush stdout; where it cannot be written (``/dev/full``, a closed pipe) point it at
    /dev/null so the interpreter's last flush does not print a second complaint."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        _stdout_to_devnull()


def _stdout_to_devnull() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
