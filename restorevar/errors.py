"""The one exception type the CLI turns into a one-line message and exit code 2."""


class UserError(Exception):
    """Bad input from the user: a wrong path, a bad value, an incompatible checkpoint.

    The message must name the problem and the way out, in one line.
    """
