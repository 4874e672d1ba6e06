"""The one exception type the CLI turns into a clear message and a non-zero exit."""


class UserError(Exception):
    """Bad input from a user: the message names the problem and the fix.

    The CLI prints ``error: <message>`` on one line and exits with status 2,
    without a traceback. Library code raises it for anything a user can fix
    (a missing file, an unknown model name, data that does not fit the likelihood).
    """
