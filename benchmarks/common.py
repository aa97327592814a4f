"""What every benchmark shares: the project's config, composed as the command line would."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Callable

from hydra import compose, initialize_config_dir

from srn_lightning.data import ensure_files
from srn_lightning.config import CONFIG_DIR

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "outputs" / "benchmarks"


def make_cfg(data_dir, *overrides: str):
    """The real config with overrides, as `python -m srn_lightning.train <overrides>` composes it."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"data.dir={data_dir}", *overrides])
    ensure_files(data_dir, cfg.length)
    return cfg


def child_env(**extra: str) -> dict:
    """The environment for a benchmark's child process: this one's, with the repository first on
    PYTHONPATH (anything already there kept after it)."""
    import os

    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def save_json(path, report: dict) -> Path:
    """Writes a benchmark's results as indented JSON, atomically (the folder made if needed)."""
    from srn_lightning.files import write_atomic

    path = Path(path)
    write_atomic(path, json.dumps(report, indent=2) + "\n")
    return path


def paired_setup(name: str, doc: str, argv=None, pairs: int = 7, cells: list[str] | None = None):
    """What a benchmark of alternated pairs of fits starts with: its command line (`--pairs`,
    `--threads`, `--out`, config overrides for both sides, and `--cells` where `cells` gives the
    default ones), torch's threads, `quiet()`, a work dir, and its report's head. Returns (args,
    work dir, report)."""
    import argparse
    import tempfile

    import torch

    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{name}", description=doc.split("\n")[0])
    if cells is not None:
        parser.add_argument("--cells", nargs="+", default=cells, choices=["srn", "lstm", "gru"])
    parser.add_argument("--pairs", type=int, default=pairs, help="timed pairs after the warm-up")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, both sides (default 1)")
    parser.add_argument("--out", default=str(OUT / f"{name}.json"))
    parser.add_argument("overrides", nargs="*", help="config overrides for both sides, key=value")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    quiet()
    work = Path(tempfile.mkdtemp(prefix=f"srn-{name.replace('_', '-')}-"))
    report = {"benchmark": name, "overrides": args.overrides, "threads": args.threads, **environment()}
    return args, work, report


def quiet() -> None:
    """Lightning's banners and the framework warnings a benchmark does not need to see."""
    import logging
    import warnings

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*is deprecated", DeprecationWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="tensorboard")


def environment(device=None) -> dict:
    """What a reader needs to compare figures across machines; `device`: where the runs ran."""
    import os
    import platform
    import time

    import lightning
    import torch

    device = torch.device(device or "cpu")
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "cpus": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }


def wall(cmd, cwd, env) -> float:
    """Wall seconds of one command, its output discarded; a failure raises."""
    import subprocess
    import time

    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


@contextlib.contextmanager
def silenced():
    """Everything the runs print (bars, tables, warnings) goes to /dev/null while active."""
    with (open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull),
          contextlib.redirect_stdout(devnull)):
        yield


def alternated(sides: dict[str, Callable[[str], float]], pairs: int) -> dict[str, list[float]]:
    """The seconds of each of two sides, `sides[name](tag)` running one fit (`tag` names the pair
    and side, for its run dir): one warm-up pair, then `pairs` pairs whose order alternates, so the
    drift of a shared machine reaches both sides alike. Returns {name: seconds of each timed pair}."""
    first, second = sides
    times: dict = {name: [] for name in sides}
    for i in range(pairs + 1):  # pair 0 is the warm-up: imports, first-call caches
        for name in ((first, second) if i % 2 == 0 else (second, first)):
            seconds = sides[name](f"{i}-{name}")
            if i > 0:
                times[name].append(seconds)
    return times
