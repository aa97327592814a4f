"""A record always keeps what was measured: a phase that fails after the fit (a figure, TensorBoard,
a full disk, a file-size limit) leaves metrics.json with every number already known, the phase and
the file that failed; if even metrics.json cannot be written, one log line holds the record."""

import errno
import json
import logging
import resource
import subprocess

import pytest

from srn_lightning import plots, record
from srn_lightning.errors import RunFailed
from srn_lightning.train import run

from .conftest import QUIET, child_env, cli

SHORT = ["clip=norm", "trainer.max_epochs=1"]
NUMBERS = ["epochs", "steps", "dev_best", "best_checkpoint", "test_acc", *record.NORM_KEYS,
           "vanishing_ratio_first", "sigma_max_U_last"]


@pytest.fixture(scope="module")
def straight(data_dir, tmp_path_factory):
    """The numbers of the same run, uninterrupted and unfailed."""
    from .conftest import compose_cfg

    metrics = run(compose_cfg(f"data.dir={data_dir}", *QUIET, *SHORT), tmp_path_factory.mktemp("straight"))
    return {k: metrics[k] for k in NUMBERS}


def full_disk(path):
    def fail(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    return fail


def test_a_figure_that_fails_keeps_every_number_and_names_the_file(straight, make_cfg, tmp_path,
                                                                   monkeypatch):
    monkeypatch.setattr(plots, "plot_grad_time", full_disk(tmp_path / "grad_time.png"))
    with pytest.raises(RunFailed, match="failed during figures: .*No space left.*grad_time.png"):
        run(make_cfg(*SHORT), tmp_path)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert (m["status"], m["phase"]) == ("failed", "figures") and "grad_time.png" in m["error"]
    assert {k: m[k] for k in NUMBERS} == straight and m["fit_seconds"] > 0


def test_tensorboard_that_fails_keeps_every_number_and_names_its_dir(straight, make_cfg, tmp_path,
                                                                      monkeypatch):
    from lightning.pytorch.loggers import TensorBoardLogger

    log_hyperparams = TensorBoardLogger.log_hyperparams

    def fails(self, params, metrics=None, *args):  # the HParams with the run's results, after its test
        if metrics is None:  # Lightning's own call, as the fit starts
            return log_hyperparams(self, params, metrics, *args)
        raise OSError(errno.ENOSPC, "No space left on device")  # a failed write names no file

    monkeypatch.setattr(TensorBoardLogger, "log_hyperparams", fails)
    with pytest.raises(RunFailed):
        run(make_cfg(*SHORT), tmp_path)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert (m["status"], m["phase"]) == ("failed", "figures") and f"{tmp_path / 'tb'}" in m["error"]
    assert {k: m[k] for k in NUMBERS} == straight


def test_a_record_that_cannot_be_written_is_one_log_line_with_the_numbers(straight, make_cfg, tmp_path,
                                                                          monkeypatch, caplog):
    monkeypatch.setattr(record, "write_metrics", full_disk(tmp_path / "metrics.json"))
    with caplog.at_level(logging.ERROR), pytest.raises(RunFailed, match="during record"):
        run(make_cfg(*SHORT), tmp_path)
    lines = [r.getMessage() for r in caplog.records if "not written" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]
    written = json.loads(lines[0].split("the run's record: ", 1)[1])
    assert (written["status"], written["phase"]) == ("failed", "record")
    assert {k: written[k] for k in NUMBERS} == straight


@pytest.mark.slow
def test_a_file_size_limit_fails_the_run_with_its_numbers_and_one_line(straight, data_dir, tmp_path):
    run_dir = tmp_path / "run"

    def limit():  # 40 KB: the checkpoints and CSVs fit, the PNG does not
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))

    proc = subprocess.run(cli(f"data.dir={data_dir}", f"hydra.run.dir={run_dir}", *SHORT, *QUIET),
                          cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=300,
                          preexec_fn=limit)
    assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: failed during figures: OSError: [Errno 27] File too large: '{run_dir / 'grad_norms.png'}'")
    m = json.loads((run_dir / "metrics.json").read_text())
    assert (m["status"], m["phase"]) == ("failed", "figures") and "grad_norms.png" in m["error"]
    assert {k: m[k] for k in NUMBERS} == straight
    assert not (run_dir / "grad_norms.png").exists()  # no partial image
