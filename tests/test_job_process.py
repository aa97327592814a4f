"""A joblib job's own process (srn_lightning/job_process.py): what the job returns or raises reaches
its worker as if the worker had run it, and a job killed outright gets its `failed` record."""

import os
import signal

import pytest

from srn_lightning import job_process, record
from srn_lightning.config import ConfigError


def refuse():
    raise ConfigError("lr", -1.0)


def kill_self(signum):
    os.kill(os.getpid(), signum)


def test_what_the_job_returns_or_raises_reaches_the_worker(make_cfg, tmp_path):
    assert job_process.run_alone(os.getpid, make_cfg(), tmp_path) != os.getpid()  # another process
    with pytest.raises(ConfigError) as raised:
        job_process.run_alone(refuse, make_cfg(), tmp_path)
    assert str(raised.value) == str(ConfigError("lr", -1.0))
    assert not (tmp_path / record.METRICS_NAME).exists()  # the job's own code records its errors


@pytest.mark.parametrize(("signum", "reason"), [
    (signal.SIGKILL, "killed by SIGKILL (out of memory?)"),
    (signal.SIGSEGV, "killed by SIGSEGV"),
])
def test_a_job_killed_outright_gets_its_failed_record(signum, reason, make_cfg, tmp_path):
    run_dir = tmp_path / "0_lr=0.1"
    run_dir.mkdir()
    with pytest.raises(job_process.JobKilled) as raised:
        job_process.run_alone(lambda: kill_self(signum), make_cfg("lr=0.1"), run_dir)
    assert str(raised.value) == f"0_lr=0.1: {reason}"
    metrics = record.read_metrics(run_dir)
    assert (metrics["status"], metrics["error"], metrics["lr"]) == ("failed", reason, 0.1)


def test_a_completed_record_is_kept_when_the_process_dies_after_it(make_cfg, tmp_path):
    record.write_metrics(tmp_path, {"status": "completed", "dev_best": 0.5})
    with pytest.raises(job_process.JobKilled):
        job_process.run_alone(lambda: kill_self(signal.SIGKILL), make_cfg(), tmp_path)
    assert record.read_metrics(tmp_path) == {"status": "completed", "dev_best": 0.5}


def test_an_exit_without_a_result_is_named_by_its_code():
    assert job_process.how_it_ended(3) == "its process ended with exit code 3 before the job's end"


def test_a_worker_imports_what_its_job_imported_before_its_next_job_not_before_returning(
        make_cfg, tmp_path, monkeypatch):
    import importlib
    import sys

    name = f"probe_{os.getpid()}"
    (tmp_path / f"{name}.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    job_process.run_alone(lambda: importlib.import_module(name) and None, make_cfg(), tmp_path)
    assert name not in sys.modules  # the result came back first
    assert job_process.run_alone(lambda: name in sys.modules, make_cfg(), tmp_path)  # forked with it
    assert name in sys.modules
