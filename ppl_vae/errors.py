"""The one exception type the CLI turns into a clear message and a non-zero exit."""


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
