"""Numerical parity: the project's Lightning run trains exactly as a hand-written PyTorch loop does
(benchmarks/plain_loop.py: the same model, init, batch order and clipping, written with torch alone),
checked by the parity benchmark's own comparison."""

import json
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from benchmarks.parity import MODES, lightning_fit, parity, plain_fit
from benchmarks.plain_loop import fit_plain, main

from .conftest import child_env


@pytest.mark.parametrize("clip", MODES)
def test_lightning_run_matches_a_plain_torch_loop(clip, make_cfg, tmp_path):
    cfg = make_cfg(f"clip={clip}", "trainer.max_epochs=2", "grad_time=false")
    light = lightning_fit(cfg, tmp_path / "lightning")
    plain = plain_fit(cfg, tmp_path / "plain")
    assert len(light["losses"]) == len(plain["losses"]) == 10
    parity(light, plain)  # raises unless per-step losses, norms and final weights agree
    assert light["dev_best"] == pytest.approx(plain["dev_best"])
    norms = light["norms"]  # W, U, b, total before clipping, then after
    if clip != "none":  # the clip really acted, on both sides alike
        assert (norms[:, 3] > norms[:, 7] + 1e-3).any()
    else:
        assert torch.equal(norms[:, :4], norms[:, 4:])


@pytest.mark.parametrize("cell", ["srn", "lstm"])
def test_the_memory_experiment_matches_the_plain_loop_too(cell, make_cfg, tmp_path):
    """The memory job's yardstick (benchmarks/memory_job.py): Adam, mean loss, batch 8, the cell."""
    cfg = make_cfg("experiment=memory", f"model={cell}", "length=10", "trainer.max_epochs=1")
    light = lightning_fit(cfg, tmp_path / "lightning")
    plain = plain_fit(cfg, tmp_path / "plain")
    assert len(light["losses"]) == len(plain["losses"]) == 38  # 300 examples, batch 8
    parity(light, plain)
    assert {k: v.shape for k, v in plain["state"].items()}["rnn_model.U"] == (32, 32 * (4 if cell == "lstm" else 1))


def test_the_plain_loop_command_runs_without_lightning(make_cfg, tmp_path):
    """The yardstick costs what a plain PyTorch script costs: its command, a whole fit, loads torch
    and never Lightning."""
    cfg = make_cfg("experiment=memory", "length=10", "trainer.max_epochs=1", "seed=2")
    probe = ("import sys; from benchmarks.plain_loop import main; main(sys.argv[1:]); "
             "print(sorted({m.split('.')[0] for m in sys.modules} "
             "& {'torch', 'lightning', 'lightning_fabric', 'pytorch_lightning'}))")
    out = subprocess.run([sys.executable, "-c", probe, str(tmp_path), json.dumps(OmegaConf.to_container(cfg, resolve=True))],
                         env=child_env(), capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "['torch']"
    assert len((tmp_path / "2" / "grad_norms.csv").read_text().splitlines()) == 38  # the fit ran: 38 steps


def test_the_plain_loop_command_fits_each_config_as_the_function_does(make_cfg, tmp_path):
    configs = [make_cfg("experiment=memory", "length=10", "trainer.max_epochs=1", f"seed={s}") for s in (3, 4)]
    main([str(tmp_path / "cli"), *(json.dumps(OmegaConf.to_container(c, resolve=True)) for c in configs)])
    for cfg in configs:
        fit_plain(cfg, tmp_path / "function" / str(cfg.seed))
        cli, function = (tmp_path / side / str(cfg.seed) / "grad_norms.csv" for side in ("cli", "function"))
        assert cli.read_bytes() == function.read_bytes()
    seed_3, seed_4 = ((tmp_path / "cli" / s / "grad_norms.csv").read_bytes() for s in ("3", "4"))
    assert seed_3 != seed_4  # each config its own seed
