"""The nndl gradient-explosion experiment (SRN on digit sums) with PyTorch Lightning and Hydra."""

import os

from omegaconf import OmegaConf

# `${pid:}` in hydra.sweep.dir: with the microseconds of `${now:}` it keeps apart two sweeps started
# at the same moment. Cached like `now`, so a launcher's workers name the launching process. Here,
# not in srn_lightning.train, because a worker resolves the config before it runs any of it: it has this
# package imported by then, for the report callback it unpickles.
OmegaConf.register_new_resolver("pid", os.getpid, use_cache=True, replace=True)
