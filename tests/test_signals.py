"""Every signal that ends a process leaves an `interrupted` record naming it, in any phase; none is
lost to a garbage-collector callback; a stop reaches inside a step of any length. Signals are sent
as the run logs something (tests/signals.py), or at a counted position of the model's passes."""

import gc
import json
import logging
import os
import signal
import subprocess
import sys

import pytest
import torch

from srn_lightning import interrupts
from srn_lightning.model import STOP_EVERY, SeqClassifier
from srn_lightning.train import run

from .conftest import QUIET, child_env
from .signals import SignalAt

SHORT = ["clip=norm", "trainer.max_epochs=1"]
PHASES = ["data", "fit", "test", "figures", "record"]
# every signal of the table, each in one of the phases (all phases covered, a run each)
CASES = [(sig, PHASES[i % len(PHASES)]) for i, sig in enumerate(interrupts.SIGNALS)]


@pytest.fixture
def signal_at():
    attached = []

    def attach(name, text, sig):
        logger = logging.getLogger(name)
        attached.append((logger, logger.level, logger.disabled, SignalAt(text, sig)))
        logger.addHandler(attached[-1][3])
        logger.setLevel(logging.INFO)
        logger.disabled = False  # a logging.config call by another test's tool may have disabled it

    yield attach
    for logger, level, disabled, handler in attached:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.disabled = disabled


def test_the_table_holds_every_catchable_signal_that_ends_a_process():
    # man 7 signal: the signals whose default action is to terminate (Term or Core) and that a
    # process can catch; SIGPIPE aside (Python ignores it: a console that goes away is console.py's)
    ends = {"SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGXCPU",
            "SIGXFSZ"}
    assert {s.name for s in interrupts.SIGNALS} == ends
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN


@pytest.mark.parametrize("sig,phase", [
    pytest.param(sig, phase, id=f"{sig.name}-{phase}",
                 marks=[] if sig == signal.SIGHUP else [pytest.mark.slow]) for sig, phase in CASES])
def test_every_signal_that_ends_a_process_leaves_an_interrupted_record(sig, phase, make_cfg, signal_at,
                                                                       tmp_path):
    signal_at("srn_lightning.interrupts", f"phase: {phase}", sig)
    with pytest.raises(SystemExit) as stop:
        run(make_cfg(*SHORT), tmp_path)
    assert f"{sig.name} during {phase}" in str(stop.value)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert (m["status"], m["phase"], m["signal"]) == ("interrupted", phase, sig.name)


def test_a_launchers_requeue_signal_stops_the_run_first_and_is_its_again_after(make_cfg, tmp_path):
    # submitit installs its USR2 handler (requeue) before the job runs: while the run runs, USR2 is
    # the run's (its record first; srn_lightning/cluster.py then hands it to submitit's handler)
    def launchers(signum, frame):
        pass

    old = signal.signal(signal.SIGUSR2, launchers)
    try:
        with interrupts.Phases():
            assert all(signal.getsignal(s) not in (launchers, signal.SIG_DFL) for s in interrupts.SIGNALS)
        assert signal.getsignal(signal.SIGUSR2) is launchers
    finally:
        signal.signal(signal.SIGUSR2, old)


def test_a_signal_that_lands_in_a_garbage_collector_callback_is_not_lost():
    def lands_in_gc(phase, info):
        if phase == "start" and not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGINT)
            sum(range(1000))  # bytecode in the callback: where Python runs the handler

    sent, looped = [], []
    with pytest.raises(interrupts.Interrupted) as stop, interrupts.Phases() as phases:
        phases.enter("figures")
        gc.callbacks.append(lands_in_gc)
        try:
            gc.collect()
        finally:
            gc.callbacks.remove(lands_in_gc)
        for _ in range(10**8):  # acted on here, right after the collection, at the handler's next
            pass              # chance (the loop takes seconds)
        looped.append(True)  # not reached
    assert sent and not looped and (stop.value.signal, stop.value.phase) == ("SIGINT", "figures")


class SignalAtPosition:
    """A stop point that sends `sig` at its `at`-th call, and counts the calls."""

    def __init__(self, at: int, sig=signal.SIGTERM) -> None:
        self.at, self.sig, self.calls = at, sig, 0

    def __call__(self) -> None:
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), self.sig)
        interrupts.stop_point()


@pytest.mark.parametrize("where", ["forward", "backward"])
def test_a_stop_reaches_inside_a_step(where):
    length = 500
    model = SeqClassifier()
    points = length // STOP_EVERY  # a stop point every STOP_EVERY positions, in each pass
    at = 10 if where == "forward" else points + 10  # the backward's hooks follow the forward's calls
    model.rnn_model.stop_point = stop = SignalAtPosition(at)
    digits = torch.randint(0, 10, (4, length))
    with pytest.raises(interrupts.Interrupted) as err, interrupts.Phases() as phases:
        phases.enter("fit")  # in the fit the handler only notes the signal: the stop point acts
        model(digits).sum().backward()
    assert err.value.signal == "SIGTERM"
    assert stop.calls == at  # stopped at the position the signal came in, not at the step's end
    assert model.rnn_model.U.grad is None  # the step's backward never finished


RUN_WITH_SIGNAL = """
import logging, signal, sys
from srn_lightning.train import command
from tests.signals import SignalAt
name, text, sig = sys.argv[1:4]
del sys.argv[1:4]
logging.getLogger(name).addHandler(SignalAt(text, signal.Signals[sig]))
logging.getLogger(name).setLevel(logging.INFO)
command.cli()
"""


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGXCPU])
def test_a_basic_sweep_hit_by_a_signal_records_it_and_rebuilds_its_report(sig, data_dir, tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", f"data.dir={data_dir}", f"hydra.sweep.dir={sweep}", "trainer.max_epochs=1",
            "lr=0.1,0.2", *QUIET]
    proc = subprocess.run([sys.executable, "-c", RUN_WITH_SIGNAL, "srn_lightning.interrupts",
                           "phase: test", sig.name, *args], cwd=tmp_path, env=child_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"interrupted ({sig.name} during test)" in proc.stderr
    m = json.loads(next(sweep.glob("0_*/metrics.json")).read_text())
    assert (m["status"], m["signal"]) == ("interrupted", sig.name)
    summary = (sweep / "summary.csv").read_text()
    assert "interrupted" in summary and (sweep / "sweep.png").exists()
