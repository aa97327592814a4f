"""Real runs: through Hydra's compose API, and through the command line as a user types it."""

import gc
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from srn_lightning import console, train
from srn_lightning.data import read_split
from srn_lightning.module import SRNClassifier
from srn_lightning.record import COLUMNS, read_grad_norms
from srn_lightning.errors import RunFailed
from srn_lightning.train import run

from .conftest import QUIET, cli, child_env, run_cli


def tb_events(run_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_a_short_run_writes_every_artifact(make_cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory
    run_dir = tmp_path / "run"
    metrics = run(make_cfg("clip=norm", "trainer.max_epochs=3", "plot_steps=7"), run_dir)

    on_disk = json.loads((run_dir / "metrics.json").read_text())
    assert on_disk == metrics
    assert on_disk["status"] == "completed" and on_disk["steps"] == 15 and on_disk["epochs"] == 3
    assert {k: on_disk[k] for k in ("clip_mode", "clip_val", "length", "lr", "seed")} == {
        "clip_mode": "norm", "clip_val": 5.0, "length": 20, "lr": 0.2, "seed": 0}
    assert 0 <= on_disk["dev_best"] <= 1 and 0 <= on_disk["test_acc"] <= 1 and on_disk["fit_seconds"] > 0

    rows = read_grad_norms(run_dir / "grad_norms.csv")
    assert (run_dir / "grad_norms.csv").read_text().splitlines()[0] == ",".join(COLUMNS)
    assert rows["step"] == list(range(15))
    for n in ("W", "U", "b", "total"):
        assert on_disk[f"{n}_pre_max"] == pytest.approx(max(rows[f"{n}_pre"]))
        assert on_disk[f"{n}_pre_last"] == pytest.approx(rows[f"{n}_pre"][-1])

    for suffix in ("png", "pdf"):
        assert (run_dir / f"grad_norms.{suffix}").stat().st_size > 1000
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts and on_disk["best_checkpoint"] in ckpts
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2

    events = tb_events(run_dir)
    tags = events.Tags()
    for when in ("pre", "post"):
        for n in ("W", "U", "b", "total"):
            assert len(events.Scalars(f"grad_norm_{when}/{n}")) == 15
    w = [e.value for e in events.Scalars("grad_norm_pre/W")]
    assert w == pytest.approx(rows["W_pre"], rel=1e-6)
    for n in ("W", "U", "b", "total"):  # the views that TensorBoard's defaults cannot hide
        norms = np.array(rows[f"{n}_pre"])
        log10 = [e.value for e in events.Scalars(f"grad_norm_pre_log10/{n}")]
        assert log10 == pytest.approx(np.log10(np.maximum(norms, 1e-10)), rel=1e-6)
        peak = {e.step: e.value for e in events.Scalars(f"grad_norm_pre_peak/{n}")}
        running = np.maximum.accumulate(norms)
        rises = {0} | {s for s in range(1, 15) if running[s] > running[s - 1]}
        assert set(peak) == rises | {4, 9, 14}  # where the peak rises, and each epoch's last step
        assert [peak[s] for s in sorted(peak)] == pytest.approx(running[sorted(peak)], rel=1e-6)
    assert {"val/acc", "val/loss", "test/acc", "train/loss"} <= set(tags["scalars"])
    assert "grad_norms" in tags["images"]

    assert not (tmp_path / "lightning_logs").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_the_dashboard_views_show_a_one_step_spike_and_a_fall_to_zero(tmp_path):
    """The book's run in miniature: W's norm spikes at step 1 and is exactly 0 from step 3."""
    from types import SimpleNamespace

    from srn_lightning.callbacks import RowWriter

    rows = [[0, 0, 28.0], [1, 0, 1273.0], [2, 0, 0.005], [3, 0, 0.0], [4, 0, float("nan")], [5, 0, 1e-14],
            [6, 1, 2000.0], [7, 1, 3.0]]
    monitor = SimpleNamespace(columns=["step", "epoch", "W_pre"], rows=lambda start=0: rows[:2])
    writer = RowWriter(monitor, tmp_path / "norms.csv", {"W_pre": "w"}, log10_tags={"W_pre": "log"},
                       peak_tags={"W_pre": "peak"})
    writer.on_fit_start(None, None)  # a resumed run: steps 0 and 1 before its checkpoint
    shown = [writer.scalars(r) for r in rows[2:6]] + [writer.scalars(r, last=True) for r in rows[6:]]
    assert [v["log"] for v in shown if "log" in v] == pytest.approx([-2.30103, -10.0, -10.0, 3.30103, 0.4771213])
    assert "log" not in shown[2]  # NaN: no point, TensorBoard would drop it anyway
    # the peak: where it rises (1273 came before the checkpoint), and at the last row of a write
    assert [v.get("peak") for v in shown] == [None, None, None, None, 2000.0, 2000.0]


def test_test_accuracy_is_the_best_checkpoints(make_cfg, data_dir, tmp_path):
    run_dir = tmp_path / "run"
    metrics = run(make_cfg("clip=norm", "trainer.max_epochs=6"), run_dir)
    best = SRNClassifier.load_from_checkpoint(run_dir / "checkpoints" / metrics["best_checkpoint"])
    last = SRNClassifier.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt")

    def accuracy(module, split):
        x, y = read_split(data_dir / "20" / f"{split}.txt")
        with torch.no_grad():
            return (module(x).argmax(-1) == y).float().mean().item()

    assert metrics["test_acc"] == pytest.approx(accuracy(best, "test"))
    assert metrics["dev_best"] == pytest.approx(accuracy(best, "dev"))
    assert accuracy(last, "dev") <= metrics["dev_best"] + 1e-6


@pytest.mark.slow
def test_the_default_run_shows_the_books_explosion(make_cfg, tmp_path):
    cfg = make_cfg()  # the book's run: clip=none, length 20, lr 0.2, sum, 50 epochs
    assert (cfg.clip.mode, cfg.length, cfg.lr, cfg.reduction, cfg.trainer.max_epochs) == ("none", 20, 0.2, "sum", 50)
    metrics = run(cfg, tmp_path)
    w = read_grad_norms(tmp_path / "grad_norms.csv")["W_pre"]
    assert len(w) == 250
    assert max(w[:20]) > 100  # shoots up within the first steps ...
    assert max(w[-50:]) < 0.1 * max(w[:20]) and w[-1] < 1.0  # ... then dies: tanh saturated
    assert 0.05 <= metrics["test_acc"] <= 0.15  # near chance (19 classes, ~0.1 by class frequency)


@pytest.mark.slow
def test_clipping_keeps_the_gradients_alive(make_cfg, tmp_path):
    run(make_cfg("clip=norm_each"), tmp_path)
    w = read_grad_norms(tmp_path / "grad_norms.csv")["W_pre"]
    assert min(w[-50:]) > 0.1  # where the unclipped run had died, these still learn


def run_one_epoch(args, cwd, data_dir):
    proc = run_cli([*args, f"data.dir={data_dir}", "trainer.max_epochs=1", *QUIET], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("named,expected", [((), "QuietProfiler"), (("+trainer.profiler=simple",), "SimpleProfiler"),
                                            (("+trainer.profiler=null",), "PassThroughProfiler")])
def test_the_trainer_gets_the_profiler_the_config_names_else_one_that_records_nothing(
        make_cfg, tmp_path, named, expected):
    from lightning.pytorch import Callback

    seen = []

    class Sees(Callback):  # what Lightning itself reads while it calls a hook
        def on_train_batch_end(self, trainer, pl_module, *args):
            timed = any(action.startswith("[Callback]") and action.endswith("Sees.on_train_batch_end")
                        for action in getattr(trainer.profiler, "current_actions", {}))
            seen.append((pl_module._current_fx_name, timed))

    built = train.build(make_cfg("trainer.max_epochs=1", *named), tmp_path, callbacks=[Sees()])
    assert type(built.trainer.profiler).__name__ == expected
    built.trainer.fit(built.module, datamodule=built.datamodule)
    assert seen == [("on_train_batch_end", expected == "SimpleProfiler")] * 5  # only Simple keeps a record
    assert built.module._current_fx_name is None  # set back after each hook
    assert "_current_fx_name" not in dict(built.module.named_parameters()) | dict(built.module.named_buffers())


def test_exit_handler_is_registered_once(monkeypatch):
    registered = []
    monkeypatch.setattr(console.atexit, "register", registered.append)
    monkeypatch.setattr(console, "_exit_registered", False)
    console.exit_without_final_collection()
    console.exit_without_final_collection()
    assert registered == [gc.freeze]


def test_the_command_exits_without_a_final_collection_in_every_process(monkeypatch):
    from srn_lightning.train import command

    registered = []
    monkeypatch.setattr(console.atexit, "register", registered.append)
    monkeypatch.setattr(console, "_exit_registered", False)
    monkeypatch.setattr(command, "main", lambda: None)  # a sweep's launching process: no job of its own
    monkeypatch.setattr(command.sys, "argv", ["srn_lightning.train", "-m", "seed=0,1"])
    monkeypatch.setattr(console, "steady_streams", lambda: None)  # pytest's streams stay as they are
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # set by the command: put back after
    command.cli()
    assert registered == [gc.freeze]


@pytest.mark.slow
def test_runs_started_together_get_their_own_dirs(tmp_path):
    args = cli("--cfg", "all", "--resolve", "-p", "hydra.run.dir")
    procs = [subprocess.Popen(args, cwd=tmp_path, env=child_env(), stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    dirs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(d.startswith("outputs/runs/") and d.endswith("_clip=none_length=20_lr=0.2_seed=0") for d in dirs)
    assert dirs[0] != dirs[1]


def test_the_logger_is_closed_even_when_the_end_of_a_run_fails(make_cfg, tmp_path, monkeypatch):
    from lightning.pytorch.loggers import TensorBoardLogger

    from srn_lightning import plots

    statuses = []
    finalize = TensorBoardLogger.finalize
    monkeypatch.setattr(TensorBoardLogger, "finalize",
                        lambda self, status: (statuses.append(status), finalize(self, status)))

    def broken_plot(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(plots, "plot_grad_norms", broken_plot)
    with pytest.raises(RunFailed, match="failed during figures: OSError: disk full") as err:
        run(make_cfg("trainer.max_epochs=1"), tmp_path / "run")
    assert isinstance(err.value.__cause__, OSError)
    assert statuses[-1] == "failed"

    monkeypatch.undo()
    statuses.clear()
    monkeypatch.setattr(TensorBoardLogger, "finalize",
                        lambda self, status: (statuses.append(status), finalize(self, status)))
    run(make_cfg("trainer.max_epochs=1"), tmp_path / "run2")
    assert statuses[-1] == "success"


CHATTER = ("GPU available", "TPU available", "Tip:", "litlogger", "Restoring states")


@pytest.mark.slow
def test_a_run_ends_with_its_answer_and_keeps_lightnings_lines_in_its_log(tmp_path, data_dir):
    # no progress-bar override: the default, with the output captured (not a terminal), is no bar
    proc = run_cli(["clip=norm", f"data.dir={data_dir}", "trainer.max_epochs=2"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs" / "runs").glob("*/*")
    m = json.loads((run_dir / "metrics.json").read_text())
    rows = read_grad_norms(run_dir / "grad_norms.csv")
    shown = run_dir.relative_to(tmp_path)

    def peak(name):
        return rows["step"][rows[f"{name}_pre"].index(max(rows[f"{name}_pre"]))]

    expected = [
        f"completed after 2 epochs (10 steps, fit {m['fit_seconds']:.1f} s): dev best {m['dev_best']:.3f}, "
        f"test acc {m['test_acc']:.3f} ({m['best_checkpoint']})",
        f"pre-clip grad norm of W: peak {m['W_pre_max']:.4g} at step {peak('W')}, last {m['W_pre_last']:.4g}",
        f"                      U: peak {m['U_pre_max']:.4g} at step {peak('U')}, last {m['U_pre_last']:.4g}",
        f"                      b: peak {m['b_pre_max']:.4g} at step {peak('b')}, last {m['b_pre_last']:.4g}",
        f"run dir: {shown}",
        f"figure: {shown / 'grad_norms.png'}",
        f"dashboards: tensorboard --logdir {shown}",
    ]
    lines = proc.stdout.rstrip("\n").splitlines()
    assert [ln.split(" - ", 1)[1] for ln in lines[-len(expected):]] == expected, proc.stdout
    log = (run_dir / "train.log").read_text()
    assert all(line in log for line in expected)
    # quiet: none of Lightning's hardware lines, tips or bars on the console; they stay in train.log
    for text in CHATTER:
        assert text not in proc.stdout + proc.stderr, text
    assert "GPU available" in log and "Tip:" in log
    assert not any(s in proc.stdout + proc.stderr for s in ("\r", "it/s", "Epoch 1", "Testing"))
    # every artifact, and nothing beside outputs/ in the launch dir
    assert "clip=norm" in run_dir.name and "length=20" in run_dir.name
    for name in ("grad_norms.csv", "grad_norms.pdf", "grad_time.png", ".hydra/config.yaml"):
        assert (run_dir / name).exists(), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outputs"]
    # written after test, just before the process exits without its final garbage collection
    tags = tb_events(run_dir).Tags()
    assert {"grad_norms", "grad_time"} <= set(tags["images"])
    assert {"hparams/test_acc", "hparams/dev_best", "hparams/W_pre_max"} <= set(tags["scalars"])

    proc = run_cli(["clip=norm", f"data.dir={data_dir}", "trainer.max_epochs=1", "verbose=true"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "GPU available" in proc.stdout and "Tip:" in proc.stdout  # verbose: as Lightning prints them


@pytest.mark.slow
def test_a_run_that_hydra_moves_into_its_dir_reads_and_shows_paths_from_where_it_was_launched(tmp_path):
    proc = run_cli(["hydra.job.chdir=true", "trainer.max_epochs=1", "hydra.run.dir=runs/r", "grad_time=false",
                    "trainer.enable_progress_bar=false"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the data where the command was launched (data.dir is relative to it), none in the run dir
    assert sorted(p.name for p in (tmp_path / "data" / "20").iterdir()) == ["dev.txt", "test.txt", "train.txt"]
    assert not (tmp_path / "runs" / "r" / "data").exists()
    lines = [ln.split(" - ", 1)[1] for ln in proc.stdout.rstrip("\n").splitlines()[-3:]]
    assert lines == ["run dir: runs/r", "figure: runs/r/grad_norms.png", "dashboards: tensorboard --logdir runs/r"]
