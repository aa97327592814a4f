"""Every exception of the project crosses a process boundary intact: a joblib worker's job returns
its error to the launching process pickled, and one that cannot be rebuilt there breaks the pool."""

import importlib
import inspect
import pickle
import pkgutil
import signal

import srn_lightning
from srn_lightning import interrupts, job_process, locks
from srn_lightning.callbacks import Diverged
from srn_lightning.config import ConfigError
from srn_lightning.data import DataFileError
from srn_lightning.errors import RunFailed, UserError
from srn_lightning.files import UnsafePathError
from srn_lightning.resume import ResumeError
from srn_lightning.stacked import Unstacked
from srn_lightning.train.command import JobInterrupted

EXAMPLES = [
    ConfigError("lr", -1.0),
    ConfigError("trainer.devices", [0, 1], "1 or a list of one device"),
    Diverged(7),
    RunFailed("figures", "OSError: [Errno 28] No space left on device: 'grad_norms.png'"),
    interrupts.Interrupted("fit", signal.SIGHUP),
    JobInterrupted("interrupted (SIGTERM during fit) after 3 completed epochs; continue with: ..."),
    job_process.JobKilled("0_lr=0.1: killed by SIGKILL (out of memory?)"),
    UserError("a message"),
    DataFileError("data/20/train.txt:2: token 'x' is not a digit 0-9"),
    locks.InUseError("outputs/x: in use by process 42"),
    ResumeError("resume=x: no run dir"),
    UnsafePathError("x: a symbolic link"),
    Unstacked("a seed diverged at step 3"),
]


def project_exceptions() -> set[type]:
    found = set()
    for info in pkgutil.walk_packages(srn_lightning.__path__, "srn_lightning."):
        if info.name.endswith(".__main__"):  # importing it runs the command
            continue
        module = importlib.import_module(info.name)
        found |= {c for _, c in inspect.getmembers(module, inspect.isclass)
                  if issubclass(c, BaseException) and c.__module__.startswith("srn_lightning")}
    return found


def test_every_project_exception_has_an_example():
    assert project_exceptions() <= {type(e) for e in EXAMPLES}


def test_every_project_exception_survives_pickling():
    for err in EXAMPLES:
        back = pickle.loads(pickle.dumps(err))
        assert (type(back), str(back)) == (type(err), str(err))
        assert vars(back) == vars(err)
