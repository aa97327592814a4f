"""A run's answer lines, from its metrics and its monitor's rows."""

import math

from srn_lightning import answer, record


def test_the_answer_of_a_diverged_run_says_where_and_what_it_has(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    columns = {"step": [0, 1, 2, 3], "W_pre": [3.0, 9.0, 9.0, math.nan], "U_pre": [1.0, 0.5, 2.0, math.inf],
               "b_pre": [math.nan] * 4}
    metrics = {"status": "diverged", "diverged_step": 3, "epochs": 1, "steps": 4, "fit_seconds": 0.42,
               "dev_best": 0.11, "best_checkpoint": "best-epoch00.ckpt", "test_acc": 0.1,
               **record.norm_summary(columns)}
    run = tmp_path / "outputs" / "run"
    (run / "tb").mkdir(parents=True)
    (run / "grad_norms.png").write_bytes(b"")
    lines = answer.lines(metrics, columns, run)
    assert lines == [
        "diverged at step 3 after 1 epoch (4 steps, fit 0.4 s): dev best 0.110, test acc 0.100 (best-epoch00.ckpt)",
        "pre-clip grad norm of W: peak 9 at step 1, last 9",  # the first step to reach the peak
        "                      U: peak 2 at step 2, last 2",
        "                      b: peak -, last -",  # no finite norm at all
        "run dir: outputs/run",
        "figure: outputs/run/grad_norms.png",
        "dashboards: tensorboard --logdir outputs/run",
    ]
    assert answer.lines(metrics, columns, "/elsewhere/run")[4] == "run dir: /elsewhere/run"


def test_an_answer_names_no_file_the_run_did_not_write(tmp_path):
    metrics = {"status": "completed", "epochs": 1, "steps": 5, "fit_seconds": 0.1, "dev_best": 0.1,
               "best_checkpoint": "best-epoch00.ckpt", "test_acc": 0.1}
    lines = answer.lines(metrics, {"step": [0]}, tmp_path)
    assert lines[-1] == f"run dir: {tmp_path}"  # no figure, no tb/: neither is named
    assert not any(line.startswith(("figure:", "dashboards:")) for line in lines)
