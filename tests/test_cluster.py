"""Sweeps through a real one-node Slurm cluster (scripts/slurm/start-slurm.sh): a sweep completes;
a job told its time is up (USR2) or preempted (SIGTERM, Slurm's requeue) continues from its last
epoch and ends with the numbers of an uninterrupted run, and so does each seed of a requeued group
of seeds trained side by side; a cancelled job ends the sweep, non-zero, with a `cancelled` row,
with and without `sacct`.

The cluster is the one running here, else started by the script (root, Debian's packages) and
stopped after; where none can be started the tests are skipped, saying why. Jobs are tiny: one CPU
each, on a node of this machine's cores.
"""

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from .conftest import QUIET, REPO, child_env, cli, metrics, run_cli, summary_rows

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SCRIPTS = REPO / "scripts" / "slurm"
# one Slurm job a seed: these tests are of each job's requeue, preemption and cancellation
SWEEP = ["-m", "hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1",
         "hydra.launcher.mem_gb=1", "hydra.sweeper.stack_seeds=false", *QUIET]
EPOCHS = 80  # long enough (seconds) for a signal to land in the fit, short for the suite


def cluster_answers() -> bool:
    try:
        return subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                              timeout=20).stdout.strip() in ("idle", "mixed", "allocated")
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.fixture(scope="module")
def cluster():
    """A one-node cluster with accounting: the one running, else started here and stopped after."""
    if cluster_answers():
        yield
        return
    if os.geteuid() != 0:
        pytest.skip("no Slurm cluster: none answers, and starting the test cluster needs root")
    installed = shutil.which("slurmctld") is not None
    if not installed and shutil.which("apt-get") is None:
        pytest.skip("no Slurm cluster: none answers, and no apt-get to install one with")
    start = subprocess.run(["bash", str(SCRIPTS / "start-slurm.sh")], capture_output=True, text=True,
                           timeout=900)
    assert start.returncode == 0, f"the test cluster did not start: {start.stderr[-2000:]}"
    yield
    subprocess.run(["bash", str(SCRIPTS / "stop-slurm.sh")], capture_output=True, timeout=300)


class Sweep:
    """A sweep launched from the command line, its output in a file (no pipe to fill)."""

    def __init__(self, cwd: Path, args, env=None) -> None:
        self.cwd, self.log = cwd, cwd / "sweep.log"
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(cli(*args), cwd=cwd, env=env or child_env(), stdout=out,
                                         stderr=subprocess.STDOUT, text=True)
        self.started = time.monotonic()

    def dir(self) -> Path:
        return self._wait(lambda: next((self.cwd / "outputs" / "sweeps").glob("*/*"), None), "sweep dir")

    def job_dir(self, num: int) -> Path:
        return self._wait(lambda: next(self.dir().glob(f"{num}_*"), None), f"job {num}'s dir")

    def slurm_id(self, num) -> str:
        """The Slurm id of job `num` (or of a group of seeds, "0,1"), from the launching process's
        line `Slurm jobs: #0=12_0, ...`."""
        def find():
            for line in self.log.read_text().splitlines():
                if "Slurm jobs:" in line:
                    return dict(p.split("=") for p in line.split("Slurm jobs: ")[1].split(", "))[f"#{num}"]
        return self._wait(find, "the Slurm job ids")

    def wait_for_checkpoint(self, num: int) -> Path:
        """Job `num`'s last.ckpt: it has trained an epoch and is in its fit."""
        return self._wait(lambda: next((self.job_dir(num) / "checkpoints").glob("last.ckpt"), None),
                          f"job {num}'s first epoch")

    def finish(self, timeout: float = 300) -> tuple[int, str, float]:
        self.proc.wait(timeout=timeout)
        return self.proc.returncode, self.log.read_text(), time.monotonic() - self.started

    def _wait(self, find, what: str, timeout: float = 240):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            found = find()
            if found:
                return found
            assert self.proc.poll() is None, f"the sweep ended before {what}:\n{self.log.read_text()[-3000:]}"
            time.sleep(0.2)
        raise AssertionError(f"no {what} after {timeout} s:\n{self.log.read_text()[-3000:]}")


def scalars(run_dir: Path) -> dict:
    """Every TensorBoard scalar of a run as TensorBoard reads its dir: tag -> [(step, value)]."""
    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_dir):
    """The single run of a seed, on this machine without Slurm: what a continued job must equal."""
    runs = {}

    def run(seed: int) -> Path:
        if seed not in runs:
            run_dir = tmp_path_factory.mktemp("uninterrupted") / f"seed{seed}"
            proc = run_cli([f"data.dir={data_dir}", f"trainer.max_epochs={EPOCHS}", f"seed={seed}",
                            "threads=1", f"hydra.run.dir={run_dir}", *QUIET], cwd=run_dir.parent)
            assert proc.returncode == 0, proc.stderr[-3000:]
            runs[seed] = run_dir
        return runs[seed]

    return run


def assert_same_run(job: Path, reference: Path) -> None:
    """A continued job ends with what an uninterrupted run of its config has: the same rows, the same
    metrics.json but for timings and what says it was continued, one TensorBoard run of the same
    scalars, its best and last checkpoints only."""
    for name in ("grad_norms.csv", "grad_time.csv"):
        assert (job / name).read_bytes() == (reference / name).read_bytes(), name
    ours, theirs = metrics(job), metrics(reference)
    for m in (ours, theirs):
        m.pop("fit_seconds")
    assert {k: v for k, v in ours.items() if k not in ("requeues", "requeue_signals")} == theirs
    assert sorted(p.name for p in (job / "checkpoints").iterdir()) == sorted(
        p.name for p in (reference / "checkpoints").iterdir())
    assert scalars(job) == scalars(reference)


def test_a_two_job_sweep_runs_on_slurm_with_its_records_and_report(cluster, tmp_path, data_dir):
    sweep = Sweep(tmp_path, [*SWEEP, f"data.dir={data_dir}", "trainer.max_epochs=2", "seed=0,1"])
    rc, out, _ = sweep.finish()
    assert rc == 0, out[-3000:]
    sweep_dir = sweep.dir()
    report = summary_rows(sweep_dir)
    assert sorted(report) == [0, 1] and all(r["status"] == "completed" for r in report.values())
    for num, row in report.items():
        assert metrics(sweep_dir / row["dir"])["seed"] == num and row["seed"] == str(num)
    assert (sweep_dir / "summary.md").exists() and (sweep_dir / "sweep.png").exists()
    assert "sweep report:" in out
    logs = "".join(p.read_text() for p in sweep_dir.glob(".submitit/*/*_log.*"))
    assert "phase: record" in logs  # the jobs' own logs are there, and say nothing of Lightning's
    assert "srun" not in logs.replace("srun: ", "") and "auto-requeue" not in logs  # Slurm handling


def test_a_run_on_a_machine_with_srun_says_nothing_of_it(cluster, tmp_path, data_dir):
    """A login node has `srun` on its PATH: Lightning would say it "is available but not used"."""
    assert shutil.which("srun")
    proc = run_cli([f"data.dir={data_dir}", "trainer.max_epochs=1", f"hydra.run.dir={tmp_path / 'run'}",
                    "verbose=true", *QUIET], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = proc.stdout + proc.stderr + (tmp_path / "run" / "train.log").read_text()
    assert "phase: record" in said and "srun" not in said and "SLURM" not in said


# how a job is told to go and come back: (command, the signal the job gets)
REQUEUES = {"USR2 (time limit, by hand)": (["scancel", "--signal=USR2"], "SIGUSR2"),
            "scontrol requeue": (["scontrol", "requeue"], "SIGTERM")}


@pytest.mark.parametrize("how", REQUEUES)
def test_a_requeued_job_continues_to_the_numbers_of_an_uninterrupted_run(
        cluster, tmp_path, data_dir, uninterrupted, how):
    command, signal_name = REQUEUES[how]
    sweep = Sweep(tmp_path, [*SWEEP, f"data.dir={data_dir}", f"trainer.max_epochs={EPOCHS}", "seed=0"])
    sweep.wait_for_checkpoint(0)
    subprocess.run([*command, sweep.slurm_id(0)], check=True)
    rc, out, _ = sweep.finish()
    assert rc == 0, out[-3000:]
    job = sweep.job_dir(0)
    logs = "".join(p.read_text() for p in sweep.dir().glob(".submitit/*/*_log.*"))
    assert f"interrupted by {signal_name} during fit" in logs and "continues from" in logs
    m = metrics(job)
    assert (m["status"], m["epochs"], m["requeues"], m["requeue_signals"]) == ("completed", EPOCHS, 1, [signal_name])
    assert summary_rows(sweep.dir())[0]["status"] == "completed"
    assert_same_run(job, uninterrupted(0))


def test_preempted_jobs_continue_and_the_sweep_succeeds(cluster, tmp_path, data_dir, uninterrupted):
    sweep = Sweep(tmp_path, [*SWEEP, f"data.dir={data_dir}", f"trainer.max_epochs={EPOCHS}", "seed=0,1"])
    for num in (0, 1):
        sweep.wait_for_checkpoint(num)
    cpus = subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True).stdout.split()[0]
    # a job of the higher-priority partition that needs the whole node: Slurm preempts both
    subprocess.run(["sbatch", "-p", "high", f"--cpus-per-task={cpus}", "-o", os.devnull,
                    "--wrap", "sleep 1"], check=True, capture_output=True)
    rc, out, _ = sweep.finish()
    assert rc == 0, out[-3000:]
    for num in (0, 1):
        job = sweep.job_dir(num)
        m = metrics(job)
        assert (m["status"], m["requeues"], m["requeue_signals"]) == ("completed", 1, ["SIGTERM"]), num
    assert_same_run(sweep.job_dir(0), uninterrupted(0))
    assert all(r["status"] == "completed" for r in summary_rows(sweep.dir()).values())


def test_a_requeued_group_of_seeds_continues_each_seed_to_its_own_runs_numbers(
        cluster, tmp_path, data_dir, uninterrupted):
    """Seeds side by side (the default) on Slurm: the group is one Slurm job; requeued mid-fit, each
    seed's record says so, and the job's next attempt continues each seed from its own checkpoint
    (one by one: an earlier attempt is taken up alone), to its uninterrupted run's numbers."""
    stacked = [a for a in SWEEP if a != "hydra.sweeper.stack_seeds=false"]
    sweep = Sweep(tmp_path, [*stacked, f"data.dir={data_dir}", f"trainer.max_epochs={EPOCHS}", "seed=0,1"])
    for num in (0, 1):
        sweep.wait_for_checkpoint(num)
    subprocess.run(["scontrol", "requeue", sweep.slurm_id("0,1")], check=True)
    rc, out, _ = sweep.finish()
    assert rc == 0, out[-3000:]
    logs = "".join(p.read_text() for p in sweep.dir().glob(".submitit/*/*_log.*"))
    assert "seeds 0, 1 of one setting trained side by side" in logs
    assert "interrupted by SIGTERM during fit" in logs and "holds an earlier attempt" in logs
    for num in (0, 1):
        m = metrics(sweep.job_dir(num))
        assert (m["status"], m["epochs"], m["requeues"], m["requeue_signals"]) == (
            "completed", EPOCHS, 1, ["SIGTERM"]), num
        assert_same_run(sweep.job_dir(num), uninterrupted(num))
    assert [r["status"] for r in summary_rows(sweep.dir()).values()] == ["completed"] * 2


def no_sacct_env(tmp_path: Path) -> dict:
    """This environment with `sacct` out of reach, as on a cluster without accounting: a PATH of the
    Slurm commands but sacct, and the Python dirs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for cmd in ("sbatch", "squeue", "scancel", "scontrol", "srun", "sinfo"):
        (bin_dir / cmd).symlink_to(shutil.which(cmd))
    import sys

    path = os.pathsep.join([str(bin_dir), os.path.dirname(sys.executable)])
    return child_env(PATH=path)


@pytest.mark.parametrize("accounting", ["sacct", "no sacct"])
def test_a_cancelled_job_ends_the_sweep_non_zero_naming_it_with_a_cancelled_row(
        cluster, tmp_path, data_dir, accounting):
    env = no_sacct_env(tmp_path) if accounting == "no sacct" else None
    # 3 jobs of one CPU on a node of 2: job 2 waits for one of the others
    sweep = Sweep(tmp_path, [*SWEEP, f"data.dir={data_dir}", f"trainer.max_epochs={EPOCHS}", "seed=0,1,2"], env)
    sweep.wait_for_checkpoint(1)
    running, pending = sweep.slurm_id(1), sweep.slurm_id(2)
    assert not list(sweep.dir().glob("2_*"))
    subprocess.run(["scancel", running, pending], check=True)
    t0 = time.monotonic()
    rc, out, _ = sweep.finish()
    last = out.strip().splitlines()
    assert rc != 0
    line = next(l for l in last if l.startswith("error: "))
    assert (f"2 of 3 jobs did not finish: job 1 (Slurm {running}) cancelled" in line
            and f"job 2 (Slurm {pending}) cancelled" in line), line
    assert "resume=" in line
    report = summary_rows(sweep.dir())
    assert [report[n]["status"] for n in range(3)] == ["completed", "cancelled", "cancelled"]
    assert running in report[1]["error"] and pending in report[2]["error"]
    assert metrics(sweep.job_dir(1))["signal"] == "SIGTERM"  # the job's own record, kept
    assert report[2]["seed"] == "2" and report[2]["dir"].startswith("2_seed=2")  # never started: its row
    # the launching process noticed within its bound of the job's end (job 0 ran on meanwhile)
    assert time.monotonic() - t0 < 120
    if accounting == "sacct":
        continue_on_slurm(tmp_path, sweep.dir(), running)


def continue_on_slurm(cwd: Path, sweep_dir: Path, cancelled: str) -> None:
    """The sweep whose jobs 1 (running) and 2 (pending) were cancelled continues with one command,
    on its own launcher: job 0 kept, job 1 from its last epoch, job 2 afresh, all complete."""
    kept = (sweep_dir / summary_rows(sweep_dir)[0]["dir"] / "metrics.json").read_bytes()
    started = time.monotonic()
    done = subprocess.run(cli("-m", f"resume={sweep_dir}"), cwd=cwd, env=child_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ids = next(line for line in done.stdout.splitlines() if "Slurm jobs:" in line)
    assert cancelled.split("_")[0] not in ids  # submitted to Slurm again, as a new array job
    assert "hydra/launcher=slurm" in (sweep_dir / "multirun.yaml").read_text()
    report = summary_rows(sweep_dir)
    assert [report[n]["status"] for n in range(3)] == ["completed"] * 3, report
    assert (sweep_dir / report[0]["dir"] / "metrics.json").read_bytes() == kept
    m1, m2 = (metrics(sweep_dir / report[n]["dir"]) for n in (1, 2))
    assert (m1["epochs"], m1["requeues"], m1["requeue_signals"]) == (EPOCHS, 1, ["SIGTERM"])
    assert (m2["epochs"], m2.get("requeues")) == (EPOCHS, None)  # never started: ran afresh
    print(f"continued on Slurm in {time.monotonic() - started:.0f} s")
