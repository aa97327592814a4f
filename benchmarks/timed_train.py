"""`python -m srn_lightning.train`, with the seconds of Trainer.fit and Trainer.test written as JSON
to the file named by $SRN_TIMES. Used by benchmarks/startup.py and benchmarks/sweep.py."""

import json
import os
import runpy
import sys
import time

from lightning.pytorch import Trainer

times = {"fit_s": 0.0, "test_s": 0.0}


def timed(name, method):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            times[f"{name}_s"] += time.perf_counter() - start

    return wrapper


Trainer.fit, Trainer.test = timed("fit", Trainer.fit), timed("test", Trainer.test)
sys.argv[0] = "srn_lightning.train"
try:
    runpy.run_module("srn_lightning.train", run_name="__main__", alter_sys=True)
finally:
    if os.environ.get("SRN_TIMES"):
        with open(os.environ["SRN_TIMES"], "w") as f:
            json.dump(times, f)
