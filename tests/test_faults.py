"""Bad input, faults and reproducibility, through the real CLI and the real Trainer."""

import json
import math
import multiprocessing
import signal
import time
from pathlib import Path

import pytest
import torch

from srn_lightning import data
from srn_lightning.record import read_grad_norms
from srn_lightning.train import run

from .conftest import QUIET, compose_cfg, run_cli, start_cli

call = run_cli


def snapshot(root: Path) -> dict:
    """Every file (its size and time) and every dir under `root`: what a call may not create or touch."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A launch dir with a finished run's artifacts in outputs/, which no bad call may touch."""
    d = tmp_path_factory.mktemp("work")
    good = d / "outputs" / "runs" / "good"
    good.mkdir(parents=True)
    (good / "metrics.json").write_text('{"status": "completed"}\n')
    (d / "a_file").write_text("not a directory\n")
    return d


BAD = [  # (override, key the message must name, what it must say is allowed); a case per kind of
    # error: every rule's own words are tests/test_config.py's, without a process each
    ("length=abc", "length", ">= 3"),
    ("lr=-0.1", "lr", "> 0"),
    ("lr=nan", "lr", "finite"),
    ("clip=bogus", "clip", "none, norm, norm_each, value"),
    ("clip=norm clip.val=-1", "clip.val", "> 0"),
    ("lenght=20", "lenght", "did you mean length?"),
    ("reduction=mean_", "reduction", "sum or mean"),
    ("hydra.run.dir=a_file/run", "hydra.run.dir", "can be created and written"),
    ("data.dir=a_file/data", "data.dir", "can be created and written"),
    ("clip.val=1", "clip.val", "null with clip=none"),
    ("trainer.max_epochs=abc", "trainer.max_epochs", ">= 1"),
    ("+trainer.gradient_clip_val=1", "trainer.gradient_clip_val", "set by clip.val"),
    ("+trainer.accumulate_grad_batches=2", "trainer.accumulate_grad_batches", "per optimizer step"),
    ("+trainer.bogus_arg=1", "trainer.bogus_arg", "a Trainer argument"),
    ("hydra.run.dir=outputs/runs/good", "hydra.run.dir", "holds a run; continue it with resume="),
    ("-m hydra.sweep.dir=a_file/sweep", "hydra.sweep.dir", "can be created and written"),
    # what the record cannot represent: one process, one device, at least one step (the rest of
    # these rules: tests/test_exits.py, without a process each)
    ("trainer.devices=2", "trainer.devices", "the grad-norm record is per process"),
    ("+trainer.max_steps=0", "trainer.max_steps", ">= 1, or -1"),
    ("trainer.accelerator=gpu" if not torch.cuda.is_available() else "trainer.accelerator=tpu",
     "trainer.accelerator", "cpu, auto, or gpu (cuda)"),
    ("resume=", "resume=", "empty; give a run dir or a checkpoint"),
    ("resume=/nowhere/it's", "resume=/nowhere/it's", "no such run dir or checkpoint"),
]


@pytest.mark.slow
@pytest.mark.parametrize("override,key,allowed", BAD, ids=[b[0] for b in BAD])
def test_bad_config_is_one_line_before_any_work(workdir, override, key, allowed):
    before = snapshot(workdir)
    proc = call([*override.split(), *QUIET], workdir)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {key}") and allowed in lines[0], lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert snapshot(workdir) == before  # no run dir or data dir made, nothing overwritten


# --- data files ---------------------------------------------------------------------------------

CORRUPT = [  # (how to spoil line 2 of train.txt, what the message must say)
    (lambda ln: ln[: len(ln) // 2], "truncated"),
    (lambda ln: "x" + ln[1:], "token 'x' is not a digit"),
    (lambda ln: "0 " + ln, "21 digits, expected 20"),
    (lambda ln: ln.split("\t")[0] + "\t19\n", "label '19' is outside 0..18"),
]


@pytest.mark.parametrize("spoil,message", CORRUPT, ids=["truncated", "non-digit", "wrong-length", "label"])
def test_a_bad_data_file_names_file_and_line(tmp_path, spoil, message):
    data.ensure_files(tmp_path, 20)
    path = tmp_path / "20" / "train.txt"
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = spoil(lines[1])
    text = "".join(lines[:2]) if message == "truncated" else "".join(lines)
    path.write_text(text)
    with pytest.raises(data.DataFileError) as err:
        data.ensure_files(tmp_path, 20)
    assert str(err.value).startswith(f"{path}:2: ") and message in str(err.value)
    assert path.read_text() == text  # reported, not rewritten


def test_a_data_file_that_is_a_directory_is_reported(tmp_path):
    (tmp_path / "20" / "dev.txt").mkdir(parents=True)
    with pytest.raises(data.DataFileError, match=r"dev.txt: a directory, not a data file"):
        data.ensure_files(tmp_path, 20)
    with pytest.raises(data.DataFileError, match=r"dev.txt: a directory, not a data file"):
        data.read_split(tmp_path / "20" / "dev.txt")


def test_an_empty_split_is_reported(tmp_path):
    data.ensure_files(tmp_path, 20)
    (tmp_path / "20" / "dev.txt").write_text("")
    with pytest.raises(data.DataFileError, match=r"dev.txt: empty split"):
        data.ensure_files(tmp_path, 20)


def test_a_file_that_differs_from_the_book_is_reported_and_regenerated_on_request(tmp_path):
    data.ensure_files(tmp_path, 20)
    path = tmp_path / "20" / "test.txt"
    book = path.read_text()
    lines = book.splitlines(keepends=True)
    path.write_text("".join(lines[1:] + lines[:1]))  # well-formed, same examples, other order
    with pytest.raises(data.DataFileError, match="differs from the book's generator.*data.regenerate=true"):
        data.ensure_files(tmp_path, 20)
    data.ensure_files(tmp_path, 20, regenerate=True)
    assert path.read_text() == book


@pytest.mark.slow
def test_a_bad_data_file_through_the_cli(workdir, tmp_path):
    data.ensure_files(tmp_path, 20)
    path = tmp_path / "20" / "train.txt"
    path.write_text(path.read_text().replace("\t", "\t1", 1).replace("\t1", "\t99", 1))
    spoiled = path.read_text()
    proc = call([f"data.dir={tmp_path}", "trainer.max_epochs=1", f"hydra.run.dir={tmp_path}/run", *QUIET], workdir)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {path}:1: label")
    assert path.read_text() == spoiled
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "failed"


def _write_many(d, rounds):
    for _ in range(rounds):
        data.ensure_files(d, 20, regenerate=True)


@pytest.mark.slow
def test_parallel_writers_never_leave_a_partial_file(tmp_path):
    data.ensure_files(tmp_path, 20)
    expected = {s: (tmp_path / "20" / f"{s}.txt").read_text() for s in data.SPLITS}
    ctx = multiprocessing.get_context("fork")  # the writers start with the module already imported
    writers = [ctx.Process(target=_write_many, args=(tmp_path, 15)) for _ in range(4)]
    for w in writers:
        w.start()
    reads = 0
    while any(w.is_alive() for w in writers):  # read while they write: always a whole file
        for s in data.SPLITS:
            assert (tmp_path / "20" / f"{s}.txt").read_text() == expected[s]
            reads += 1
    for w in writers:
        w.join()
        assert w.exitcode == 0
    assert reads > 0
    assert sorted(p.name for p in (tmp_path / "20").iterdir()) == ["dev.txt", "test.txt", "train.txt"]


# --- divergence -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_divergence_is_a_result_not_a_crash(workdir, data_dir, tmp_path):
    # tanh bounds the hidden state, so even lr=100 stays finite here; lr=1e38 overflows at once
    run_dir = tmp_path / "run"
    proc = call([f"data.dir={data_dir}", "lr=1e38", f"hydra.run.dir={run_dir}", *QUIET], workdir)
    assert proc.returncode == 0, proc.stderr
    m = json.loads((run_dir / "metrics.json").read_text(), parse_constant=pytest.fail)  # strict JSON
    assert m["status"] == "diverged"
    step = m["diverged_step"]
    assert step <= 1 and f"NaN/Inf at step {step}" in proc.stdout + proc.stderr
    rows = read_grad_norms(run_dir / "grad_norms.csv")
    assert rows["step"] == list(range(step + 1))  # stopped at once
    assert (run_dir / "grad_norms.png").exists()


@pytest.mark.slow
def test_divergence_keeps_the_last_good_weights_and_tests_the_best(make_cfg, tmp_path):
    # weight decay of 1000 with lr 0.2 multiplies the weights by -199 a step: Inf within epochs
    metrics = run(make_cfg("weight_decay=1000", "trainer.max_epochs=20"), tmp_path)
    assert metrics["status"] == "diverged" and metrics["diverged_step"] > 5
    rows = read_grad_norms(tmp_path / "grad_norms.csv")
    assert rows["step"][-1] == metrics["diverged_step"]
    # the grads of that step were finite: the decayed weights overflowed, and that is caught too
    assert all(map(math.isfinite, [rows[f"{n}_pre"][-1] for n in ("W", "U", "b", "total")]))
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] <= metrics["diverged_step"]  # nothing saved from that step on
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values())
    assert metrics["test_acc"] is not None and metrics["best_checkpoint"]


# --- interrupt and resume -------------------------------------------------------------------------

RESUMED = ["clip=norm", "trainer.max_epochs=12"]


@pytest.fixture(scope="module")
def straight(data_dir, tmp_path_factory):
    """The uninterrupted run that an interrupted and resumed one must equal."""
    cfg = compose_cfg(f"data.dir={data_dir}", *QUIET, *RESUMED)
    run_dir = tmp_path_factory.mktemp("straight")
    metrics = run(cfg, run_dir)
    metrics.pop("fit_seconds")
    return metrics, (run_dir / "grad_norms.csv").read_bytes()


@pytest.mark.slow
# SIGTERM, as Slurm sends it; SIGINT in every phase is tests/test_exits.py's
@pytest.mark.parametrize("sig", [signal.SIGTERM], ids=["SIGTERM"])
def test_interrupt_then_resume_equals_an_uninterrupted_run(straight, data_dir, tmp_path, sig):
    overrides = RESUMED
    run_dir = tmp_path / "run"
    proc = start_cli([f"data.dir={data_dir}", f"hydra.run.dir={run_dir}", *overrides, *QUIET], tmp_path)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["status"] == "interrupted" and 1 <= m["epochs"] < 12, m
    assert f"resume={run_dir}" in err
    assert torch.load(last, weights_only=True)["epoch"] == m["epochs"] - 1  # the last completed one

    before = snapshot(run_dir)
    proc = call([f"resume={run_dir}", "lr=0.1"], tmp_path)  # another lr would be another experiment
    assert proc.returncode != 0 and proc.stderr.strip() == (
        "error: lr: cannot change on resume (the checkpoint was trained with the run's own config); "
        "allowed with resume=: data.dir, data.num_workers, plot_steps, trainer.enable_progress_bar, "
        "trainer.max_epochs, verbose")
    assert snapshot(run_dir) == before

    proc = run_cli([f"resume={run_dir}", *QUIET], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    resumed = json.loads((run_dir / "metrics.json").read_text())
    resumed.pop("fit_seconds")
    assert resumed == straight[0]
    assert (run_dir / "grad_norms.csv").read_bytes() == straight[1]


@pytest.mark.slow
def test_resume_errors_are_one_line_and_touch_nothing(workdir, tmp_path, make_cfg):
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("- clip=norm\n")
    (run_dir / "metrics.json").write_text('{"status": "interrupted"}\n')
    cases = [
        (tmp_path / "nowhere", "no such run dir or checkpoint"),
        (tmp_path, "is not a run dir"),
        (run_dir, "no checkpoint at"),
    ]
    (run_dir / "checkpoints").mkdir()
    corrupt = run_dir / "checkpoints" / "corrupt.ckpt"
    corrupt.write_bytes(b"not a checkpoint")
    cases.append((corrupt, "is not a readable checkpoint"))
    # a checkpoint that would run code when unpickled: weights_only refuses it
    unsafe = run_dir / "checkpoints" / "unsafe.ckpt"
    torch.save({"state_dict": {}, "loops": {}, "payload": Path("x")}, unsafe)
    cases.append((unsafe, "is not a readable checkpoint"))
    before = snapshot(tmp_path)
    for target, message in cases:
        proc = call([f"resume={target}"], workdir)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode != 0 and len(lines) == 1 and message in lines[0], proc.stderr
        assert lines[0].startswith(f"error: resume={target}")
    assert snapshot(tmp_path) == before


# --- determinism ----------------------------------------------------------------------------------

def test_same_seed_same_numbers_other_seed_other_numbers(make_cfg, tmp_path):
    results = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        m = run(make_cfg("clip=value", "trainer.max_epochs=1", f"seed={seed}"), tmp_path / name)
        m.pop("fit_seconds")
        results[name] = (m, (tmp_path / name / "grad_norms.csv").read_bytes())
    assert results["a"] == results["b"]
    assert results["a"][1] != results["c"][1]
    assert results["a"][0]["W_pre_max"] != results["c"][0]["W_pre_max"]
