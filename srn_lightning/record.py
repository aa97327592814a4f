"""The run record: what a run leaves for people and tools to read, and the one place that knows its
shape.

- `metrics.json`: one flat object, `status` first, then the config keys a run is known by
  (`config_summary`), then its results;
- `grad_norms.csv`: a row per optimizer step, `COLUMNS`;
- `grad_time.csv`: a row per optimizer step (every `record_every`-th): `sigma_max_U`, then g_t = ||dL/dh_t|| for t = 1..T
  (and ||dL/dc_t|| for an LSTM);
- the HParams every run logs to TensorBoard.

srn_lightning.train writes the record, the report reads it; neither knows the other.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from pathlib import Path

from srn_lightning.config import RUN_KEYS
from srn_lightning.errors import reason
from srn_lightning.files import write_atomic

METRICS_NAME = "metrics.json"
CSV_NAME = "grad_norms.csv"
FIGURE_STEM = "grad_norms"
GRAD_TIME_CSV = "grad_time.csv"
GRAD_TIME_STEM = "grad_time"

TRACKED = ("W", "U", "b", "total")  # the parameters' names, and "total": all gradients together
COLUMNS = ["step", "epoch", "loss", *(f"{n}_pre" for n in TRACKED), *(f"{n}_post" for n in TRACKED)]
CONFIG_KEYS = list(RUN_KEYS)  # the config keys a run is known by (the schema's run keys)
NORM_KEYS = [f"{n}_pre_{which}" for which in ("max", "last") for n in TRACKED]
STATUSES = ("completed", "diverged", "interrupted", "failed", "cancelled")
KEPT = ("completed", "diverged")  # a record `resume=` and a continued sweep keep as it is (the others run again)
HPARAM_METRICS = ("test_acc", "dev_best", "W_pre_max", "total_pre_max")


# ---- the config a run is known by ----------------------------------------------------------------

def config_summary(cfg) -> dict:
    """The config keys a run is known by (CONFIG_KEYS), as metrics.json and the reports show them;
    None for a key the config does not have (a job's config from an older version)."""
    from omegaconf import OmegaConf

    values = {k: OmegaConf.select(cfg, path, default=None) for k, path in RUN_KEYS.items()}
    # the config's choices are str enums: plain str here, so every reader sees the same types
    return {k: str(v) if isinstance(v, str) else v for k, v in values.items()}


def hparams(cfg) -> dict:
    """The flat hyper-parameters every run logs to TensorBoard's HParams tab. The same keys and
    types in every run, so the table and parallel coordinates line up across a sweep: no clipping is
    threshold 0.0, which is also how Lightning's `gradient_clip_val` says "off"."""
    return {
        **config_summary(cfg),
        "clip_val": float(cfg.clip.val or 0.0),
        "max_epochs": cfg.trainer.max_epochs,
    }


def hparam_metrics(metrics: dict) -> dict:
    """The metrics beside the HParams: the same in every run, NaN where a run has none."""
    return {f"hparams/{k}": math.nan if metrics.get(k) is None else metrics[k] for k in HPARAM_METRICS}


# ---- metrics.json --------------------------------------------------------------------------------

def norm_summary(columns: dict) -> dict:
    """`{W,U,b,total}_pre_max` and `_pre_last` over the finite pre-clip norms (a diverged run's last
    row holds NaN or Inf); None where there is none."""
    out = {}
    for which in ("max", "last"):
        for n in TRACKED:
            finite = [v for v in columns.get(f"{n}_pre", []) if math.isfinite(v)]
            out[f"{n}_pre_{which}"] = (max(finite) if which == "max" else finite[-1]) if finite else None
    return out


def grad_time_summary(columns: dict) -> dict:
    """The vanishing ratio g_1 / g_T (how much of the gradient at the last position reaches the
    first) and sigma_max(U), at the first and at the last step; None where undefined."""
    if not columns.get("step"):
        return {}
    h = [name for name in columns if name.startswith("h_")]
    out = {}
    for which, i in (("first", 0), ("last", -1)):
        g_1, g_T = columns[h[0]][i], columns[h[-1]][i]
        ratio = g_1 / g_T if g_T > 0 and math.isfinite(g_1 / g_T) else None
        out[f"vanishing_ratio_{which}"] = ratio
    for which, i in (("first", 0), ("last", -1)):
        sigma = columns["sigma_max_U"][i]
        out[f"sigma_max_U_{which}"] = sigma if math.isfinite(sigma) else None
    return out


def finished_metrics(status: str, cfg, *, epochs: int, steps: int, dev_best, best_checkpoint,
                     test_acc, measured: dict, fit_seconds: float, **extra) -> dict:
    """The record of a run that reached its test: `completed` or `diverged` (with `diverged_step`).
    `measured`: the summary numbers of the run's measurements (`norm_summary`, `grad_time_summary`).
    The accuracies, norms and ratios are float32 values, written as such (`float32_number`)."""
    return {"status": status, **extra, **config_summary(cfg), "epochs": epochs, "steps": steps,
            "dev_best": float32_number(dev_best), "best_checkpoint": best_checkpoint,
            "test_acc": float32_number(test_acc), **{k: float32_number(v) for k, v in measured.items()},
            "fit_seconds": None if fit_seconds is None else round(fit_seconds, 3)}


def float32_number(x: float | None) -> float | None:
    """A float32 value as the shortest decimal that reads back as that float32: 0.11, not the
    0.10999999940395355 its exact float64 widening prints as. The digits beyond are not the
    measurement's, they are float32's rounding of it."""
    if x is None:
        return None
    import numpy as np

    return float(str(np.float32(x)))  # numpy prints a float32 as its shortest round-trip decimal


def interrupted_metrics(cfg, *, phase: str, signal: str, resume: str, measured: dict | None = None,
                        error: str | None = None) -> dict:
    """The record of a run stopped by a signal: in which phase, by which signal, every number
    measured until then (`measured`, as `finished_metrics` gives them; none before the run was
    built), the file that was failing as the signal came (`error`: a file-size limit's SIGXFSZ),
    how to go on."""
    measured = {k: v for k, v in (measured or {"epochs": 0, "steps": 0}).items() if k != "status"}
    return {"status": "interrupted", "phase": phase, "signal": signal,
            **({"error": error} if error else {}), **config_summary(cfg), **measured, "resume": resume}


def failed_metrics(cfg, error: str, phase: str | None = None, measured: dict | None = None) -> dict:
    """The record of a run that failed: the error (naming the file, for a file that could not be
    written), the phase, and every number measured before it (`measured`)."""
    measured = {k: v for k, v in (measured or {}).items() if k != "status"}
    return {"status": "failed", **({"phase": phase} if phase else {}), "error": error,
            **config_summary(cfg), **measured}


def write_metrics(run_dir, metrics: dict) -> None:
    write_atomic(Path(run_dir) / METRICS_NAME, json.dumps(metrics, indent=2, allow_nan=False) + "\n")


def write_or_log(run_dir, metrics: dict) -> None:
    """metrics.json; if even it cannot be written (a full disk), one line says so and holds the
    record itself, on the console and in the run's log."""
    try:
        write_metrics(run_dir, metrics)
    except OSError as err:
        logging.getLogger(__name__).error("%s not written (%s); the run's record: %s",
                                          Path(run_dir) / METRICS_NAME, reason(err), json.dumps(metrics))


def read_metrics(run_dir) -> dict:
    """A run's metrics.json; raises FileNotFoundError, or ValueError when it is not a JSON object
    with a status (read bounded: a file of any size or nesting is one ValueError)."""
    metrics = _parse(Path(run_dir) / METRICS_NAME, json.loads)
    if not isinstance(metrics, dict) or "status" not in metrics:
        raise ValueError("not a JSON object with a status")
    return metrics


def read_overrides(run_dir) -> list[str]:
    """A run's `.hydra/overrides.yaml`: a YAML list of at most MAX_OVERRIDES strings; raises
    FileNotFoundError, or ValueError for anything else. Read bounded and without YAML aliases (a few
    hundred bytes of nested aliases expand to gigabytes): a crafted file can neither hang a reader
    nor fill its memory."""
    saved = _parse(Path(run_dir) / ".hydra" / "overrides.yaml", _plain_yaml) or []
    if not isinstance(saved, list) or len(saved) > MAX_OVERRIDES or not all(isinstance(o, str) for o in saved):
        raise ValueError(f"not a YAML list of at most {MAX_OVERRIDES} overrides")
    return saved


MAX_RECORD_BYTES = 64 * 1024  # metrics.json and overrides.yaml are a few hundred bytes
MAX_OVERRIDES = 256


def _parse(path: Path, parse):
    """`parse(text)` of a record file read bounded; its every failure a ValueError."""
    with path.open("rb") as f:
        raw = f.read(MAX_RECORD_BYTES + 1)
    if len(raw) > MAX_RECORD_BYTES:
        raise ValueError(f"larger than {MAX_RECORD_BYTES // 1024} KiB, not a record this project writes")
    try:
        return parse(raw.decode())
    except RecursionError:  # nested deeper than the parser's stack
        raise ValueError("nested too deep") from None
    except Exception as err:  # UnicodeDecodeError, JSONDecodeError, YAMLError: not such a file
        raise ValueError(f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}") from None


def _plain_yaml(text: str):
    import yaml

    class PlainLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                raise yaml.YAMLError("aliases are not allowed in a run's record")
            return super().compose_node(parent, index)

    return yaml.load(text, Loader=PlainLoader)


# ---- grad_norms.csv ------------------------------------------------------------------------------

def csv_text(rows: list, columns: list[str] | None = None) -> str:
    """Rows as CSV lines, as `csv.writer` writes them (floats in full): lists as they are; with
    `columns`, a header line, then each row (a dict) as its values of those columns (blank where
    it has none). The project's one CSV writer: the run's CSVs and the sweep report's."""
    if columns is not None:
        rows = [columns, *([row.get(c) for c in columns] for row in rows)]
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return buf.getvalue()


def columns(rows: list[list], names=COLUMNS) -> dict[str, list]:
    """Rows as {column name: values}."""
    return {c: [r[i] for r in rows] for i, c in enumerate(names)}


def read_grad_norms(path, partial: bool = False) -> dict[str, list]:
    """`grad_norms.csv` as columns: {"step": [...], "W_pre": [...], ...}, every value one a run can
    write (a float32: non-finite, or finite within float32's range). With `partial`, a last line
    still being written is skipped (a run in progress) and a missing file has no rows; any other
    bad row raises ValueError."""
    rows = []
    try:
        with Path(path).open(newline="") as f:
            lines = list(csv.reader(f))
    except FileNotFoundError:
        if not partial:
            raise
        return columns(rows)
    except (UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{path}: not a CSV ({err})") from None
    if lines and lines[0] != COLUMNS:
        raise ValueError(f"{path}: its header is not {','.join(COLUMNS)}")
    for number, line in enumerate(lines[1:], 2):
        try:
            if len(line) != len(COLUMNS):
                raise ValueError
            values = [float(v) for v in line[2:]]
            if any(math.isfinite(v) and abs(v) > FLOAT32_MAX for v in values):
                raise ValueError
            rows.append([int(line[0]), int(line[1]), *values])
        except ValueError:
            if partial and number == len(lines):
                break
            raise ValueError(f"{path}:{number}: a row that is not {len(COLUMNS)} numbers a run writes "
                             f"({', '.join(COLUMNS)}): {','.join(line)[:80]!r}") from None
    return columns(rows)


FLOAT32_MAX = 3.4028234663852886e38
