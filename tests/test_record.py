"""The run record: its keys, its summary numbers, and the grad-norm CSV read back as written."""

import json
import math

import pytest

from srn_lightning import record

from .conftest import compose_cfg


def test_the_config_summary_is_plain_json_with_the_documented_keys():
    cfg = compose_cfg("clip=norm", "reduction=mean")
    summary = record.config_summary(cfg)
    assert list(summary) == record.CONFIG_KEYS
    assert json.loads(json.dumps(summary)) == summary
    assert (type(summary["clip_mode"]), summary["clip_mode"], summary["reduction"]) == (str, "norm", "mean")
    assert record.hparams(compose_cfg())["clip_val"] == 0.0  # clip=none: Lightning's "off"


def row(step, w, total, loss=1.0):
    return [step, 0, loss, w, w / 2, w / 4, total, w, w / 2, w / 4, total]


def test_norm_summary_takes_the_finite_norms_only():
    rows = [row(0, 3.0, 9.0), row(1, 7.0, 8.0), row(2, 0.5, 1.0), row(3, math.nan, math.inf)]
    summary = record.norm_summary(record.columns(rows))
    assert summary["W_pre_max"] == 7.0 and summary["W_pre_last"] == 0.5
    assert summary["U_pre_max"] == 3.5 and summary["b_pre_last"] == 0.125
    assert summary["total_pre_max"] == 9.0 and summary["total_pre_last"] == 1.0
    assert set(record.norm_summary(record.columns([]))) == set(record.NORM_KEYS)
    assert all(v is None for v in record.norm_summary(record.columns([])).values())


def test_the_csv_reads_back_exactly_what_was_written(tmp_path):
    rows = [row(0, 192.97096252441406, 1273.2480), row(1, 1e-7, 3.0000001)]
    path = tmp_path / record.CSV_NAME
    path.write_text(record.csv_text([record.COLUMNS, *rows]))
    assert path.read_text().splitlines()[0] == ",".join(record.COLUMNS)
    assert record.read_grad_norms(path) == record.columns(rows)


def test_a_csv_being_written_is_read_as_far_as_it_goes(tmp_path):
    path = tmp_path / record.CSV_NAME
    path.write_text(record.csv_text([record.COLUMNS, row(0, 2.0, 4.0)]) + "1,0,3.5,1.")
    assert record.read_grad_norms(path, partial=True)["step"] == [0]
    with pytest.raises(ValueError, match="a row that is not"):
        record.read_grad_norms(path)
    assert record.read_grad_norms(tmp_path / "none.csv", partial=True)["W_pre"] == []


def test_metrics_json_is_strict_and_needs_a_status(tmp_path):
    record.write_metrics(tmp_path, {"status": "completed", "test_acc": 0.25})
    assert record.read_metrics(tmp_path) == {"status": "completed", "test_acc": 0.25}
    with pytest.raises(ValueError):
        record.write_metrics(tmp_path, {"status": "completed", "W_pre_max": math.nan})
    (tmp_path / record.METRICS_NAME).write_text("{}")
    with pytest.raises(ValueError, match="status"):
        record.read_metrics(tmp_path)


def test_float32_metrics_are_written_as_the_shortest_decimal_of_the_float32(tmp_path):
    import numpy as np

    f32 = float(np.float32(0.11))  # 0.10999999940395355, as torch's .item() hands it over
    rows = [row(0, float(np.float32(6934.12)), float(np.float32(1273.248))), row(1, float(np.float32(0.0015)), 3.0)]
    metrics = record.finished_metrics(
        "completed", compose_cfg(), epochs=1, steps=2, dev_best=float(np.float32(0.14)),
        best_checkpoint="best-epoch00.ckpt", test_acc=f32, measured=record.norm_summary(record.columns(rows)),
        fit_seconds=1.0)
    record.write_metrics(tmp_path, metrics)
    text = (tmp_path / record.METRICS_NAME).read_text()
    assert '"test_acc": 0.11,' in text and '"dev_best": 0.14,' in text and "0.1099999" not in text
    assert '"W_pre_max": 6934.12,' in text and '"W_pre_last": 0.0015,' in text
    on_disk = record.read_metrics(tmp_path)
    for key in ("test_acc", "dev_best", *record.NORM_KEYS):  # each still reads back as the float32
        if on_disk[key] is not None:
            assert np.float32(on_disk[key]) == np.float32(metrics[key])
    assert np.float32(on_disk["test_acc"]) == np.float32(f32)
    assert list(on_disk)[:2] == ["status", "clip_mode"] and list(on_disk)[-1] == "fit_seconds"
