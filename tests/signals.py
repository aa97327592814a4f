"""A signal sent by the run's own log: tests send SIGINT/SIGTERM in the phase a log line opens,
never after a sleep. Imported by tests and by the child processes they start."""

import logging
import os


class SignalAt(logging.Handler):
    """Sends `sig` to this process, once, as the run logs a message that starts with `text`: it
    lands in the phase the message opens (or, for "interrupted by", while the run stops)."""

    def __init__(self, text: str, sig) -> None:
        super().__init__()
        self.text, self.sig = text, sig

    def emit(self, rec: logging.LogRecord) -> None:
        if self.sig is not None and rec.getMessage().startswith(self.text):
            sig, self.sig = self.sig, None  # once: the handler raises before this returns
            os.kill(os.getpid(), sig)
