"""The Trainer's profiler when the config names none: one that records nothing, at no cost.

Lightning wraps every hook it calls (about 50 an optimizer step here: each callback's, the
module's, the strategy's) in `with trainer.profiler.profile(name)`. Its default, PassThroughProfiler,
records nothing either, but its `profile` is a generator-based context manager built anew for each
call; `QuietProfiler.profile` hands back one shared `nullcontext`. Measured on the memory experiment's
job: 0.14 s of its fit (benchmarks/README.md, "The memory experiment's job").
A config that names one (`+trainer.profiler=simple`, `advanced`, `pytorch`, `null`) gets Lightning's.
"""

from __future__ import annotations

from contextlib import nullcontext

from lightning.pytorch.profilers import PassThroughProfiler

_NOTHING = nullcontext()


class QuietProfiler(PassThroughProfiler):
    """PassThroughProfiler whose `profile` costs an attribute lookup.

    Example::

        Trainer(profiler=QuietProfiler())
    """

    def profile(self, action_name: str):
        return _NOTHING


def profiler_kwargs(trainer_cfg) -> dict:
    """The Trainer's `profiler` argument unless `trainer_cfg` (the config's `trainer`) names one
    (`+trainer.profiler=null` included: Lightning's default)."""
    return {} if "profiler" in trainer_cfg else {"profiler": QuietProfiler()}
