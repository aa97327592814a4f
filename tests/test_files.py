"""Files others can read: everything the project writes gets the mode a plain open() gives under the
user's umask, atomic writes included (their temp files are created 0600)."""

import os
import stat
import subprocess

import pytest

from srn_lightning import files, plots

from .conftest import QUIET, child_env, cli

UMASKS = [0o022, 0o002, 0o077]  # the usual one, a group's, a private one


@pytest.fixture
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", UMASKS, indirect=True, ids=oct)
def test_atomic_writes_get_the_mode_of_a_plain_open(tmp_path, umask):
    assert files.current_umask() == umask
    files.write_atomic(tmp_path / "a.json", "{}\n")
    with open(tmp_path / "plain", "w"):
        pass
    plots.plot_grad_norms({"step": [0, 1], **{f"{n}_pre": [1.0, 2.0] for n in "WUb"}}, tmp_path / "fig")
    assert mode(tmp_path / "plain") == 0o666 & ~umask
    assert {p.name: mode(p) for p in tmp_path.iterdir()} == {
        "a.json": 0o666 & ~umask, "plain": 0o666 & ~umask, "fig.png": 0o666 & ~umask,
        "fig.pdf": 0o666 & ~umask}


@pytest.mark.parametrize("umask", UMASKS, indirect=True, ids=oct)
def test_the_locks_of_a_run_and_of_a_sweep_report_get_the_umasks_mode(tmp_path, umask):
    from srn_lightning import locks, report

    locks.hold(tmp_path)
    locks.release(tmp_path)
    with report._locked(tmp_path):
        pass
    assert {p.name: mode(p) for p in tmp_path.iterdir()} == {
        ".lock": 0o666 & ~umask, ".report.lock": 0o666 & ~umask}


@pytest.mark.slow
@pytest.mark.parametrize("mask", [0o002], ids=oct)
def test_every_file_a_sweep_writes_has_the_umasks_mode(tmp_path, mask):
    # a one-job sweep: the run's files, its locks, the sweep report and the data files, generated
    # here; under a group's umask, where a temp file's 0600 or a lock's 0644 would show (the other
    # umasks: the tests above)
    args = cli("-m", "clip=norm", "length=10", f"data.dir={tmp_path / 'data'}", "trainer.max_epochs=1",
               "threads=1", *QUIET)
    proc = subprocess.run(args, cwd=tmp_path, env=child_env(), capture_output=True, text=True,
                          timeout=300, preexec_fn=lambda: os.umask(mask))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    written = {str(p.relative_to(tmp_path)): mode(p) for p in tmp_path.rglob("*") if p.is_file()}
    names = {os.path.basename(p) for p in written}
    assert {"metrics.json", "grad_norms.csv", "grad_norms.png", "train.txt", "summary.csv",
            "summary.md", "sweep.png", "last.ckpt", ".lock", ".report.lock"} <= names
    assert {p: m for p, m in written.items() if m != 0o666 & ~mask} == {}
