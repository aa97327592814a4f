"""The install stays small: torch is pinned or capped, so pip never reaches for a newer (CUDA,
multi-GB) release; SciPy comes only with the search extra, and a run neither imports nor needs it."""

import tomllib
from pathlib import Path

import pytest

from packaging.requirements import Requirement

from .conftest import REPO


def test_torch_is_pinned_or_capped():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (torch,) = [Requirement(d) for d in deps if Requirement(d).name == "torch"]
    assert torch.specifier.contains("2.13.0")
    assert not torch.specifier.contains("2.14.0") and not torch.specifier.contains("3.0.0")


def requirement_closure(requirements, extras=()) -> set[str]:
    """The names of the installed distributions that `requirements` pull in, transitively (markers
    evaluated for this interpreter; extras followed where asked for)."""
    from importlib import metadata

    from packaging.utils import canonicalize_name

    seen: set[str] = set()
    todo = [(Requirement(r), set(extras)) for r in requirements]
    while todo:
        req, wanted = todo.pop()
        name = canonicalize_name(req.name)
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in (wanted or {""})):
            continue
        if name in seen and not req.extras:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        todo += [(Requirement(r), set(req.extras)) for r in dist.requires or []]
    return seen


def test_a_default_install_has_no_scipy_and_the_search_extra_brings_it():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    default = requirement_closure(project["dependencies"])
    assert {"torch", "lightning", "torchmetrics", "hydra-core"} <= default
    assert "scipy" not in default and "optuna" not in default
    search = requirement_closure(project["optional-dependencies"]["search"])
    assert {"optuna", "scipy"} <= search  # the extra is where SciPy comes from
    assert any(Requirement(r).name == "srn-lightning" and "search" in Requirement(r).extras
               for r in project["optional-dependencies"]["test"])


def test_jupyter_comes_only_with_the_notebook_extra_and_the_test_extra_carries_what_runs_the_notebook():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    default = requirement_closure(project["dependencies"])
    assert not {"jupyterlab", "notebook", "ipykernel", "nbclient", "pandas"} & default

    def names(extra):
        return {Requirement(r).name for r in project["optional-dependencies"][extra]}

    assert {"jupyterlab", "ipykernel", "pandas"} <= names("notebook")
    assert {"nbclient", "nbformat", "ipykernel", "pandas"} <= names("test")
    assert "jupyterlab" not in names("test")  # the notebook test needs a kernel, not the web app


def test_the_search_without_its_extra_is_one_line_saying_what_to_install(monkeypatch):
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    from srn_lightning.train.command import explain

    from .conftest import compose_cfg

    Plugins.instance()  # the installed plugins have stored their configs
    monkeypatch.delitem(ConfigStore.instance().repo["hydra"]["sweeper"], "optuna.yaml")  # not installed
    with pytest.raises(Exception) as err:
        compose_cfg("hparams_search=optuna")
    assert explain(err.value) == ("hparams_search=optuna needs the optuna sweeper, in the search extra: "
                                  "pip install -e '.[search]' (from the project's checkout)")


@pytest.mark.slow
def test_importing_the_training_entry_point_imports_no_scipy_and_a_run_needs_none(tmp_path, data_dir):
    import os
    import site
    import subprocess
    import sys

    from .conftest import QUIET, REPO, child_env

    script = ("import sys\nimport srn_lightning.train\nprint(sorted(m for m in sys.modules "
              "if m.split('.')[0] in ('scipy', 'torch', 'lightning', 'torchmetrics')))")
    proc = subprocess.run([sys.executable, "-c", script], env=child_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr  # lazy start-up

    # A default install, simulated where the test extra has put SciPy in: the same packages, less
    # SciPy (its modules and its metadata), seen through links; a whole run, through the CLI.
    packages = tmp_path / "site-packages"
    packages.mkdir()
    for root in site.getsitepackages():
        for entry in Path(root).iterdir():
            if not entry.name.lower().startswith("scipy") and not (packages / entry.name).exists():
                (packages / entry.name).symlink_to(entry)
    script = ("import runpy, sys\nsys.argv = ['srn_lightning.train', *sys.argv[1:]]\ntry:\n"
              "    runpy.run_module('srn_lightning.train', run_name='__main__')\nfinally:\n"
              "    print('scipy modules:', [m for m in sys.modules if m.startswith('scipy')])\n")
    env = {**child_env(), "PYTHONPATH": os.pathsep.join([str(REPO), str(packages)])}
    proc = subprocess.run([sys.executable, "-S", "-c", script, f"data.dir={data_dir}",
                           "trainer.max_epochs=1", *QUIET],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "scipy modules: []" in proc.stdout
    (run_dir,) = (tmp_path / "outputs" / "runs").glob("*/*")
    assert (run_dir / "metrics.json").exists()
