"""The config's one table of rules: every checked key exists, and its check and its error agree."""

import pytest
from omegaconf import OmegaConf

from srn_lightning import config, preflight
from srn_lightning.train import command
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
    ("lr", 0.0), ("length", 2), ("length", 100_001), ("seed", -1), ("batch_size", 0), ("weight_decay", -1.0),
    ("plot_steps", 0), ("threads", 0), ("trainer.max_epochs", 0), ("trainer.max_epochs", None),
    ("clip.val", 1.0), ("model.hidden_size", 0), ("model.input_size", 0), ("data.num_workers", -1),
    ("record_every", 0),
])
def test_a_bad_value_is_refused_with_its_rule_s_words(key, bad):
    cfg = compose_cfg()
    OmegaConf.update(cfg, key, bad, force_add=True)
    with pytest.raises(config.ConfigError) as err:
        config.validate(cfg)
    assert str(err.value) == f"{key}={bad}: not allowed; {key} must be {config.ALLOWED[key]}"


def test_a_job_dir_name_leaves_out_the_keys_declared_so_and_shows_the_others():
    from hydra import compose, initialize_config_dir

    declared = {"resume=/x/run", "data.dir=/x/data", "data.regenerate=true", "data.num_workers=1",
                "threads=1", "verbose=true", "trainer.enable_progress_bar=false"}
    shown = {"lr=0.1", "grad_time=false", "record_every=2", "plot_steps=9", "trainer.max_epochs=3"}
    with initialize_config_dir(config_dir=config.CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=sorted(declared | shown), return_hydra_config=True)
    assert cfg.hydra.job.override_dirname == ",".join(sorted(shown))


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
                    f"resume='{run_dir / 'checkpoints' / 'last.ckpt'}'", f"hydra.run.dir='{run_dir}'",
                    "hydra.mode=RUN"]
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
    assert command.explain(err.value) == line


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
    assert command.explain(err.value).startswith(line)


def test_an_added_key_must_be_a_trainer_argument():
    cfg = compose_cfg("+trainer.max_epoch=3")
    with pytest.raises(config.ConfigError, match=r"^trainer.max_epoch=3: not allowed; trainer.max_epoch "
                                                 r"must be a Trainer argument \(did you mean max_epochs\?\)"):
        preflight.check_trainer_keys(cfg.trainer)


@pytest.mark.parametrize("override,line", [
    ("trainer.check_val_every_n_epoch=0", "trainer.check_val_every_n_epoch=0: not allowed; "
                                           "trainer.check_val_every_n_epoch must be an integer >= 1"),
    ("trainer.devices=[0]", "trainer.devices=[0]: not allowed; trainer.devices must be 1, or a list of one "
                            "GPU with trainer.accelerator=gpu"),
    ("+trainer.barebones=true", "trainer.barebones=True: not allowed; trainer.barebones must be left out"),
    ("+trainer.fast_dev_run=true", "trainer.fast_dev_run=True: not allowed; trainer.fast_dev_run must be "
                                   "left out: it writes no checkpoints and no TensorBoard events"),
    ("model.hidden_size=100000", "model.hidden_size=100000: not allowed; model.hidden_size must be an "
                                 "integer in 1..4096"),
    # the 100 dev examples are one batch at length 20: a share below 1 leaves none (Lightning: int(1 * 0.5))
    ("+trainer.limit_val_batches=0.5", "trainer.limit_val_batches=0.5: not allowed; "
     "trainer.limit_val_batches must be a share that leaves at least one batch of the 1 of dev "
     "(batches of 100)"),
    ("+trainer.limit_test_batches=0.4", "must be a share that leaves at least one batch of the 1 of test"),
    # at length 400 and batch 8, 10 examples a batch (4,000 positions): 10 batches, and 0.05 leaves none
    ("length=400 batch_size=8 +trainer.limit_val_batches=0.05",
     "leaves at least one batch of the 10 of dev (batches of 10)"),
    # 300 training examples at batch 64 are 5 steps an epoch; at batch 100, 3
    ("+trainer.max_steps=4", "trainer.max_steps=4: not allowed; trainer.max_steps must be -1 or at least the "
                             "5 steps of one epoch"),
    ("batch_size=100 +trainer.max_steps=2", "at least the 3 steps of one epoch"),
])
def test_settings_that_would_end_in_a_traceback_or_no_dev_accuracy_are_refused(override, line):
    cfg = compose_cfg(*override.split())
    with pytest.raises(config.ConfigError) as err:
        config.validate(cfg)
        preflight.check_batches(cfg)
        preflight.check_trainer_keys(cfg.trainer)
    assert line in str(err.value)


@pytest.mark.parametrize("override,line", [
    ("+trainer.precision=bogus", "trainer.precision=bogus: not allowed; trainer.precision must be one "
                                 "Lightning accepts (Precision 'bogus' is invalid."),
    ("+trainer.strategy=bogus", "trainer.strategy=bogus: not allowed; trainer.strategy must be one Lightning "
                                "accepts ("),
])
def test_trainer_arguments_lightning_refuses_are_one_line_naming_the_argument(override, line):
    with pytest.raises(config.ConfigError) as err:
        preflight.check_trainer_keys(compose_cfg(override).trainer)
    assert str(err.value).startswith(line) and "\n" not in str(err.value)


def test_settings_at_the_bounds_are_allowed():
    for override in ("model.hidden_size=4096", "+trainer.max_steps=5", "+trainer.limit_val_batches=1.0",
                     "+trainer.limit_train_batches=1", "+trainer.max_steps=1 +trainer.limit_train_batches=1"):
        cfg = compose_cfg(*override.split())
        config.validate(cfg)
        preflight.check_batches(cfg)
        preflight.check_trainer_keys(cfg.trainer)


@pytest.mark.parametrize("override,line", [
    ("hydra.run.dir=RUN_é", "hydra.run.dir=RUN_é: Hydra's override grammar cannot read this value; quote it "
                            "for Hydra and the shell: 'hydra.run.dir=\"RUN_é\"'"),
    ("x=foo)", "x=foo): Hydra's override grammar cannot read this value (extraneous input ')' expecting "
               "<EOF>); quote it for Hydra and the shell: 'x=\"foo)\"'"),
])
def test_a_value_hydra_cannot_parse_gets_a_line_that_says_how_to_quote_it(override, line):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    with pytest.raises(Exception) as err:
        OverridesParser.create().parse_overrides([override])
    assert command.explain(err.value) == line
    quoted = line.rsplit(": ", 1)[1][1:-1]  # the advice, as the shell passes it on: it parses
    assert OverridesParser.create().parse_overrides([quoted])[0].value() == override.split("=", 1)[1]


@pytest.mark.parametrize("n_jobs", [0, 1.5, "two"])
def test_a_launcher_n_jobs_of_no_meaning_is_refused_before_the_sweep_dir_exists(tmp_path, n_jobs):
    cfg = compose_cfg()
    OmegaConf.update(cfg, "hydra", {"sweep": {"dir": str(tmp_path / "sweep")}, "launcher": {"n_jobs": n_jobs}},
                     force_add=True)
    with pytest.raises(SystemExit) as stop:
        preflight.CheckConfig().on_multirun_start(cfg)
    assert str(stop.value) == (f"error: hydra.launcher.n_jobs={n_jobs}: not allowed; hydra.launcher.n_jobs must "
                               "be a non-zero integer (negative: that many fewer than the cores plus one, as "
                               "joblib counts)")
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("subdir", [None, "cfg"])
def test_a_run_without_its_config_in_dot_hydra_is_refused_as_it_could_not_be_resumed(tmp_path, subdir):
    cfg = compose_cfg()
    OmegaConf.update(cfg, "hydra", {"run": {"dir": str(tmp_path / "run")}, "output_subdir": subdir}, force_add=True)
    with pytest.raises(SystemExit) as stop:
        preflight.CheckConfig().on_run_start(cfg)
    assert str(stop.value).startswith(f"error: hydra.output_subdir={subdir}: not allowed; hydra.output_subdir "
                                      "must be .hydra (left as it is)")
    assert not (tmp_path / "run").exists()
