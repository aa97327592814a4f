"""What a job shows on the console: Lightning's INFO lines off it (not off train.log), a prefix per
job in a sweep, a progress bar only for a terminal."""

import io
import logging
import os
import pty
import subprocess

import pytest

from srn_lightning import console

from .conftest import child_env, cli


def emit(name: str, level: int, msg: str) -> None:
    """A record from logger `name`, to the root's handlers (Lightning's own loggers may not propagate
    in a test process: Lightning decides that when it is imported)."""
    logging.getLogger().handle(logging.makeLogRecord(
        {"name": name, "levelno": level, "levelname": logging.getLevelName(level), "msg": msg}))


@pytest.fixture
def handlers():
    """A console and a file handler on the root logger, as Hydra's job logging sets them up."""
    root = logging.getLogger()
    others = [(h, list(h.filters), h.formatter) for h in root.handlers]  # pytest's: left as they were
    stream, file = logging.StreamHandler(io.StringIO()), logging.FileHandler(os.devnull)
    for h in (stream, file):
        h.setFormatter(logging.Formatter("%(name)s - %(message)s"))
        root.addHandler(h)
    old = root.level
    root.setLevel(logging.INFO)
    yield stream, file
    root.setLevel(old)
    for h in (stream, file):
        root.removeHandler(h)
    file.close()
    for h, filters, formatter in others:
        h.filters[:] = filters
        h.setFormatter(formatter)
    logging.captureWarnings(False)


def test_lightnings_info_lines_leave_the_console_only_and_a_sweeps_jobs_say_who_they_are(handlers):
    stream, file = handlers
    console.setup_console(verbose=False, job_num=3)
    emit("lightning.pytorch.utilities.rank_zero", logging.INFO, "GPU available: False")
    emit("lightning.pytorch.utilities.rank_zero", logging.WARNING, "a real warning")
    emit("srn_lightning.train", logging.INFO, "completed\nsecond line")
    assert stream.stream.getvalue().splitlines() == [
        "[job 3] lightning.pytorch.utilities.rank_zero - a real warning",
        "[job 3] srn_lightning.train - completed", "[job 3] second line"]
    assert file.filters == [] and not isinstance(file.formatter, console.JobPrefix)  # train.log: all of it


def test_verbose_keeps_lightnings_lines_and_a_single_run_has_no_prefix(handlers):
    stream, _ = handlers
    console.setup_console(verbose=True, job_num=None)
    emit("lightning.pytorch.utilities.rank_zero", logging.INFO, "GPU available: False")
    assert stream.stream.getvalue() == "lightning.pytorch.utilities.rank_zero - GPU available: False\n"


@pytest.mark.slow
def test_a_run_on_a_terminal_shows_its_progress_bar(tmp_path, data_dir):
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(cli(f"data.dir={data_dir}", "trainer.max_epochs=1"), cwd=tmp_path, env=child_env(),
                            stdout=secondary, stderr=subprocess.PIPE)
    os.close(secondary)
    out = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(primary)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()[-2000:]
    text = out.decode(errors="replace")
    assert "Epoch 0" in text and "completed after 1 epoch" in text
