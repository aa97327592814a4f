"""Errors a user can fix from the command line: the CLI prints their message as one line, no traceback."""


class UserError(Exception):
    """str() is the whole message: it names the key, file or path, and what is allowed."""
