"""Every exit keeps its record, one writer per run dir and sweep dir, and resume trusts nothing it
reads. Signals are sent when the run logs that it enters a phase, never after a sleep."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from srn_lightning import config, interrupts, locks, preflight, record, report, report_jobs
from srn_lightning.callbacks import GradNormMonitor, RowWriter
from srn_lightning.files import UnsafePathError, open_nofollow
from srn_lightning.resume import ResumeError, check_checkpoint, quote, resolve_resume, resume_argv
from srn_lightning.module import module_from_config
from srn_lightning.resume import run_config
from srn_lightning.train import run

from .conftest import QUIET, child_env, compose_cfg, run_cli, start_cli
from .signals import SignalAt

SHORT = ["clip=norm", "trainer.max_epochs=1"]


def without_timing(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "fit_seconds"}


@pytest.fixture(scope="module")
def straight(data_dir, tmp_path_factory):
    """The uninterrupted run that an interrupted and resumed one must equal: (metrics, CSV bytes)."""
    run_dir = tmp_path_factory.mktemp("straight")
    metrics = run(compose_cfg(f"data.dir={data_dir}", *QUIET, *SHORT), run_dir)
    return without_timing(metrics), (run_dir / "grad_norms.csv").read_bytes(), run_dir


@pytest.fixture
def signal_at():
    """signal_at(logger, text, sig): SignalAt on that logger, for this test."""
    attached = []

    def attach(name, text, sig):
        logger = logging.getLogger(name)
        attached.append((logger, logger.level, SignalAt(text, sig)))
        logger.addHandler(attached[-1][2])
        logger.setLevel(logging.INFO)

    yield attach
    for logger, level, handler in attached:
        logger.removeHandler(handler)
        logger.setLevel(level)


# (phase, signal, a second signal sent as the run logs that it stops, or None)
PHASES = [("data", signal.SIGINT, None), ("fit", signal.SIGTERM, None),
          ("test", signal.SIGTERM, signal.SIGTERM), ("figures", signal.SIGINT, signal.SIGINT),
          ("record", signal.SIGTERM, signal.SIGINT)]


@pytest.mark.parametrize("phase,sig,second", [  # one quick case; the others with the slow tests
    pytest.param(*p, id=p[0], marks=[] if p[0] == "test" else [pytest.mark.slow]) for p in PHASES])
def test_a_signal_in_any_phase_leaves_an_interrupted_record_and_resume_finishes_it(
        phase, sig, second, straight, make_cfg, signal_at, tmp_path):
    signal_at("srn_lightning.interrupts", f"phase: {phase}", sig)
    signal_at("srn_lightning.train", "interrupted by", second)
    with pytest.raises(SystemExit) as stop:  # non-zero: a message, not a code of 0
        run(make_cfg(*SHORT), tmp_path)
    assert f"{sig.name} during {phase}" in str(stop.value)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert (m["status"], m["phase"], m["signal"]) == ("interrupted", phase, sig.name)
    assert f"resume={tmp_path}" in m["resume"]

    last = tmp_path / "checkpoints" / "last.ckpt"  # none when stopped before the first epoch's end
    resumed = run(make_cfg(*SHORT, f"resume={last if last.exists() else tmp_path}"), tmp_path)
    assert without_timing(resumed) == straight[0]
    assert (tmp_path / "grad_norms.csv").read_bytes() == straight[1]


def test_a_signal_while_the_record_is_written_waits_for_the_whole_file(tmp_path):
    written = False
    with pytest.raises(interrupts.Interrupted) as stop, interrupts.Phases() as phases:
        phases.enter("record")
        with interrupts.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            record.write_metrics(tmp_path, {"status": "completed"})
            written = True
    assert (written, stop.value.phase, stop.value.signal) == (True, "record", "SIGTERM")
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"status": "completed"}


def test_max_steps_records_the_epochs_the_checkpoint_completed(make_cfg, tmp_path):
    m = run(make_cfg("+trainer.max_steps=7"), tmp_path)  # 5 steps an epoch: the 2nd is cut short
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert (m["epochs"], m["steps"], last["global_step"]) == (1, 7, 7)
    assert len(record.read_grad_norms(tmp_path / "grad_norms.csv")["step"]) == 7


# --- resume trusts nothing it reads ---------------------------------------------------------------

@pytest.fixture
def run_dir(straight, tmp_path):
    """A copy of the straight run's dir, with the overrides it would have been given on the CLI."""
    import shutil

    d = tmp_path / "run"
    shutil.copytree(straight[2], d)
    (d / ".hydra").mkdir()
    (d / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in SHORT))
    return d


EVIL = "{_target_:builtins.open,file:EVIL,mode:w}"
CRAFTED = [
    f"hydra.callbacks.evil={EVIL}",
    f"+hydra.callbacks.evil={EVIL}",
    "hydra.job_logging.handlers.file.filename=EVIL",
    f"clip@hydra.callbacks.evil={EVIL}",
    "~lr",
    "++lr=0.3",
    "lr=0.1,0.2",
    "+foo=1",
    "not an override ===",
]


@pytest.mark.parametrize("crafted", CRAFTED)
def test_resume_replays_only_the_project_s_own_keys(run_dir, tmp_path, crafted):
    evil = tmp_path / "evil"
    overrides = run_dir / ".hydra" / "overrides.yaml"
    overrides.write_text(overrides.read_text() + f"- {crafted.replace('EVIL', str(evil))!r}\n")
    with pytest.raises(ResumeError, match="overrides.yaml: .*(not replayed on resume|not an override)"):
        resume_argv([f"resume={run_dir}"])


@pytest.mark.slow
def test_a_crafted_callback_in_overrides_yaml_creates_no_file(run_dir, tmp_path):
    evil = tmp_path / "evil"
    with (run_dir / ".hydra" / "overrides.yaml").open("a") as f:
        f.write(f"- hydra.callbacks.evil={EVIL.replace('EVIL', str(evil))}\n")
    proc = run_cli([f"resume={run_dir}"], tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1 and "not replayed on resume" in lines[0], proc.stderr
    assert not evil.exists()


def test_an_overrides_file_that_is_not_yaml_is_one_line(run_dir):
    (run_dir / ".hydra" / "overrides.yaml").write_bytes(b"\xff\xfe- lr=1\n")
    with pytest.raises(ResumeError, match="overrides.yaml: UnicodeDecodeError"):
        resume_argv([f"resume={run_dir}"])


@pytest.mark.parametrize("content,message", [
    ("- clip=norm\n- 'data.dir=${oc.env:HOME}/planted'\n", "holds an interpolation ('${')"),
    ("- &a [x, x]\n- &b [*a, *a]\n- &c [*b, *b]\n", "aliases are not allowed"),  # a YAML alias bomb's head
    ("- lr=0.1\n" * 300, "not a YAML list of at most 256 overrides"),
    ("- lr=0.1\n" * 10_000, "larger than 64 KiB"),
    ("[" * 20_000 + "]" * 20_000, "nested too deep"),
])
def test_resume_replays_plain_bounded_overrides_only(run_dir, content, message):
    (run_dir / ".hydra" / "overrides.yaml").write_text(content)
    with pytest.raises(ResumeError) as err:
        resume_argv([f"resume={run_dir}"])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_run_dir_of_a_preset_sweep_resumes_as_one_run(run_dir):
    (run_dir / ".hydra" / "overrides.yaml").write_text("- experiment=weight_decay\n- weight_decay=0.1\n")
    argv = resume_argv([f"resume={run_dir}"])
    from hydra import compose, initialize_config_dir

    from srn_lightning.config import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[a for a in argv if not a.startswith(("resume=", "hydra.run"))],
                      return_hydra_config=True)
    assert str(cfg.hydra.mode) == "RunMode.RUN" and cfg.weight_decay == 0.1  # the job, not its sweep


def test_resume_refuses_a_run_dir_with_a_symlink_and_writes_nothing_through_one(run_dir, tmp_path):
    target = tmp_path / "elsewhere.txt"
    target.write_text("someone else's file\n")
    (run_dir / "grad_norms.csv").unlink()
    (run_dir / "grad_norms.csv").symlink_to(target)
    with pytest.raises(ResumeError, match="grad_norms.csv is a symbolic link"):
        resolve_resume(run_dir)
    with pytest.raises(UnsafePathError, match="a symbolic link"):
        open_nofollow(run_dir / "grad_norms.csv", "w")
    writer = RowWriter(GradNormMonitor({}), run_dir / "grad_norms.csv", {})
    with pytest.raises(UnsafePathError):
        writer.on_fit_start(None, None)
    assert target.read_text() == "someone else's file\n"


def test_a_checkpoint_of_another_run_is_refused(straight, data_dir):
    ckpt = straight[2] / "checkpoints" / "last.ckpt"
    for overrides, message in [
        (["model.hidden_size=16"], r"weights do not fit this run's model \(model.linear.weight"),
        (["length=10"], "trained with length=20, this run has length=10"),
        (["lr=0.1"], "trained with lr=0.2, this run has lr=0.1"),
    ]:
        cfg = compose_cfg(f"data.dir={data_dir}", *SHORT, *overrides)
        with pytest.raises(ResumeError, match=message):
            check_checkpoint(ckpt, module_from_config(cfg), run_config(cfg), straight[2], cfg)


def _rows(state, name="GradNormMonitor"):
    return state["callbacks"][name]["rows"]


def _set_rows(state, rows, name="GradNormMonitor"):
    state["callbacks"][name]["rows"] = rows


def _narrow(state):
    _set_rows(state, _rows(state)[:, :-1])


def _nan(state):
    _rows(state)[2, 4] = float("nan")


def _repeat(state):
    _rows(state)[3, 0] = 2.0


def _lr(state):
    state["optimizer_states"][0]["param_groups"][0]["lr"] = 50.0


def _generator(state):
    state["DigitSumDataModule"]["shuffle_generator"] = torch.zeros(10, dtype=torch.uint8)


def _epoch(state):
    state["epoch"] = 3


def _later(state):  # the state of a run two epochs in, resumed with trainer.max_epochs=1
    state["epoch"], state["global_step"] = 1, 10


SPOILED_STATES = [  # (spoil, overrides, the refusal's words)
    (_narrow, [], "GradNormMonitor rows are not this run's 11 columns"),
    (lambda s: _set_rows(s, _rows(s)[:3]), [], "GradNormMonitor rows are not one for each of the 5 steps"),
    (_repeat, [], "GradNormMonitor rows are not one for each of the 5 steps"),
    (_nan, [], "GradNormMonitor rows hold a non-finite value"),
    (lambda s: _rows(s, "GradFlowMonitor").__setitem__((1, 0), float("nan")), [],
     "GradFlowMonitor rows are not one for each of the 5 steps"),
    (lambda s: _rows(s, "GradFlowMonitor").__setitem__((1, 0), float("inf")), [],
     "GradFlowMonitor rows are not one for each of the 5 steps"),
    (lambda s: _rows(s, "GradFlowMonitor").__setitem__((1, 5), float("inf")), [],
     "GradFlowMonitor rows hold a non-finite value"),
    (_lr, [], "its optimizer's lr is 50.0, this run's 0.2"),
    (_generator, [], "its shuffling generator state is not one"),
    (_epoch, [], "its epoch 3 and step 5 are no epoch's end at 5 steps an epoch"),
    (_later, [], "trainer.max_epochs=1: the run has trained 2 epochs; resume with trainer.max_epochs >= 2"),
    (lambda s: None, ["trainer.check_val_every_n_epoch=2"], "validates other than once at every epoch's end"),
    (lambda s: None, ["+trainer.val_check_interval=0.5"], "validates other than once at every epoch's end"),
]


@pytest.mark.parametrize("spoil,overrides,message", SPOILED_STATES, ids=[
    "narrow-rows", "truncated-rows", "repeated-step", "nan-row", "nan-flow-step", "inf-flow-step", "inf-flow-row", "optimizer-lr",
    "generator", "epoch", "max-epochs-below-trained", "val-every-2", "val-mid-epoch"])
def test_resume_checks_every_piece_of_state_it_restores(straight, data_dir, spoil, overrides, message):
    run_dir = straight[2]
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    spoil(state)
    ckpt = run_dir / "checkpoints" / "spoiled.ckpt"
    torch.save(state, ckpt)
    try:
        cfg = compose_cfg(f"data.dir={data_dir}", *SHORT, *overrides)
        with pytest.raises(ResumeError) as err:
            check_checkpoint(ckpt, module_from_config(cfg), run_config(cfg), run_dir, cfg)
    finally:
        ckpt.unlink()
    assert message in str(err.value) and "\n" not in str(err.value)
    cfg = compose_cfg(f"data.dir={data_dir}", *SHORT)  # the untouched checkpoint is this run's
    check_checkpoint(run_dir / "checkpoints" / "last.ckpt", module_from_config(cfg), run_config(cfg), run_dir, cfg)


def test_the_checkpoint_of_a_run_that_samples_its_flow_is_its_own(data_dir, tmp_path):
    cfg = compose_cfg(f"data.dir={data_dir}", *QUIET, *SHORT, "record_every=2")
    run(cfg, tmp_path)  # 5 steps: the flow's rows are those of steps 0, 2, 4
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert _rows(state, "GradFlowMonitor")[:, 0].tolist() == [0, 2, 4]
    more = compose_cfg(f"data.dir={data_dir}", *QUIET, "clip=norm", "trainer.max_epochs=2", "record_every=2")
    check_checkpoint(tmp_path / "checkpoints" / "last.ckpt", module_from_config(more), run_config(more), tmp_path, more)
    other = compose_cfg(f"data.dir={data_dir}", *QUIET, "clip=norm", "trainer.max_epochs=2", "record_every=3")
    with pytest.raises(ResumeError) as err:  # a run whose preset now samples otherwise: the way back
        check_checkpoint(tmp_path / "checkpoints" / "last.ckpt", module_from_config(other), run_config(other),
                         tmp_path, other)
    assert str(err.value).endswith("its GradFlowMonitor rows were taken every 2 steps; resume with record_every=2")


def test_a_checkpoint_naming_files_of_another_dir_is_refused(straight, run_dir, data_dir):
    cfg = compose_cfg(f"data.dir={data_dir}", *SHORT)
    with pytest.raises(ResumeError, match=f"names {straight[2]}.*outside {run_dir}.*moved or copied"):
        check_checkpoint(run_dir / "checkpoints" / "last.ckpt", module_from_config(cfg), run_config(cfg), run_dir, cfg)


def test_a_checkpoint_without_the_grad_norm_rows_is_refused(run_dir):
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)
    del state["callbacks"]["GradNormMonitor"]
    torch.save(state, ckpt)
    with pytest.raises(ResumeError, match="holds no grad-norm rows.*start the run afresh"):
        resolve_resume(run_dir)


@pytest.mark.parametrize("spoil", ["half a row", "deleted"])
def test_resume_rewrites_the_csv_from_the_checkpoint_whatever_is_on_disk(straight, make_cfg, tmp_path, spoil):
    run_dir = tmp_path  # run here, not copied: the checkpoints remember their dir
    run(make_cfg(*SHORT), run_dir)
    csv = run_dir / "grad_norms.csv"
    if spoil == "deleted":
        csv.unlink()
    else:
        csv.write_bytes(csv.read_bytes()[:-30])
    resumed = run(make_cfg(*SHORT, f"resume={run_dir / 'checkpoints' / 'last.ckpt'}"), run_dir)
    assert without_timing(resumed) == straight[0] and csv.read_bytes() == straight[1]


@pytest.mark.slow
def test_a_checkpoint_that_does_not_fit_the_run_is_one_line_and_touches_nothing(run_dir, tmp_path):
    with (run_dir / ".hydra" / "overrides.yaml").open("a") as f:
        f.write("- model.hidden_size=16\n")
    before = (run_dir / "metrics.json").read_bytes()
    proc = run_cli([f"resume={run_dir}"], tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1 and "Traceback" not in proc.stdout, proc.stderr
    assert lines[0].startswith("error: resume=") and "weights do not fit this run's model" in lines[0]
    assert (run_dir / "metrics.json").read_bytes() == before


@pytest.mark.parametrize("path", ["/tmp/it's here/run", "/tmp/a \\ b\\", "/tmp/ü/${oc.env:HOME}/x", '/t/"q"'])
def test_a_path_is_quoted_for_hydra_and_read_back_exactly(path):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    value = OverridesParser.create().parse_override(f"hydra.run.dir={quote(path)}").value()
    assert OmegaConf.create({"p": value}).p == path


def test_a_run_dir_whose_path_hydra_would_interpolate_is_one_line(run_dir, tmp_path):
    odd = run_dir.rename(tmp_path / "a ${x} run")
    with pytest.raises(ResumeError, match=r"holds '\$\{', which Hydra would read as an interpolation"):
        resume_argv([f"resume={odd}"])


@pytest.mark.slow
def test_a_run_dir_with_quotes_spaces_and_unicode_resumes(make_cfg, tmp_path):
    run_dir = tmp_path / "it's a \"ü\" run\\"
    run(make_cfg(*SHORT), run_dir)
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in SHORT))
    proc = run_cli([f"resume={run_dir}", "trainer.max_epochs=2", *QUIET], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert (m["status"], m["epochs"]) == ("completed", 2)


# --- one writer per dir ---------------------------------------------------------------------------

def test_a_dir_is_held_by_one_process_and_a_dead_holder_s_lock_is_gone(tmp_path):
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    ready, done = ctx.Event(), ctx.Event()

    def holder():
        locks.hold(tmp_path)
        ready.set()
        done.wait(30)

    proc = ctx.Process(target=holder)
    proc.start()
    assert ready.wait(30)
    with pytest.raises(locks.InUseError, match=f"in use by process {proc.pid}"):
        locks.check_free(tmp_path)
    with pytest.raises(locks.InUseError, match=f"in use by process {proc.pid}"):
        locks.hold(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)  # no clean-up: the kernel drops its lock
    proc.join()
    locks.hold(tmp_path)
    locks.release(tmp_path)


def wait_for_line(path: Path, text: str, proc, timeout: float = 120) -> None:
    """Until the run's log at `path` has a line with `text` (the run is there), or it has ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.01)
    raise AssertionError(f"{text!r} never logged in {path}; exit code {proc.returncode}")


@pytest.mark.slow
def test_a_second_writer_is_refused_and_a_killed_run_resumes(data_dir, tmp_path):
    run_dir = tmp_path / "run"
    args = [f"data.dir={data_dir}", f"hydra.run.dir={run_dir}", "trainer.max_epochs=1000", *QUIET]
    with open(tmp_path / "out.txt", "w") as out:
        first = start_cli(args, tmp_path, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_line(run_dir / "train.log", "phase: fit", first)
        saved = {p.name: p.read_bytes() for p in (run_dir / ".hydra").iterdir()}
        for second in ([f"resume={run_dir}"], [f"hydra.run.dir={run_dir}", f"data.dir={data_dir}"]):
            proc = run_cli(second, tmp_path)
            lines = proc.stderr.strip().splitlines()
            assert proc.returncode != 0 and len(lines) == 1, proc.stderr
            assert lines[0] == (f"error: {run_dir}: in use by process {first.pid} (one process at a time "
                                "writes a run or sweep dir); wait for it to end, or choose another dir")
        assert {p.name: p.read_bytes() for p in (run_dir / ".hydra").iterdir()} == saved
        while not (run_dir / "checkpoints" / "last.ckpt").exists():
            assert first.poll() is None
            time.sleep(0.01)
    finally:
        first.kill()  # SIGKILL: no record, and its lock dies with it
        first.wait()
    assert not (run_dir / "metrics.json").exists()
    epochs = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] + 2
    proc = run_cli([f"resume={run_dir}", f"trainer.max_epochs={epochs}", *QUIET], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert (m["status"], m["epochs"], m["steps"]) == ("completed", epochs, 5 * epochs)
    assert record.read_grad_norms(run_dir / "grad_norms.csv")["step"] == list(range(5 * epochs))


# The CLI's entry point (`train.command.cli`, what `python -m srn_lightning.train` runs) with two SignalAt
# handlers: SIGINT as the run logs that it enters the figures phase, and again as it logs that it
# stops. The signals land where the log says, however fast the machine.
TWO_SIGNALS = """
import logging, signal
from srn_lightning.train import command
from tests.signals import SignalAt
for name, text in (("srn_lightning.interrupts", "phase: figures"), ("srn_lightning.train", "interrupted by")):
    logging.getLogger(name).addHandler(SignalAt(text, signal.SIGINT))
    logging.getLogger(name).setLevel(logging.INFO)
command.cli()
"""


@pytest.mark.slow
def test_two_signals_in_the_figures_phase_through_the_cli(data_dir, tmp_path):
    run_dir = tmp_path / "run"
    args = [f"data.dir={data_dir}", f"hydra.run.dir={run_dir}", *SHORT, *QUIET]
    proc = subprocess.run([sys.executable, "-c", TWO_SIGNALS, *args], cwd=tmp_path, env=child_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert "SIGINT: already stopping" in (run_dir / "train.log").read_text()  # the second one
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "interrupted (SIGINT during figures) after 1 completed epochs")
    m = json.loads((run_dir / "metrics.json").read_text())
    assert (m["status"], m["phase"], m["signal"]) == ("interrupted", "figures", "SIGINT")


@pytest.mark.slow
def test_a_sweep_dir_that_holds_jobs_is_refused_unless_added_to(data_dir, tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", f"data.dir={data_dir}", "trainer.max_epochs=1", f"hydra.sweep.dir={sweep}", *QUIET]
    assert run_cli([*args, "lr=0.1"], tmp_path).returncode == 0
    proc = run_cli([*args, "lr=0.2"], tmp_path)
    assert proc.returncode != 0 and proc.stderr.strip() == (
        f"error: hydra.sweep.dir={sweep}: not allowed; hydra.sweep.dir must be a new directory: this "
        "one holds the 1 jobs of another sweep; add to them with sweep_add=true")
    proc = run_cli([*args, "lr=0.2,0.3", "sweep_add=true"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in sweep.glob("*_lr=*")) == [
        "0_lr=0.1,trainer.max_epochs=1", "1_lr=0.2,trainer.max_epochs=1", "2_lr=0.3,trainer.max_epochs=1"]
    assert [r["job"] for r in rows_of(sweep)] == [0, 1, 2]


def rows_of(sweep_dir: Path) -> list[dict]:
    return [report_jobs.read_job(num, d, sweep_dir) for num, d in report_jobs.find_jobs(sweep_dir)]


# --- names, the report, what the record cannot represent --------------------------------------------

def test_a_job_dir_name_too_long_for_a_file_system_is_shortened_uniquely():
    def name(num, overrides):
        cfg = OmegaConf.create({"hydra": {"job": {"num": num, "override_dirname": overrides}},
                                "n": "${job_dir_name:}"})
        return cfg.n

    assert name(3, "lr=0.1") == "3_lr=0.1"
    long_a, long_b = name(0, "x=" + "ü" * 200 + ",a=1"), name(0, "x=" + "ü" * 200 + ",a=2")
    assert long_a != long_b and long_a.startswith("0_x=üü")
    assert max(len(long_a.encode()), len(long_b.encode())) <= 255


def test_the_report_makes_a_row_of_a_job_it_cannot_read(straight, tmp_path):
    import shutil

    good = tmp_path / "0_good"
    shutil.copytree(straight[2], good)
    (good / ".hydra").mkdir()
    (good / ".hydra" / "overrides.yaml").write_text("- clip=norm\n")
    for name, overrides, metrics in [("1_bytes", b"\xff\xfe- lr=1\n", None),
                                     ("2_empty", b"- lr=0.3\n", "{}"),
                                     ("3_types", b"- lr=0.4\n", '{"status": "completed", "length": "x"}')]:
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "overrides.yaml").write_bytes(overrides)
        if metrics:
            (tmp_path / name / "metrics.json").write_text(metrics)
    report.write_report(tmp_path)
    rows = {r["dir"]: r for r in rows_of(tmp_path)}
    assert rows["0_good"]["status"] == "completed"
    assert rows["1_bytes"]["status"] == "unreadable" and "overrides.yaml" in rows["1_bytes"]["error"]
    assert rows["2_empty"]["error"] == "unreadable metrics.json: not a JSON object with a status"
    assert rows["3_types"]["error"] == "unreadable metrics.json: length is 'x', not a whole number"


@pytest.mark.parametrize("key,value", [("trainer.devices", 2), ("trainer.num_nodes", 2),
                                       ("trainer.max_steps", 0), ("trainer.limit_train_batches", 0)])
def test_what_the_record_cannot_represent_is_refused(key, value):
    cfg = compose_cfg()
    OmegaConf.update(cfg, key, value, force_add=True)
    with pytest.raises(config.ConfigError, match=f"^{key}={value}: not allowed"):
        config.validate(cfg)


def test_an_accelerator_the_machine_lacks_is_one_line():
    with pytest.raises(config.ConfigError, match="trainer.accelerator=tpu: not allowed"):
        preflight.check_accelerator("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(config.ConfigError, match="this one has none"):
            preflight.check_accelerator("gpu")
