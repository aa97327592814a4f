"""The project's errors: those a user can fix from the command line (the CLI prints their message as
one line, no traceback), a run that failed with its record written, and an error as one line."""


def first_line(err: BaseException, width: int | None = None) -> str:
    """An error's message as one line: its first (its type's name where it has none), cut to `width`
    characters with "..." where it is longer."""
    line = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return line if width is None or len(line) <= width else line[: width - 3] + "..."


def reason(err: BaseException) -> str:
    """What failed, as one line for a record: the error's type and the first line of its message."""
    return f"{type(err).__name__}: {err}".strip().splitlines()[0]


class UserError(Exception):
    """str() is the whole message: it names the key, file or path, and what is allowed."""


class RunFailed(Exception):
    """A run that failed in `phase`, its record written: metrics.json says `failed`, in which phase,
    the error (naming the file, where a file could not be written) and every number measured
    before it. str() is one line; the error itself is the `__cause__`."""

    def __init__(self, phase: str, reason: str) -> None:
        self.phase, self.reason = phase, reason
        super().__init__(f"failed during {phase}: {reason}")

    def __reduce__(self):  # crosses a process boundary (a joblib worker's job) intact
        return type(self), (self.phase, self.reason)
