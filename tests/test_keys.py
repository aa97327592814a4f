"""Each key declared once: its type, default, rule and role live in the schema (config.py), and
what the record, the sweep report, HParams and resume know of the keys follows from it."""

import yaml
from omegaconf import OmegaConf

from srn_lightning import config, record, report_jobs, report_summary, resume
from srn_lightning.config import Role

from .conftest import compose_cfg


def test_every_key_a_run_is_known_by_reaches_the_record_the_report_hparams_and_resume():
    cfg = compose_cfg("clip=norm", "model=lstm")
    run_keys = [k for k in config.KEYS if k.role == Role.run]
    assert {"clip_mode", "clip_val", "length", "lr", "seed", "cell", "optimizer", "hidden_size"} <= {
        k.name for k in run_keys}
    summary, hparams, checked = record.config_summary(cfg), record.hparams(cfg), resume.run_config(cfg)
    for k in run_keys:
        value = OmegaConf.select(cfg, k.path)
        assert summary[k.name] == value and k.name in hparams and checked[k.name] == value, k.path
        assert k.name in report_summary.JOB_COLUMNS
        assert k.name in report_summary.SETTING_KEYS or k.name == "seed"
        assert k.name in report_jobs.NUMBERS + report_jobs.INTEGERS + report_jobs.TEXTS


def test_what_a_resume_may_change_is_the_resumable_keys_and_nothing_a_run_is_known_by():
    resumable = {k.path for k in config.KEYS if k.role == Role.resumable}
    assert resumable <= config.RESUMABLE
    assert not {k.path for k in config.KEYS if k.role != Role.resumable} & config.RESUMABLE
    assert {"data.dir", "plot_steps", "verbose"} <= config.RESUMABLE and "lr" not in config.RESUMABLE


def test_defaults_live_in_the_schema_only():
    conf = config.CONFIG_DIR
    top = yaml.safe_load(open(f"{conf}/config.yaml"))
    assert set(top) == {"defaults", "hydra"}  # no key's value beside the schema's
    for cell in ("srn", "lstm", "gru"):  # a group option sets what it chooses, no more
        assert yaml.safe_load(open(f"{conf}/model/{cell}.yaml")) == {"cell": cell}
    defaults = compose_cfg()  # the book's run, from the schema's defaults
    assert defaults.length == 20 and defaults.lr == 0.2 and defaults.model.hidden_size == 32
