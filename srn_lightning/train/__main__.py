"""`python -m srn_lightning.train ...`: the command line (srn_lightning/train/command.py)."""

from srn_lightning.train.command import cli

cli()
