"""A sweep continues with one command, `resume=SWEEP_DIR`: after Ctrl-C on the basic launcher, and
after its joblib launcher was killed, completed jobs are kept, interrupted ones resume to the numbers
of an uninterrupted run, never-started ones run, and the report covers all of them."""

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import QUIET, child_env, cli, run_cli

pytestmark = pytest.mark.slow

EPOCHS = 60  # seconds of fit: a signal sent as a job's first epoch ends lands in its fit
ONE_JOB_A_SEED = "hydra.sweeper.stack_seeds=false"  # a sweep's jobs one after another, or side by side


def start(args, cwd: Path, data_dir) -> subprocess.Popen:
    log = (cwd / "sweep.log").open("w")
    return subprocess.Popen(cli(*args, f"data.dir={data_dir}", f"trainer.max_epochs={EPOCHS}", "grad_time=false",
                                *QUIET),
                            cwd=cwd, env=child_env(), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_for(path_glob: str, cwd: Path, proc: subprocess.Popen, timeout: float = 240) -> Path:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = next(cwd.glob(path_glob), None)
        if found:
            return found
        assert proc.poll() is None, (cwd / "sweep.log").read_text()[-3000:]
        time.sleep(0.05)
    raise AssertionError(f"no {path_glob} after {timeout} s")


def rows(sweep_dir: Path) -> dict[int, dict]:
    with (sweep_dir / "summary.csv").open(newline="") as f:
        return {int(r["job"]): r for r in csv.DictReader(f)}


def metrics(job_dir: Path) -> dict:
    return json.loads((job_dir / "metrics.json").read_text())


def reference(tmp_path: Path, data_dir, seed: int) -> Path:
    run_dir = tmp_path / f"uninterrupted{seed}"
    proc = run_cli([f"data.dir={data_dir}", f"trainer.max_epochs={EPOCHS}", f"seed={seed}", "threads=1",
                    "grad_time=false", f"hydra.run.dir={run_dir}", *QUIET], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def continue_sweep(sweep_dir: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cli("-m", f"resume={sweep_dir}"), cwd=cwd, env=child_env(),
                          capture_output=True, text=True, timeout=600)


def test_a_sweep_stopped_by_ctrl_c_continues_with_one_command(tmp_path, data_dir):
    proc = start(["-m", "seed=0,1,2", "threads=1", ONE_JOB_A_SEED], tmp_path, data_dir)
    wait_for("outputs/sweeps/*/*/1_*/checkpoints/last.ckpt", tmp_path, proc)
    proc.send_signal(signal.SIGINT)  # Ctrl-C, in job 1's fit
    assert proc.wait(timeout=120) != 0
    (sweep_dir,) = (tmp_path / "outputs" / "sweeps").glob("*/*")
    job0, job1 = (next(sweep_dir.glob(f"{n}_*")) for n in (0, 1))
    assert metrics(job1)["status"] == "interrupted" and not list(sweep_dir.glob("2_*"))
    kept = (job0 / "metrics.json").read_bytes(), (job0 / "metrics.json").stat().st_mtime_ns
    history = (sweep_dir / "multirun.yaml").read_text()

    done = continue_sweep(sweep_dir, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = rows(sweep_dir)
    assert sorted(report) == [0, 1, 2] and all(r["status"] == "completed" for r in report.values())
    # the report's settings are the sweep's: seeds of one setting, no `resume` or `sweep_add`
    (setting,) = list(csv.DictReader((sweep_dir / "summary_by_setting.csv").open()))
    assert (setting["jobs"], setting["seeds"], setting["test_acc_n"]) == ("3", "0 1 2", "3")
    assert all("resume" not in r["overrides"] for r in report.values())
    # job 0 kept as it was, job 1 continued to an uninterrupted run's numbers, job 2 ran
    assert ((job0 / "metrics.json").read_bytes(), (job0 / "metrics.json").stat().st_mtime_ns) == kept
    m1 = metrics(job1)
    assert (m1["requeues"], m1["requeue_signals"]) == (1, ["SIGINT"])
    ref = reference(tmp_path, data_dir, 1)
    assert (job1 / "grad_norms.csv").read_bytes() == (ref / "grad_norms.csv").read_bytes()
    assert sorted(p.name for p in (job1 / "checkpoints").iterdir()) == sorted(
        p.name for p in (ref / "checkpoints").iterdir())
    assert "requeues" not in metrics(next(sweep_dir.glob("2_*")))
    # the console says the sweep's job numbers; multirun.yaml keeps the first sweep's config
    assert "[job 2]" in done.stdout and "[job 1]" in done.stdout
    assert (sweep_dir / "multirun.1.yaml").read_text() == history


def test_a_sweep_whose_joblib_launcher_was_killed_continues_with_one_command(tmp_path, data_dir):
    proc = start(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1,2", ONE_JOB_A_SEED],
                 tmp_path, data_dir)
    for n in (0, 1):
        wait_for(f"outputs/sweeps/*/*/{n}_*/checkpoints/last.ckpt", tmp_path, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the launching process and its workers, without a word
    proc.wait(timeout=60)
    (sweep_dir,) = (tmp_path / "outputs" / "sweeps").glob("*/*")
    assert not any((d / "metrics.json").exists() for d in sweep_dir.glob("[01]_*"))

    done = continue_sweep(sweep_dir, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = rows(sweep_dir)
    assert sorted(report) == [0, 1, 2] and all(r["status"] == "completed" for r in report.values())
    for n in (0, 1):
        m = metrics(next(sweep_dir.glob(f"{n}_*")))
        assert (m["requeues"], m["requeue_signals"]) == (1, ["killed"])
    ref = reference(tmp_path, data_dir, 0)
    assert (next(sweep_dir.glob("0_*")) / "grad_norms.csv").read_bytes() == (ref / "grad_norms.csv").read_bytes()
    # continued by the sweep's own launcher: its multirun.yaml says so
    assert "- hydra/launcher=joblib" in (sweep_dir / "multirun.yaml").read_text()

@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=1"]],
                         ids=["basic", "joblib"])
def test_a_group_of_seeds_stopped_by_ctrl_c_continues_with_one_command(tmp_path, data_dir, launcher):
    """The seeds trained side by side: each seed's record says it was interrupted and how to go
    on (in a joblib worker the job fails alone, in one line); the continued sweep takes each seed up
    from its own last checkpoint, as its own job, to the numbers of its uninterrupted run."""
    proc = start(["-m", "seed=0,1", "threads=1", *launcher], tmp_path, data_dir)
    wait_for("outputs/sweeps/*/*/1_*/checkpoints/last.ckpt", tmp_path, proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) != 0
    (sweep_dir,) = (tmp_path / "outputs" / "sweeps").glob("*/*")
    said = (tmp_path / "sweep.log").read_text()
    assert "trained side by side" in said and "Traceback" not in said
    assert "interrupted (SIGINT during fit) after" in said
    for n in (0, 1):
        m = metrics(next(sweep_dir.glob(f"{n}_*")))
        assert (m["status"], m["resume"]) == ("interrupted", f"python -m srn_lightning.train -m resume={sweep_dir}")

    done = continue_sweep(sweep_dir, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "seeds 0, 1 run one by one" in done.stdout + done.stderr
    report = rows(sweep_dir)
    assert sorted(report) == [0, 1] and all(r["status"] == "completed" for r in report.values())
    for n in (0, 1):
        job = next(sweep_dir.glob(f"{n}_*"))
        assert (metrics(job)["requeues"], metrics(job)["requeue_signals"]) == (1, ["SIGINT"])
        ref = reference(tmp_path, data_dir, n)
        assert (job / "grad_norms.csv").read_bytes() == (ref / "grad_norms.csv").read_bytes()


def test_resume_refuses_a_dir_that_is_no_sweep_in_one_line(tmp_path):
    (tmp_path / "not_a_sweep").mkdir()
    done = subprocess.run(cli("-m", f"resume={tmp_path / 'not_a_sweep'}"), cwd=tmp_path, env=child_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        f"error: resume={tmp_path / 'not_a_sweep'}: {tmp_path / 'not_a_sweep'} is not a run dir "
        "(no .hydra/overrides.yaml) nor a sweep dir (no multirun.yaml)"]
