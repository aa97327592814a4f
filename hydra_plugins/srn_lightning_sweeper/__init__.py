"""The project's sweeper where Hydra looks for sweepers (the `hydra_plugins` package): Hydra's basic
sweeper, with the seeds of each setting launched as one job. What it does lives in
srn_lightning/stacking.py."""

from srn_lightning import stacking


class SeedStackingSweeper(stacking.SeedStackingSweeper):
    """srn_lightning.stacking.SeedStackingSweeper, under the name Hydra finds it by."""
