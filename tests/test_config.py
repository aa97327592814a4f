"""The config's one table of rules: every checked key exists, and its check and its error agree."""

import pytest
from omegaconf import OmegaConf

from srn_lightning import config, preflight, train
from srn_lightning.resume import ResumeError, resume_argv

from .conftest import compose_cfg


def test_every_rule_names_a_key_of_the_composed_config():
    cfg = compose_cfg()
    for rule in config.RULES:
        present = OmegaConf.select(cfg, rule.key, default="absent") != "absent"
        added = rule.key.startswith("trainer.") and rule.key[8:] in config.trainer_arguments()
        assert present or added, rule.key  # or a Trainer argument added with +trainer.
    config.validate(cfg)  # the book's run is allowed


@pytest.mark.parametrize("key,bad", [
    ("lr", 0.0), ("length", 2), ("seed", -1), ("batch_size", 0), ("weight_decay", -1.0),
    ("plot_steps", 0), ("threads", 0), ("trainer.max_epochs", 0), ("trainer.max_epochs", None),
    ("clip.val", 1.0), ("model.hidden_size", 0), ("model.input_size", 0), ("data.num_workers", -1),
])
def test_a_bad_value_is_refused_with_its_rule_s_words(key, bad):
    cfg = compose_cfg()
    OmegaConf.update(cfg, key, bad, force_add=True)
    with pytest.raises(config.ConfigError) as err:
        config.validate(cfg)
    assert str(err.value) == f"{key}={bad}: not allowed; {key} must be {config.ALLOWED[key]}"


def test_each_clip_preset_sets_its_own_plot_steps():
    assert compose_cfg().plot_steps == 40  # the book's figure without clipping
    for mode in ("norm", "value", "norm_each"):
        assert compose_cfg(f"clip={mode}").plot_steps == 100
    assert compose_cfg("clip=norm", "plot_steps=7").plot_steps == 7


def interrupted_run_dir(tmp_path, overrides: str):
    """A run dir as an interrupted run leaves it, as far as resume_argv reads it."""
    import torch

    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(overrides)
    (run_dir / "checkpoints").mkdir()
    torch.save({"state_dict": {}, "loops": {}, "callbacks": {"GradNormMonitor": {"rows": torch.zeros(0, 11)}}},
               run_dir / "checkpoints" / "last.ckpt")
    return run_dir


def test_resume_replays_the_run_s_own_overrides_in_its_own_dir(tmp_path):
    run_dir = interrupted_run_dir(tmp_path, "- clip=norm\n- length=10\n")
    argv = resume_argv([f"resume={run_dir}", "trainer.max_epochs=9"])
    assert argv == ["clip=norm", "length=10", "trainer.max_epochs=9",
                    f"resume='{run_dir / 'checkpoints' / 'last.ckpt'}'", f"hydra.run.dir='{run_dir}'"]
    with pytest.raises(ResumeError, match="lr: cannot change on resume"):
        resume_argv([f"resume={run_dir}", "lr=0.1"])


@pytest.mark.parametrize("override,line", [
    ("model=bogus", "model=bogus: no such option; model must be one of gru, lstm, srn"),
    ("optimizer=bogus", "optimizer=bogus: no such option; optimizer must be one of adam, sgd"),
    ("experiment=bogus",
     "experiment=bogus: no such option; experiment must be one of explosion, memory, weight_decay"),
    ("grad_time=maybe", "grad_time=maybe: not allowed; grad_time must be true or false"),
    ("model.cell=rnn", "model.cell=rnn: not allowed; model.cell must be srn, lstm, gru"),
])
def test_a_bad_choice_is_explained_in_one_line(override, line):
    with pytest.raises(Exception) as err:
        compose_cfg(override)
    assert train.explain(err.value) == line


def test_a_resumed_run_keeps_its_cell_and_optimizer(tmp_path):
    run_dir = interrupted_run_dir(tmp_path, "- experiment=memory\n- model=lstm\n")
    argv = resume_argv([f"resume={run_dir}"])
    cfg = compose_cfg(*[a for a in argv if not a.startswith(("resume=", "hydra."))])
    assert (cfg.model.cell, cfg.optimizer.name) == ("lstm", "adam")
    with pytest.raises(ResumeError, match="model: cannot change on resume"):
        resume_argv([f"resume={run_dir}", "model=srn"])


@pytest.mark.parametrize("override,line", [
    ("trainer.max_epoch=3", "trainer.max_epoch: no such config key (did you mean trainer.max_epochs?)"),
    ("trainer.accumulate_grad_batches=2",
     "trainer.accumulate_grad_batches: not in the config yet; add it with +trainer.accumulate_grad_batches=..."),
])
def test_a_trainer_key_not_in_the_config_is_explained(override, line):
    with pytest.raises(Exception) as err:
        compose_cfg(override)
    assert train.explain(err.value).startswith(line)


def test_an_added_key_must_be_a_trainer_argument():
    cfg = compose_cfg("+trainer.max_epoch=3")
    with pytest.raises(config.ConfigError, match=r"^trainer.max_epoch=3: not allowed; trainer.max_epoch "
                                                 r"must be a Trainer argument \(did you mean max_epochs\?\)"):
        preflight.check_trainer_keys(cfg.trainer)
