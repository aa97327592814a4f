"""The config's one table of rules: every checked key exists, and its check and its error agree."""

import pytest
from omegaconf import OmegaConf

from srn_lightning import config
from srn_lightning.resume import ResumeError, resume_argv

from .conftest import compose_cfg


def test_every_rule_names_a_key_of_the_composed_config():
    cfg = compose_cfg()
    for rule in config.RULES:
        present = OmegaConf.select(cfg, rule.key, default="absent") != "absent"
        added = rule.key.startswith("trainer.") and rule.key[8:] in config._trainer_arguments()
        assert present or added, rule.key  # or a Trainer argument added with +trainer.
    config.validate(cfg)  # the book's run is allowed


@pytest.mark.parametrize("key,bad", [
    ("lr", 0.0), ("length", 2), ("seed", -1), ("batch_size", 0), ("weight_decay", -1.0),
    ("plot_steps", 0), ("threads", 0), ("trainer.max_epochs", 0), ("clip.val", 1.0),
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


def test_resume_replays_the_run_s_own_overrides_in_its_own_dir(tmp_path):
    import torch

    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("- clip=norm\n- length=10\n")
    (run_dir / "checkpoints").mkdir()
    torch.save({"state_dict": {}, "loops": {}, "callbacks": {"GradNormMonitor": {"rows": torch.zeros(0, 11)}}},
               run_dir / "checkpoints" / "last.ckpt")
    argv = resume_argv([f"resume={run_dir}", "trainer.max_epochs=9"])
    assert argv == ["clip=norm", "length=10", "trainer.max_epochs=9",
                    f"resume='{run_dir / 'checkpoints' / 'last.ckpt'}'", f"hydra.run.dir='{run_dir}'"]
    with pytest.raises(ResumeError, match="lr: cannot change on resume"):
        resume_argv([f"resume={run_dir}", "lr=0.1"])
