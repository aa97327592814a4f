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

from .conftest import QUIET, child_env, cli, metrics, run_cli, summary_rows

pytestmark = pytest.mark.slow

EPOCHS = 60  # seconds of fit: a signal sent as a job's first epoch ends lands in its fit
ONE_JOB_A_SEED = "hydra.sweeper.stack_seeds=false"  # a sweep's jobs one after another, or side by side


def start(args, cwd: Path, data_dir, epochs: int = EPOCHS) -> subprocess.Popen:
    log = (cwd / "sweep.log").open("w")
    return subprocess.Popen(cli(*args, f"data.dir={data_dir}", f"trainer.max_epochs={epochs}", "grad_time=false",
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


def reference(tmp_path: Path, data_dir, seed: int, *overrides: str, epochs: int = EPOCHS) -> Path:
    run_dir = tmp_path / f"uninterrupted{seed}"
    proc = run_cli([f"data.dir={data_dir}", f"trainer.max_epochs={epochs}", f"seed={seed}", "threads=1",
                    "grad_time=false", *overrides, f"hydra.run.dir={run_dir}", *QUIET], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def continue_sweep(sweep_dir: Path, cwd: Path, *given: str) -> subprocess.CompletedProcess:
    return subprocess.run(cli("-m", f"resume={sweep_dir}", *given), cwd=cwd, env=child_env(),
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
    report = summary_rows(sweep_dir)
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
    report = summary_rows(sweep_dir)
    assert sorted(report) == [0, 1, 2] and all(r["status"] == "completed" for r in report.values())
    for n in (0, 1):
        m = metrics(next(sweep_dir.glob(f"{n}_*")))
        assert (m["requeues"], m["requeue_signals"]) == (1, ["killed"])
    ref = reference(tmp_path, data_dir, 0)
    assert (next(sweep_dir.glob("0_*")) / "grad_norms.csv").read_bytes() == (ref / "grad_norms.csv").read_bytes()
    # continued by the sweep's own launcher: its multirun.yaml says so
    assert "- hydra/launcher=joblib" in (sweep_dir / "multirun.yaml").read_text()

SHORT = 20  # epochs: a few seconds of fit, time for a signal after the first one


def stop_at_first_epoch(proc: subprocess.Popen, num: int, cwd: Path, pattern: str = "outputs/sweeps/*/*") -> Path:
    """Ctrl-C as job `num` has trained its first epoch; the sweep dir."""
    wait_for(f"{pattern}/{num}_*/checkpoints/last.ckpt", cwd, proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) != 0
    return next(cwd.glob(pattern))


def listing(path: Path) -> dict:
    """Every file under a dir, with its contents and when it was last written."""
    return {str(p.relative_to(path)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(path.rglob("*")) if p.is_file()}


def results(job_dir: Path) -> dict:
    """What a job's run wrote (its record, rows, figures, checkpoints, TensorBoard events), not
    what any attempt at it writes (its config in .hydra/, its log, its lock)."""
    return {k: v for k, v in listing(job_dir).items() if not k.startswith((".hydra", "train.log", ".lock"))}


def test_an_optuna_search_stopped_by_ctrl_c_continues_as_the_same_trials(tmp_path, data_dir):
    import optuna

    proc = start(["hparams_search=optuna", "hydra.sweeper.n_trials=3", "length=10", "threads=1"], tmp_path,
                 data_dir, SHORT)
    sweep_dir = stop_at_first_epoch(proc, 1, tmp_path)
    job0, job1 = (next(sweep_dir.glob(f"{n}_*")) for n in (0, 1))
    assert metrics(job1)["status"] == "interrupted" and not list(sweep_dir.glob("2_*"))
    kept = (job0 / "metrics.json").read_bytes(), (job0 / "metrics.json").stat().st_mtime_ns

    done = continue_sweep(sweep_dir, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    # the trials the search's seeded sampler asks, one after another (its first 10 are drawn at
    # random, whatever the values told): the same three, each in its job dir, numbered as before
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    trials = []
    for _ in range(3):
        trial = study.ask()
        trials.append((trial.suggest_float("lr", 0.01, 1.0, log=True),
                       trial.suggest_float("clip.val", 0.1, 50.0, log=True)))
        study.tell(trial, 0.0)
    dirs = sorted(p.name for p in sweep_dir.glob("[0-9]*_*"))
    assert dirs == [f"{n}_clip.val={c},grad_time=False,length=10,lr={lr},trainer.max_epochs={SHORT}"
                    for n, (lr, c) in enumerate(trials)]
    report = summary_rows(sweep_dir)
    assert sorted(report) == [0, 1, 2] and all(r["status"] == "completed" for r in report.values())
    # trial 0 kept as it was, trial 1 continued to an uninterrupted run's numbers
    assert ((job0 / "metrics.json").read_bytes(), (job0 / "metrics.json").stat().st_mtime_ns) == kept
    m1 = metrics(job1)
    assert (m1["requeues"], m1["requeue_signals"]) == (1, ["SIGINT"])
    lr, clip_val = trials[1]
    ref = reference(tmp_path, data_dir, 0, "length=10", "clip=norm", f"lr={lr}", f"clip.val={clip_val}",
                    epochs=SHORT)
    assert (job1 / "grad_norms.csv").read_bytes() == (ref / "grad_norms.csv").read_bytes()
    assert "[job 2]" in done.stdout


def test_a_preset_sweep_added_to_another_continues_each_as_it_was(tmp_path, data_dir):
    sweep_dir = tmp_path / "sweep"
    first = run_cli(["-m", "seed=0", f"data.dir={data_dir}", "trainer.max_epochs=1", "grad_time=false", "threads=1",
                     f"hydra.sweep.dir={sweep_dir}", *QUIET], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    # a preset that sweeps (weight_decay=0.0,0.01,0.1,1.0), added: jobs 1 to 4; stopped in job 1
    proc = start(["experiment=weight_decay", "sweep_add=true", "threads=1", f"hydra.sweep.dir={sweep_dir}"],
                 tmp_path, data_dir, SHORT)
    stop_at_first_epoch(proc, 1, tmp_path, "sweep")
    assert sorted(p.name.split("_")[0] for p in sweep_dir.glob("[0-9]*_*")) == ["0", "1"]
    job0 = next(sweep_dir.glob("0_*"))
    kept = results(job0)

    done = continue_sweep(sweep_dir, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = summary_rows(sweep_dir)
    assert sorted(report) == [0, 1, 2, 3, 4] and all(r["status"] == "completed" for r in report.values())
    assert [report[n]["weight_decay"] for n in range(1, 5)] == ["0.0", "0.01", "0.1", "1.0"]
    assert results(job0) == kept  # the first sweep's job: not run again
    job1 = next(sweep_dir.glob("1_*"))
    m1 = metrics(job1)
    assert (m1["requeues"], m1["requeue_signals"], m1["epochs"]) == (1, ["SIGINT"], SHORT)
    ref = reference(tmp_path, data_dir, 0, "experiment=explosion", "weight_decay=0.0", epochs=SHORT)  # its job 1
    assert (job1 / "grad_norms.csv").read_bytes() == (ref / "grad_norms.csv").read_bytes()
    # each sweep continued in turn, with its own job numbers; each config kept
    assert "[job 4]" in done.stdout and "[job 5]" not in done.stdout
    saved = sorted(p.name for p in sweep_dir.glob("multirun*.yaml"))
    assert saved == ["multirun.1.yaml", "multirun.2.yaml", "multirun.3.yaml", "multirun.yaml"]


def test_a_sweep_whose_multirun_yaml_contradicts_its_jobs_is_refused_before_anything_runs(tmp_path, data_dir):
    sweep_dir = tmp_path / "sweep"
    made = run_cli(["-m", "seed=0,1", f"data.dir={data_dir}", "trainer.max_epochs=1", "grad_time=false",
                    "threads=1", f"hydra.sweep.dir={sweep_dir}", *QUIET], tmp_path)
    assert made.returncode == 0, made.stderr[-3000:]
    (next(sweep_dir.glob("1_*")) / "metrics.json").unlink()  # job 1 is left to continue
    longer = continue_sweep(sweep_dir, tmp_path, "trainer.max_epochs=2")  # it names the jobs' dirs
    assert longer.returncode != 0 and longer.stderr.strip().splitlines() == [
        "error: trainer.max_epochs: cannot change when a sweep continues (its jobs are the sweep's, their "
        "dirs named by their settings); allowed with resume=SWEEP_DIR: hydra.* (its launcher's settings), "
        "data.dir, data.num_workers, threads, trainer.enable_progress_bar, verbose"]
    config = sweep_dir / "multirun.yaml"
    config.write_text(config.read_text().replace("- seed=0,1", "- seed=0,5"))  # by hand
    before = listing(sweep_dir)

    done = continue_sweep(sweep_dir, tmp_path)
    assert done.returncode != 0 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"error: resume={sweep_dir}: {config} gives job 1 seed=5, its record "
        f"{next(sweep_dir.glob('1_*')) / '.hydra' / 'overrides.yaml'} says seed=1 (multirun.yaml "
        "changed by hand?); nothing continued"]
    assert listing(sweep_dir) == before  # nothing created or changed

    # the sweep's config as it was, but a job's metrics.json says another seed than its overrides
    config.write_text(config.read_text().replace("- seed=0,5", "- seed=0,1"))
    job0 = next(sweep_dir.glob("0_*"))
    record = json.loads((job0 / "metrics.json").read_text())
    (job0 / "metrics.json").write_text(json.dumps({**record, "seed": 7}))
    before = listing(sweep_dir)
    done = continue_sweep(sweep_dir, tmp_path)
    assert done.returncode != 0 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"error: resume={sweep_dir}: {config} gives job 0 seed=0, its record {job0 / 'metrics.json'} says "
        "seed=7 (changed by hand?); nothing continued"]
    assert listing(sweep_dir) == before


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
    report = summary_rows(sweep_dir)
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
