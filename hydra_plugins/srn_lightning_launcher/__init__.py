"""The project's Slurm launcher where Hydra looks for launchers: Hydra knows a launcher by the
module its class is defined in, which must be in the `hydra_plugins` package. What it does lives in
srn_lightning/cluster.py."""

from srn_lightning import cluster


class SlurmLauncher(cluster.SlurmLauncher):
    """srn_lightning.cluster.SlurmLauncher, under the name Hydra finds it by."""
