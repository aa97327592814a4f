"""Every import points down: the layers contract in pyproject.toml (import-linter), imports inside
functions included."""

import grimp
import pytest
from importlinter.cli import lint_imports

from .conftest import REPO


def test_every_import_points_down_the_layers(monkeypatch):
    monkeypatch.chdir(REPO)
    assert lint_imports(config_filename=str(REPO / "pyproject.toml"), no_cache=True, no_logo=True) == 0


@pytest.mark.parametrize("importer,imported", [
    ("srn_lightning.train", "srn_lightning.measurements"),  # inside train.finish
    ("srn_lightning.resume", "srn_lightning.module"),  # inside resume.check_resume
])
def test_the_graph_the_contract_is_checked_on_holds_the_imports_inside_functions(importer, imported):
    graph = grimp.build_graph("srn_lightning", cache_dir=None)
    assert graph.direct_import_exists(importer=importer, imported=imported)
