"""Errors a user can fix from the command line: the CLI prints their message as one line, no traceback."""


def first_line(err: BaseException, width: int | None = None) -> str:
    """An error's message as one line: its first (its type's name where it has none), cut to `width`
    characters with "..." where it is longer."""
    line = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return line if width is None or len(line) <= width else line[: width - 3] + "..."


class UserError(Exception):
    """str() is the whole message: it names the key, file or path, and what is allowed."""
