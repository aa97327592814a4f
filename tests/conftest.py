import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from srn_lightning.data import ensure_files
from srn_lightning.train import CONFIG_DIR

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """The book's files for the lengths the tests train on, generated once per session."""
    d = tmp_path_factory.mktemp("data")
    for length in (10, 20):
        ensure_files(d, length)
    return d


@pytest.fixture
def make_cfg(data_dir):
    """Compose the project's real config with overrides, as `python -m srn_lightning.train` would."""

    def make(*overrides: str):
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose(
                "config",
                overrides=[f"data.dir={data_dir}", "trainer.enable_progress_bar=false", *overrides],
            )

    return make


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "srn_lightning.train", *args]
