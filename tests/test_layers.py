"""Every import points down: the contracts in pyproject.toml (import-linter: the layers, imports
inside functions included, and no Lightning in data, model and clipping)."""

import subprocess
import sys
from pathlib import Path

import grimp
import pytest

from .conftest import REPO


def test_every_import_points_down_the_layers():
    # its own process: import-linter sets up logging as a command does, which would change this one's
    lint = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run([lint, "--config", REPO / "pyproject.toml", "--no-cache"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


@pytest.mark.parametrize("importer,imported", [
    ("srn_lightning.train", "srn_lightning.measurements"),  # inside train.finish
    ("srn_lightning.resume", "srn_lightning.module"),  # inside resume.check_resume
])
def test_the_graph_the_contract_is_checked_on_holds_the_imports_inside_functions(importer, imported):
    graph = grimp.build_graph("srn_lightning", cache_dir=None)
    assert graph.direct_import_exists(importer=importer, imported=imported)


def test_the_story_never_reaches_up_to_the_command_line():
    # srn_lightning.train (the story: build, fit, test, record) is below its own command line
    # (srn_lightning.train.command: Hydra's main and the CLI), which only the entry point, the Python
    # API and the sweeper's group of seeds import
    graph = grimp.build_graph("srn_lightning", cache_dir=None)
    assert graph.find_shortest_chain(importer="srn_lightning.train", imported="srn_lightning.train.command") is None
    assert graph.find_modules_that_directly_import("srn_lightning.train.command") == {
        "srn_lightning.train.__main__", "srn_lightning.lab", "srn_lightning.stacking"}
