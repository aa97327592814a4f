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


# --- the console is never a point of failure --------------------------------------------------------

class Gone(io.StringIO):
    """A console that went away: every write fails as a closed pipe does."""

    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")


def test_a_console_that_goes_away_costs_one_line_and_no_error(monkeypatch):
    monkeypatch.setattr(console, "_said", False)
    out, err = console.SteadyStream(Gone(), "stdout"), console.SteadyStream(io.StringIO(), "stderr")
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setattr("sys.stderr", err)
    handler = logging.StreamHandler(out)
    for i in range(5):  # without SteadyStream, each is a 'Logging error' traceback on stderr
        handler.emit(logging.makeLogRecord({"msg": f"line {i}"}))
    out.flush()
    assert out.lost and err.stream.getvalue().splitlines() == [
        "console: stdout is gone (BrokenPipeError: [Errno 32] Broken pipe); the run goes on, and its "
        "train.log keeps every line"]


def test_an_ascii_console_writes_what_it_cannot_encode_as_escapes():
    raw = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    out = console.SteadyStream(raw, "stdout")
    out.write("run dir: outputs/rü\n")
    out.flush()
    assert raw.buffer.getvalue() == b"run dir: outputs/r\\xfc\n"


def run_with_console(tmp_path, data_dir, shell_tail: str, **env) -> subprocess.CompletedProcess:
    """The CLI run through bash with `shell_tail` after it (a redirection or a pipe)."""
    import shlex

    run_dir = tmp_path / "rü n"
    args = " ".join(shlex.quote(a) for a in cli(f"data.dir={data_dir}", "trainer.max_epochs=1",
                                                 f"hydra.run.dir='{run_dir}'"))
    return subprocess.run(["bash", "-c", f"{args} {shell_tail}"], cwd=tmp_path, env=child_env(**env),
                          capture_output=True, text=True, timeout=300)


def complete_record(tmp_path) -> dict:
    import json

    metrics = json.loads((tmp_path / "rü n" / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["test_acc"] is not None
    return metrics


@pytest.mark.slow
def test_a_run_without_stdout_keeps_its_record(tmp_path, data_dir):
    proc = run_with_console(tmp_path, data_dir, ">&-")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    complete_record(tmp_path)


@pytest.mark.slow
def test_a_run_piped_into_head_keeps_its_record_and_says_so_once(tmp_path, data_dir):
    proc = run_with_console(tmp_path, data_dir, "2>err.txt | head -1; exit ${PIPESTATUS[0]}")
    err = (tmp_path / "err.txt").read_text()
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 1, err[-2000:]
    assert err.splitlines() == ["console: stdout is gone (BrokenPipeError: [Errno 32] Broken pipe); "
                                "the run goes on, and its train.log keeps every line"]
    complete_record(tmp_path)


@pytest.mark.slow
def test_an_ascii_console_keeps_the_answer_lines_of_a_non_ascii_run_dir(tmp_path, data_dir):
    proc = run_with_console(tmp_path, data_dir, "", PYTHONIOENCODING="ascii")
    assert proc.returncode == 0 and "Logging error" not in proc.stderr, proc.stderr[-2000:]
    assert "run dir: r\\xfc n" in proc.stdout and "test acc" in proc.stdout
    complete_record(tmp_path)
