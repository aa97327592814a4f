"""Sweeps whose jobs run in other processes, under faults, with real worker processes: a refused
value, a signal to one job, a signal to the launching process. Every other job runs to its end or
stops with its `interrupted` record, the report is complete, the exit is non-zero with a line per
job that did not complete, and no process outlives the sweep. Signals are sent when the jobs' logs
say they are in their fit."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from srn_lightning import locks, report

from .conftest import QUIET, start_cli

pytestmark = pytest.mark.slow

JOBLIB = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
# long enough that the jobs are in their fit when signalled; a signal stops them within a step
LONG = "trainer.max_epochs=1000"


def sweep(tmp_path, data_dir, *args) -> tuple[subprocess.Popen, Path]:
    sweep_dir = tmp_path / "sweep"
    proc = start_cli(["-m", f"data.dir={data_dir}", f"hydra.sweep.dir={sweep_dir}", "threads=1", *QUIET,
                      *args], tmp_path)
    return proc, sweep_dir


def wait_until_fitting(sweep_dir: Path, jobs: int, proc, timeout: float = 240) -> list[Path]:
    """The dirs of the first `jobs` jobs to log that they are in their fit (read from their logs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        fitting = [p.parent for p in sweep_dir.glob("*/train.log") if "phase: fit" in p.read_text()]
        if len(fitting) >= jobs:
            return fitting
        time.sleep(0.05)
    raise AssertionError(f"{jobs} jobs never reached their fit")


def record(job_dir: Path) -> dict:
    return json.loads((job_dir / "metrics.json").read_text())


def rows(sweep_dir: Path) -> dict[int, dict]:
    return {r["job"]: r for r in (report.read_job(n, d, sweep_dir) for n, d in report.find_jobs(sweep_dir))}


def assert_complete_report(sweep_dir: Path, jobs: int) -> None:
    summary = (sweep_dir / "summary.csv").read_text().splitlines()
    assert len(summary) == 1 + jobs and "missing" not in "".join(summary)
    assert (sweep_dir / "sweep.png").stat().st_size > 0


def assert_gone(pids, grace: float = 10.0) -> None:
    """Each process has ended, at the latest `grace` s after the launching process: no such pid, or
    one that has exited and waits only to be reaped (a zombie: the launching process, its parent,
    exited first). joblib's idle workers end as they find their launching process gone."""
    deadline = time.monotonic() + grace
    for pid in pids:
        while True:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except FileNotFoundError:
                break
            state = stat.rpartition(")")[2].split()[0]
            if state == "Z":
                break
            if time.monotonic() > deadline:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:200]
                raise AssertionError(f"process {pid} outlived the sweep ({state}): {cmdline!r}")
            time.sleep(0.05)


def test_a_refused_value_and_a_signal_to_one_job_fail_alone_in_a_joblib_sweep(data_dir, tmp_path):
    proc, sweep_dir = sweep(tmp_path, data_dir, *JOBLIB, "trainer.max_epochs=3", "lr=0.2,-1,0.1")
    (first, *_) = wait_until_fitting(sweep_dir, 1, proc)
    job = locks.holder(first)
    worker = parents()[job]  # the worker, which passes the signal on to its job's own process
    assert worker != proc.pid
    os.kill(worker, signal.SIGHUP)  # the ssh session of one worker drops
    out, err = proc.communicate(timeout=300)
    assert proc.returncode != 0 and "Traceback" not in err, err[-3000:]
    assert (record(first)["status"], record(first)["signal"]) == ("interrupted", "SIGHUP")
    statuses = {r["dir"]: r["status"] for r in rows(sweep_dir).values()}
    assert statuses.pop(first.name) == "interrupted"
    assert statuses.pop("1_lr=-1,trainer.max_epochs=3") == "failed"
    assert list(statuses.values()) == ["completed"]  # the job neither fault touched
    ended = [line for line in out.splitlines() if line.startswith("job ")]
    assert len(ended) == 2 and (
        "job 1 (lr=-1): failed: ConfigError: lr=-1.0: not allowed; lr must be a finite number > 0"
        in ended)
    assert_complete_report(sweep_dir, 3)


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_a_signal_to_the_launcher_stops_every_job_with_its_record(launcher, data_dir, tmp_path):
    args = JOBLIB if launcher == "joblib" else ["hydra/launcher=submitit_local"]
    proc, sweep_dir = sweep(tmp_path, data_dir, *args, LONG, "lr=0.2,0.1,0.05")
    fitting = wait_until_fitting(sweep_dir, 2 if launcher == "joblib" else 3, proc)
    pids = [locks.holder(d) for d in fitting]
    assert None not in pids
    proc.send_signal(signal.SIGTERM)  # what `timeout` sends
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "Traceback" not in err, err[-3000:]
    found = rows(sweep_dir)
    assert {r["status"] for r in found.values()} == {"interrupted"} and len(found) == 3
    assert {r["signal"] for r in found.values()} == {"SIGTERM"}
    for d in fitting:
        assert record(d)["phase"] == "fit"
    if launcher == "joblib":  # the third job waited for a worker: it stops as it starts
        assert sorted(r["phase"] for r in found.values()) == ["fit", "fit", "queued"]
    assert len([line for line in out.splitlines() if line.startswith("job ")]) == 3
    assert_complete_report(sweep_dir, 3)
    assert_gone(pids)  # no job outlives the sweep


def parents() -> dict[int, int]:
    """Every process's parent, read from /proc."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:  # the command name, in parentheses, may hold spaces: the fields follow its last ")"
            found[int(stat.parent.name)] = int(stat.read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):  # ended meanwhile
            pass
    return found


def sweep_processes(proc) -> list[int]:
    """The pids of the launching process and every process under it (workers, jobs)."""
    ppid, found = parents(), [proc.pid]
    for pid in found:
        found += [child for child, parent in ppid.items() if parent == pid]
    return found


def test_a_job_killed_with_sigkill_fails_alone_in_a_joblib_sweep(data_dir, tmp_path):
    # what the OOM killer does: it kills the process that holds the memory, the job's own. Job 0
    # trains long and is killed mid-fit; job 1 (its sibling, mid-fit too) and job 2 (waiting for a
    # worker) run to their end
    proc, sweep_dir = sweep(tmp_path, data_dir, *JOBLIB, "trainer.max_epochs=1000,200,3")
    fitting = wait_until_fitting(sweep_dir, 2, proc)
    killed, sibling = sorted(fitting, key=lambda d: d.name)
    assert killed.name.startswith("0_") and sibling.name.startswith("1_")
    processes = sweep_processes(proc)
    victim = locks.holder(killed)
    assert victim in processes and not (sibling / "metrics.json").exists()  # both still in their fit
    os.kill(victim, signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode != 0 and "Traceback" not in err, err[-3000:]
    assert (record(killed)["status"], record(killed)["error"]) == ("failed", "killed by SIGKILL (out of memory?)")
    found = rows(sweep_dir)
    assert [found[n]["status"] for n in (0, 1, 2)] == ["failed", "completed", "completed"]
    assert found[0]["error"] == "killed by SIGKILL (out of memory?)"
    assert [line for line in out.splitlines() if line.startswith("job ")] == [
        "job 0 (trainer.max_epochs=1000): failed: killed by SIGKILL (out of memory?)"]
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        f"error: {killed.name}: killed by SIGKILL (out of memory?)"]
    assert_complete_report(sweep_dir, 3)
    assert_gone(processes)  # no worker and no job outlives the sweep


def test_a_group_of_seeds_killed_with_sigkill_fails_alone_in_a_joblib_sweep(data_dir, tmp_path):
    # the seeds of a setting trained side by side (srn_lightning/stacking.py) run in a process of
    # their own too: killed, each seed of the group has its failed record, and the other group runs
    proc, sweep_dir = sweep(tmp_path, data_dir, *JOBLIB, "seed=0,1", "trainer.max_epochs=1000,3")
    deadline = time.monotonic() + 240
    group_log = sweep_dir / ".stacked" / "0" / "train.log"  # the long group's: jobs 0 and 2, seeds 0 and 1
    while not (group_log.is_file() and "phase: fit" in group_log.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    long = sorted(d for d in sweep_dir.glob("*_*") if "max_epochs=1000" in d.name)
    assert len(long) == 2 and not any((d / "metrics.json").exists() for d in long)
    processes = sweep_processes(proc)
    victim = locks.holder(long[0])
    assert victim in processes and locks.holder(long[1]) == victim  # one process trains both seeds
    os.kill(victim, signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode != 0 and "Traceback" not in err, err[-3000:]
    found = rows(sweep_dir)
    killed = {n for n, r in found.items() if r["status"] == "failed"}
    assert {found[n]["dir"] for n in killed} == {d.name for d in long}
    assert all(found[n]["error"] == "killed by SIGKILL (out of memory?)" for n in killed)
    assert sorted(r["status"] for r in found.values()) == ["completed", "completed", "failed", "failed"]
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        f"error: {long[0].name}, {long[1].name}: killed by SIGKILL (out of memory?)"]
    assert_complete_report(sweep_dir, 4)
    assert_gone(processes)


def test_a_joblib_worker_killed_with_sigkill_ends_the_sweep_in_one_line(data_dir, tmp_path):
    # the worker itself killed (not the job's process it waits for): joblib's pool stops the other
    # workers with their jobs; the killed worker's job stops with its record. One line, a rebuilt
    # report and no process left
    proc, sweep_dir = sweep(tmp_path, data_dir, *JOBLIB, LONG, "lr=0.2,0.1,0.05")
    fitting = wait_until_fitting(sweep_dir, 2, proc)
    processes = sweep_processes(proc)
    job = locks.holder(fitting[0])
    worker = parents()[job]
    assert worker in processes and worker != proc.pid
    os.kill(worker, signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: a worker process of the sweep died")
    assert (record(fitting[0])["status"], record(fitting[0])["signal"]) == ("interrupted", "SIGTERM")
    assert len([line for line in out.splitlines() if line.startswith("job ")]) == len(rows(sweep_dir))
    assert (sweep_dir / "summary.csv").exists()
    assert_gone(processes)
