"""``ppl-vae``: the command line. Each subcommand is one module of this package with a
``register(subparsers)`` function; :func:`main` turns a :class:`~ppl_vae.errors.UserError`
into one line on stderr and exit status 2, and so does a usage mistake (argparse's own
errors are one ``error:`` line too). A closed pipe (``ppl-vae models | head``) ends the
command quietly."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import warnings
from collections.abc import Sequence

from ppl_vae.errors import UserError


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``error: <what>; see `<prog> --help```, exit 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message}; see `{self.prog} --help`\n")


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="ppl-vae", description="Generative autoencoders written as Pyro programs.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        command = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(command, "register"):
            command.register(sub)
    return p


def one_line(message: str) -> str:
    """A message as one line: Pyro's trace-shape table and line breaks removed."""
    message = message.split("Trace Shapes:")[0]
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


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
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    # Warnings (Pyro's, torch's) are held back while the command runs: shown after it when
    # it succeeds, dropped when it fails, so a failure is the one `error:` line.
    with warnings.catch_warnings(record=True) as caught:
        try:
            code = int(args.func(args) or 0)
            sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        except UserError as exc:
            return _fail(str(exc))
        except KeyboardInterrupt:
            _settle_stdout()
            print("interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:
            # The reader went away (`ppl-vae models | head`): stop quietly. Point stdout at
            # /dev/null so the interpreter's final flush does not complain again.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            return 141  # 128 + SIGPIPE, as a shell reports a command a closed pipe ended
        except SystemExit as exc:  # a user's program called sys.exit() while it ran
            return _fail(
                f"the model program called sys.exit({exc.code!r}) while ppl-vae ran it; "
                "a model file defines programs and does not exit"
            )
        except OSError as exc:  # a full disk, /dev/full, a permission
            where = f" ({exc.filename})" if exc.filename else ""
            return _fail(f"{exc.strerror or exc}{where}; free space or choose another place")
        except Exception as exc:
            if os.environ.get("PPL_VAE_TRACEBACK"):
                raise
            text = one_line(str(exc))[:300]
            return _fail(
                f"{type(exc).__name__}: {text} (unexpected; PPL_VAE_TRACEBACK=1 shows where)"
            )
    for w in caught:
        warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return code
