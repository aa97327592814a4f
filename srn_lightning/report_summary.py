"""A sweep's summary from its jobs' rows (report_jobs): the statistics over seeds, the tables
(CSV columns, Markdown) and the data of the sweep figure."""

from __future__ import annotations

import statistics
from pathlib import Path

from srn_lightning import record
from srn_lightning.config import is_number
from srn_lightning.report_jobs import UNNUMBERED, override_key

JOB_COLUMNS = ["job", "dir", "overrides", "status", *record.CONFIG_KEYS, "epochs", "steps", "dev_best",
               "test_acc", *record.NORM_KEYS, "fit_seconds", "diverged_step", "error"]
AGGREGATED = ["test_acc", "dev_best", "W_pre_max", "total_pre_max"]
SETTING_KEYS = [k for k in record.CONFIG_KEYS if k != "seed"]  # what a setting is: all but the seed
AGGREGATE_COLUMNS = ["setting", *SETTING_KEYS, "jobs", "seeds", "status",
                     *[f"{m}_{s}" for m in AGGREGATED for s in ("mean", "std", "n")]]
CLIP_ORDER = ["none", "norm", "value", "norm_each"]


def mean_std_n(values) -> tuple[float | None, float | None, int]:
    """Mean, SAMPLE standard deviation (n - 1 in the denominator: the seeds are a sample of all
    seeds) and n, over the finite numbers among `values`; std is None with fewer than two."""
    xs = [float(x) for x in values if is_number(x)]
    mean = statistics.mean(xs) if xs else None
    std = statistics.stdev(xs) if len(xs) > 1 else None
    return mean, std, len(xs)


# Overrides that say how a job ran, not what it is: never a setting of the report
OPERATIONAL = {"resume", "sweep_add", "threads", "verbose", "data.dir", "data.num_workers",
               "data.regenerate", "trainer.enable_progress_bar"}


def varying(rows: list[dict]) -> set[str]:
    """The override keys whose values differ between jobs (or that some jobs lack), less the
    operational ones."""
    seen: dict[str, set] = {}
    for row in rows:
        for o in row["_overrides"]:
            if override_key(o) not in OPERATIONAL:
                seen.setdefault(override_key(o), set()).add(o)
    return {k for k, vals in seen.items()
            if len(vals) > 1 or sum(k in map(override_key, r["_overrides"]) for r in rows) < len(rows)}


def label(row: dict, keys: set[str], leave_out=()) -> str:
    """The row's overrides of the keys in `keys`, less `leave_out`, as `k=v k=v`."""
    return " ".join(o for o in row["_overrides"]
                    if override_key(o) in keys and override_key(o) not in leave_out)


def aggregate(rows: list[dict]) -> list[dict]:
    """A row per setting: the jobs whose varying overrides are the same but for `seed`."""
    keys = varying(rows)
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(label(row, keys, leave_out={"seed"}), []).append(row)
    out = []
    for setting, jobs in groups.items():
        statuses = [j["status"] for j in jobs]
        agg = {"setting": setting or "all jobs",
               **{k: jobs[0].get(k) for k in SETTING_KEYS},
               "jobs": len(jobs), "seeds": " ".join(str(j.get("seed", "?")) for j in jobs),
               "status": " ".join(f"{s}:{statuses.count(s)}" for s in dict.fromkeys(statuses))}
        for m in AGGREGATED:
            mean, std, agg[f"{m}_n"] = mean_std_n(j.get(m) for j in jobs)
            agg[f"{m}_mean"], agg[f"{m}_std"] = _digits(mean), _digits(std)
        out.append(agg)
    return out


def _digits(x: float | None, significant: int = 15) -> float | None:
    """A statistic of float32 values to 15 significant digits: the mean of 0.11 and 0.12 is 0.115,
    not float64's 0.11499999999999999; well within the inputs' own 7 digits either way."""
    return None if x is None else float(f"{x:.{significant}g}")


# the numbers the accuracy panel can be drawn against: record key -> its override key
X_KEYS = {"length": "length", "lr": "lr", "weight_decay": "weight_decay", "clip_val": "clip.val",
          "batch_size": "batch_size", "hidden_size": "model.hidden_size"}


def x_key(rows: list[dict]) -> str:
    """What the accuracy panel's x axis shows: length when the sweep has several, else the first
    key of X_KEYS that is a number in every row and takes more than one value (lr, weight decay,
    ...), else length."""
    for key in X_KEYS:
        values = [r.get(key) for r in rows]
        if all(is_number(v) for v in values) and len(set(values)) > 1:
            return key
    return "length"


def figure_data(rows: list[dict]) -> dict:
    """What plots.plot_sweep draws: a panel per (length, clip), curves labelled by what else
    varies (the seeds of a setting share a label); accuracy series labelled by what varies but
    seed and the x key (`x_key`), one point (mean, std, n over the seeds) per value of it."""
    keys = varying(rows)
    known = [r for r in rows if r.get("length") is not None and r.get("clip_mode") is not None]

    # a column per clip mode, titled with its threshold when the sweep gives it only one; several
    # thresholds of a mode (a threshold sweep, a search) are curves of that column instead
    vals: dict[str, set] = {}
    for r in known:
        vals.setdefault(r["clip_mode"], set()).add(r.get("clip_val"))
    titles = {m: f"clip={m}" + (f" {next(iter(v))}" if len(v) == 1 and None not in v else "")
              for m, v in vals.items()}
    cols = [titles[m] for m in sorted(vals, key=lambda m: (CLIP_ORDER + [m]).index(m))]
    one_val = all(len(v) == 1 for v in vals.values())
    leave_out = {"seed", "length", "clip"} | ({"clip.val"} if one_val else set())
    lengths = sorted({r["length"] for r in known})
    panels: dict = {}
    for r in known:
        steps, norms = r.get("_curve", ([], []))
        if steps:
            curve = (label(r, keys, leave_out), steps, norms)
            panels.setdefault((f"length={r['length']}", titles[r["clip_mode"]]), []).append(curve)
    x = x_key(known)
    accuracy: dict = {}
    for r in known:
        accuracy.setdefault(label(r, keys, leave_out={"seed", X_KEYS[x]}), {}) \
            .setdefault(r[x], []).append(r.get("test_acc"))
    accuracy = {
        series: [(v, *mean_std_n(by_x[v])) for v in sorted(by_x) if mean_std_n(by_x[v])[2]]
        for series, by_x in accuracy.items()
    }
    return {"panels": panels, "rows": [f"length={n}" for n in lengths], "cols": cols,
            "accuracy": {s: pts for s, pts in accuracy.items() if pts}, "x_key": x}


# ---- tables ----------------------------------------------------------------------------------------

def _fmt(v, spec: str = ".3g") -> str:
    if v is None or v == "":
        return "-"
    return format(v, spec) if isinstance(v, float) else str(v)


def _pm(agg: dict, m: str, spec: str) -> str:
    mean, std, n = agg[f"{m}_mean"], agg[f"{m}_std"], agg[f"{m}_n"]
    if mean is None:
        return "-"
    return f"{mean:{spec}}" + ("" if std is None else f" ± {std:{spec}}") + f" (n={n})"


def _md_row(cells) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def setting_table(by_setting: list[dict]) -> list[str]:
    """The by-setting table of summary.md, line by line; also what a sweep prints at its end."""
    lines = [_md_row(["setting", "seeds", "status", "test acc", "dev best", "max W norm (pre)",
                      "max total norm (pre)"]),
             _md_row(["---"] * 7)]
    for a in by_setting:
        lines.append(_md_row([a["setting"], a["seeds"], a["status"], _pm(a, "test_acc", ".3f"),
                              _pm(a, "dev_best", ".3f"), _pm(a, "W_pre_max", ".3g"),
                              _pm(a, "total_pre_max", ".3g")]))
    return lines


def markdown(rows: list[dict], by_setting: list[dict], sweep_dir: Path) -> str:
    statuses = [r["status"] for r in rows]
    keys = varying(rows)
    common = sorted({o for r in rows for o in r["_overrides"] if override_key(o) not in keys})
    lines = [
        f"# Sweep {sweep_dir.name}", "",
        f"{len(rows)} jobs: " + ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses)) + ".",
        f"Every job overrides: `{' '.join(common)}`." if common else "",
        "", "## By setting (over seeds)", "",
        "mean ± std (n): std is the sample standard deviation over the seeds (n - 1 in the "
        "denominator), n the number of seeds the number rests on.", "",
        *setting_table(by_setting),
    ]
    lines += ["", "## Jobs", "",
              _md_row(["job", "overrides", "status", "dev best", "test acc", "W max (pre)",
                       "W last (pre)", "total max (pre)", "total last (pre)", "fit s", "note"]),
              _md_row(["---"] * 11)]
    for r in rows:
        note = r.get("error") or (f"diverged at step {r['diverged_step']}"
                                  if r.get("diverged_step") is not None else "")
        lines.append(_md_row([
            r["job"] if r["job"] != UNNUMBERED else "?", label(r, keys) or r["overrides"],
            r["status"], _fmt(r.get("dev_best"), ".3f"), _fmt(r.get("test_acc"), ".3f"),
            _fmt(r.get("W_pre_max")), _fmt(r.get("W_pre_last")), _fmt(r.get("total_pre_max")),
            _fmt(r.get("total_pre_last")), _fmt(r.get("fit_seconds"), ".1f"), note,
        ]))
    lines += ["", "![pre-clip gradient norm of W and test accuracy](sweep.png)", ""]
    return "\n".join(lines)


def not_completed(rows: list[dict]) -> list[str]:
    """A line per job that did not run to its end (a diverged job did: divergence is a result)."""
    out, keys = [], varying(rows)
    for r in rows:
        if r["status"] in ("completed", "diverged"):
            continue
        how = r["status"] + (f" by {r['signal']}" if r.get("signal") else "") + (
            f" during {r['phase']}" if r.get("phase") else "")
        out.append(f"job {r['job']} ({label(r, keys) or r['overrides'] or r['dir']}): {how}"
                   + (f": {r['error']}" if r.get("error") else "")
                   + (f"; {r['resume']}" if r.get("resume") else ""))
    return out
