"""What the tests share: the book's data files, the composed config, and the command line run as a
user runs it (in a child process that imports this checkout)."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from srn_lightning.data import ensure_files
from srn_lightning.config import CONFIG_DIR

REPO = Path(__file__).resolve().parent.parent
QUIET = ["trainer.enable_progress_bar=false"]


def compose_cfg(*overrides: str):
    """The project's real config with overrides, as `python -m srn_lightning.train` composes it."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """A 32-unit recurrent net gains nothing from torch's thread pool, and on a busy machine a pool
    waiting for its second core makes a run many times slower."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """The book's files for the lengths the tests train on, generated once per session."""
    d = tmp_path_factory.mktemp("data")
    for length in (10, 20):
        ensure_files(d, length)
    return d


@pytest.fixture
def make_cfg(data_dir):
    """`compose_cfg` with the session's data files and no progress bar."""

    def make(*overrides: str):
        return compose_cfg(f"data.dir={data_dir}", *QUIET, *overrides)

    return make


def child_env(**extra: str) -> dict:
    """This process's environment, with this checkout first on PYTHONPATH and one torch thread by
    default, as in the suite's own process: the suite runs a worker per core."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **extra}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "srn_lightning.train", *args]


def run_cli(args, cwd, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m srn_lightning.train ARGS` in `cwd`, to its end; its output captured as text."""
    return subprocess.run(cli(*args), cwd=cwd, env=child_env(), capture_output=True, text=True,
                          timeout=timeout)


def start_cli(args, cwd, **popen) -> subprocess.Popen:
    """`python -m srn_lightning.train ARGS` in `cwd`, started and left running; output piped."""
    popen = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **popen}
    return subprocess.Popen(cli(*args), cwd=cwd, env=child_env(), text=True, **popen)


def summary_rows(sweep_dir: Path) -> dict[int, dict]:
    """A sweep report's summary.csv, its rows by job number."""
    with (sweep_dir / "summary.csv").open(newline="") as f:
        return {int(r["job"]): r for r in csv.DictReader(f)}


def metrics(job_dir: Path) -> dict:
    """A job's metrics.json."""
    return json.loads((job_dir / "metrics.json").read_text())
