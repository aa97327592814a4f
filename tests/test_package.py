"""The package is whole: a wheel carries the Hydra config, so an install that is not this checkout
runs the book's experiment from any directory."""

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from .conftest import QUIET, REPO


@pytest.mark.slow
def test_a_wheel_installed_in_a_fresh_venv_runs_the_books_run_from_another_dir(tmp_path, data_dir):
    # the wheel is built from a copy: pip builds in the source tree, and the checkout stays clean
    src = tmp_path / "src"
    for package in ("srn_lightning", "hydra_plugins"):  # the project's Slurm launcher: where Hydra finds it
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path / "dist", src],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("srn_lightning-*.whl")

    # a fresh venv that sees this one's dependencies (torch and the rest: offline and quick), but
    # not this checkout: only the wheel's copy of the package
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([*pip, "--python", python, "install", "--no-deps", "--no-index", "-q", wheel],
                   check=True, capture_output=True, timeout=300)
    fresh_site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                     check=True, capture_output=True, text=True).stdout.strip())
    (fresh_site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    where = subprocess.run([python, "-c", "import srn_lightning; print(srn_lightning.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert where.stdout.strip().startswith(str(fresh_site)), where.stdout + where.stderr
    proc = subprocess.run([python, "-m", "srn_lightning.train", "clip=none", f"data.dir={data_dir}",
                           "trainer.max_epochs=2", *QUIET],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (run_dir,) = (elsewhere / "outputs" / "runs").glob("*/*_clip=none_length=20_lr=0.2_seed=0")
    metrics = (run_dir / "metrics.json").read_text()
    assert '"status": "completed"' in metrics and '"epochs": 2' in metrics
    # the config groups came from the wheel: every README choice composes there
    proc = subprocess.run([python, "-m", "srn_lightning.train", "--cfg", "job", "model=lstm",
                           "optimizer=adam", "clip=norm_each", "experiment=memory"],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "cell: lstm" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
